"""How a command line meets its user: the error that users cause, logging,
and the wrapper that runs a script's main() and turns bad input or a failing
machine into one line `error: ...` and a non-zero exit.

TensorFlow-free and without side effects on import; every other module of
the project may import it, and it imports none of them.
"""

import errno
import logging
import logging.handlers
import re
import sys


class UserError(Exception):
    """An error caused by the user's input, reported as one line without a traceback.

    Its message quotes names and values in backticks; a quoted span longer
    than `MAX_QUOTED` characters (a file's content: a YAML value, a CSV
    field, a name in an HDF5 file) is shortened to its start and end, so that
    no file can make a refusal of any length."""

    def __init__(self, message='', *args):
        super().__init__(bounded(str(message)), *args)


# The longest quoted span, and the longest message, that a UserError shows whole.
MAX_QUOTED = 240
MAX_MESSAGE = 4000


def bounded(message):
    """`message` with each backticked span over `MAX_QUOTED` characters, and
    the whole over `MAX_MESSAGE`, cut in the middle and said to be."""
    def cut(text, most):
        if len(text) <= most:
            return text
        return '{} … {} ({} characters)'.format(text[:most * 2 // 3], text[-most // 4:],
                                                 len(text))
    message = re.sub(r'`([^`]*)`', lambda m: '`{}`'.format(cut(m.group(1), MAX_QUOTED)),
                     message)
    return cut(message, MAX_MESSAGE)


class BoundedFormatter(logging.Formatter):
    """Formats log records with their messages `bounded`, as a UserError's
    are: a warning that quotes a file's content (a file name of a CSV, say)
    shows at most `MAX_QUOTED` characters of each quote."""

    def formatMessage(self, record):
        record.message = bounded(record.message)
        return super().formatMessage(record)


def setup_logging(log_file=None, buffer=True):
    """Logs INFO and above to stderr and everything to `log_file` (appended).

    Called first without a file, it buffers every record in memory; called
    again once the experiment root exists, it writes the buffered records to
    the file before the new ones, so warnings about the arguments or the data
    reach the log too. `buffer=False` without a file drops the buffer (for
    processes that never write a log file).
    """
    root = logging.getLogger()
    buffers = [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]
    formatter = BoundedFormatter('%(asctime)s [%(levelname)s] %(name)s: %(message)s')
    if log_file is None:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.INFO)
        stream.setFormatter(formatter)
        root.addHandler(stream)
        if buffer:
            root.addHandler(logging.handlers.MemoryHandler(capacity=100000,
                                                           flushLevel=logging.CRITICAL + 1))
    else:
        file_handler = logging.FileHandler(log_file, mode='a')
        file_handler.setFormatter(formatter)
        for memory in buffers:
            memory.setTarget(file_handler)
            memory.flush()
            root.removeHandler(memory)
        root.addHandler(file_handler)
    root.setLevel(logging.DEBUG)
    # TensorFlow's own logger would otherwise print everything twice.
    logging.getLogger('tensorflow').propagate = False
    logging.getLogger('absl').setLevel(logging.WARNING)


# The errno values of a disk that refuses writes; their OSErrors name the file.
DISK_ERRORS = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is used up',
               errno.EROFS: 'the file system is read-only', errno.EACCES: 'permission denied',
               errno.EPERM: 'permission denied'}


# TensorFlow's errors of the same causes, by class name, so that this module
# needs no TensorFlow; their messages name the file or the allocation.
TENSORFLOW_ERRORS = ('ResourceExhaustedError', 'PermissionDeniedError')


def environment_error(error):
    """One sentence for an exception that the machine, not the program,
    caused: a full or read-only disk, missing permissions, memory running
    out, or a locale that cannot encode a path; None for any other."""
    if isinstance(error, OSError) and error.errno in DISK_ERRORS:
        return 'cannot write {}: {}. Free some space or choose another folder, then rerun; ' \
               'files are written whole or not at all.'.format(
                   '`{}`'.format(error.filename) if error.filename else 'a file',
                   DISK_ERRORS[error.errno])
    if type(error).__name__ in TENSORFLOW_ERRORS and \
            type(error).__module__.startswith('tensorflow'):
        # TensorFlow puts the failing function's name in double braces first.
        text = re.sub(r'^\{\{.*?\}\}\s*', '', str(getattr(error, 'message', error)).strip())
        text = text.splitlines()[0][-300:]
        if 'No space left' in text or 'Permission denied' in text or 'Read-only' in text:
            return 'cannot write a file: {}. Free some space or choose another folder, then ' \
                   'rerun; a stopped train.py resumes from its last checkpoint.'.format(text)
        return 'TensorFlow ran out of memory ({}); lower --batch_size, --batch_p or ' \
               '--batch_k, or the image sizes.'.format(text)
    if isinstance(error, MemoryError):
        return 'out of memory; lower the batch or image sizes, or the number of images.'
    if isinstance(error, UnicodeError) and sys.getfilesystemencoding().lower() != 'utf-8':
        return 'a path or text holds characters that this locale\'s encoding ({}) cannot ' \
               'hold ({}); run with a UTF-8 locale, for example LC_ALL=C.UTF-8, or ' \
               'PYTHONUTF8=1.'.format(sys.getfilesystemencoding(), error)
    return None


def run(main):
    """Runs a script's `main()` and exits with the status it returns.

    Every script ends with `run(main)`, so that bad input is reported
    the same way everywhere: a `UserError`, or an error of the machine (see
    `environment_error`), becomes one line `error: …` on stderr (and in the
    log file, for a script that keeps one) and exit status 1, without a
    traceback; Ctrl+C outside training's own handling one line and 130.
    """
    for stream in (sys.stdout, sys.stderr):
        # A message about a path must reach the user whatever the locale.
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')
    try:
        status = main()
    except UserError as e:
        status = report(str(e), 1)
    except KeyboardInterrupt:
        status = report('interrupted; outputs are written whole or not at all, so a rerun '
                        'starts cleanly.', 130)
    except Exception as e:
        message = environment_error(e)
        if message is None:
            raise
        status = report(message, 1)
    sys.exit(status)


def report(message, status):
    """Prints `error: message` to stderr and into a script's log file; returns `status`."""
    message = 'error: {}'.format(message)
    print(message, file=sys.stderr, flush=True)
    # train.py's train.log keeps the reason a run stopped.
    record = logging.makeLogRecord({'name': 'error', 'levelno': logging.ERROR,
                                    'levelname': 'ERROR', 'msg': message})
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    return status
