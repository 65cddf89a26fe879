"""Progress bars with rate and ETA for long work, drawn by tqdm on stderr.

Library functions that take long accept `progress`, a callable
`progress(done, total)` that they call as work gets done; the scripts pass
the one that `bar` yields. A bar appears only after a second of work, so
quick runs print nothing, and never when stderr is not a terminal (logs,
pipes, CI) or under a script's `--quiet`.
"""

import contextlib
import sys

from tqdm import tqdm


@contextlib.contextmanager
def bar(description, unit='it', quiet=False):
    """Yields `report(done, total)`, which draws a bar described by
    `description`, counting in `unit`s; it vanishes when the work ends."""
    with tqdm(desc=description, unit=unit, file=sys.stderr, leave=False, delay=1.0,
              mininterval=0.5, dynamic_ncols=True, disable=True if quiet else None) as shown:
        def report(done, total):
            if shown.total != total:
                shown.total = total
            shown.update(done - shown.n)
        yield report
