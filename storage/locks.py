"""Locks that make two processes that change one file take turns."""

import contextlib
import fcntl
import os

from triplet_reid.cli import UserError


@contextlib.contextmanager
def locked(path, what):
    """Holds the lock of the file `path` (`what` names it in messages: a
    hidden file beside it), so that two processes that change it at once
    take turns and neither loses the other's rows. The file itself cannot
    carry the lock: each change renames a new file into its place."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        handle = open(os.path.join(folder, '.{}.lock'.format(name)), 'a')
    except OSError as e:
        raise UserError('cannot lock {} `{}`: {}.'.format(what, path, e.strerror or e))
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
