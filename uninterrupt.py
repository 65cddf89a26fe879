"""Finish the current training step on SIGINT/SIGTERM instead of dying mid-step.

Use as:

    with Uninterrupt() as u:
        while not u.interrupted:
            train_one_step()
    save_checkpoint()

The first signal only sets `interrupted`. Further signals while the loop
winds down are reported and otherwise ignored, so a second Ctrl+C cannot
kill the process while it writes its final checkpoint (SIGKILL still can; the
checkpoint manager then falls back to the previous complete checkpoint).
"""

import logging
import signal


class Uninterrupt:
    def __init__(self, sigs=(signal.SIGINT, signal.SIGTERM), log=None):
        self.sigs = tuple(sigs)
        self.log = log or logging.getLogger(__name__)
        self.interrupted = False
        self._orig_handlers = None

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.interrupted:
            self.log.warning('Received %s again; already stopping after this step, please '
                             'wait for the checkpoint to be written.', name)
        else:
            self.log.warning('Received %s; stopping after the current step.', name)
        self.interrupted = True

    def __enter__(self):
        if self._orig_handlers is not None:
            raise ValueError('Can only enter `Uninterrupt` once!')
        self.interrupted = False
        self._orig_handlers = [signal.getsignal(sig) for sig in self.sigs]
        for sig in self.sigs:
            signal.signal(sig, self._handler)
        return self

    def __exit__(self, exc_type, exc, tb):
        # The handlers stay until the caller leaves the block, which it does
        # only after the final checkpoint is safely written.
        for sig, orig in zip(self.sigs, self._orig_handlers):
            signal.signal(sig, orig)
        self._orig_handlers = None
