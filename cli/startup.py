"""A quiet start of TensorFlow for the scripts, kept out of common.py so that
the TensorFlow-free helpers stay free of it."""

import os
import re
import sys
import tempfile

# TensorFlow's start-up lines that say nothing to a user: absl's INFO lines and
# its notice that they go to stderr (written before any setting applies), the
# CPU-instruction hint, and the failed CUDA probe of a machine without a GPU.
STARTUP_NOISE = re.compile(
    r'^(I\d{4} |WARNING: All log messages before absl::InitializeLog|To enable the following '
    r'instructions|E\d{4} .*failed call to cuInit)')


def quiet_tensorflow():
    """Imports TensorFlow and probes its devices with the process's stderr
    captured, then passes on every captured line but `STARTUP_NOISE`, so
    genuine errors stay visible. Also sets TF_CPP_MIN_LOG_LEVEL to 2 (unless
    set), which hides TensorFlow's later INFO and WARNING lines. Scripts call
    it before anything imports TensorFlow; afterwards it does nothing.
    """
    if 'tensorflow' in sys.modules:
        return
    # Ctrl+C while TensorFlow loads (the seconds a script takes to start)
    # ends the script with one line.
    try:
        import_quietly()
    except KeyboardInterrupt:
        print('error: interrupted while starting; nothing was written.', file=sys.stderr,
              flush=True)
        raise SystemExit(130)


def import_quietly():
    """Imports TensorFlow and probes its devices with stderr captured (see
    `quiet_tensorflow`)."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().decode('utf-8', 'replace').splitlines()
    kept = [line for line in lines if not STARTUP_NOISE.match(line)]
    if kept:
        print('\n'.join(kept), file=sys.stderr, flush=True)
