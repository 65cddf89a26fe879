"""Writing files safely: every output of every script is checked before the
work that fills it, and written beside its place and renamed into it, so
that a crash, a kill or a full disk leaves the old file or the new one,
never half of one, and never one of the command's inputs or a file of an
experiment root. TensorFlow-free.
"""

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile

from cli import UserError


def check_writable(path, flag, folder=False):
    """Refuses an output path that cannot be written, before the work that
    would fill it: its folder (for `folder` outputs, the nearest existing
    ancestor, as it is created) must be a writeable directory, and the path
    must not be a directory itself unless it is a `folder` output.

    Raises:
        UserError naming the flag and the path.
    """
    path = os.path.abspath(path)
    real = os.path.realpath(path)
    if folder and os.path.commonpath([os.path.realpath(os.getcwd()), real]) == real:
        raise UserError('{} `{}` holds the current folder, which cannot be replaced; give the '
                        'name of a folder of its own.'.format(flag, path))
    if os.path.isdir(path) and not folder:
        raise UserError('{} `{}` is a folder; give a file name.'.format(flag, path))
    if os.path.exists(path) and folder and not os.path.isdir(path):
        raise UserError('{} `{}` is a file; give a folder.'.format(flag, path))
    parent = path if folder else os.path.dirname(path)
    while folder and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError('cannot write {} `{}`: the folder `{}` does not exist or is not '
                        'writeable. Nothing was computed.'.format(flag, path, parent))


def check_not_input(path, flag, inputs):
    """Refuses an output path that is one of the command's own inputs (also
    through a link), which writing it would destroy.

    Args:
        path (str): The output file.
        flag (str): The output's flag, for the message.
        inputs: (flag, path) pairs of the inputs; a None path is skipped.

    Raises:
        UserError naming both flags.
    """
    target = os.path.realpath(path)
    for input_flag, given in inputs:
        if given is not None and os.path.realpath(given) == target:
            raise UserError('{} `{}` is the same file as {}; writing it would destroy that '
                            'input. Choose another file name. Nothing was written.'.format(
                                flag, path, input_flag))


# The files that train.py keeps in an experiment root and its `best/` folder:
# no output of any script may replace them.
EXPERIMENT_FILES = re.compile(r'(args\.json|best\.json|train\.log|\.lock|checkpoint(-.*)?|'
                              r'events\.out\.tfevents\..*)')


def _starts_with(*signatures):
    return lambda head: head.startswith(signatures)


def _is_text(head):
    try:
        head.decode('utf-8')
    except UnicodeDecodeError as e:
        # A multi-byte character cut at the end of the sample is still text.
        if e.start < len(head) - 3:
            return False
    return b'\x00' not in head


# How to tell, from its first KiB, that an existing file is of the kind an
# output flag writes (and so may be replaced): {kind: test of the bytes}.
OUTPUT_KINDS = {
    'csv': _is_text,
    'hdf5': _starts_with(b'\x89HDF\r\n\x1a\n'),
    'html': lambda head: head.lstrip().lower().startswith((b'<!doctype html', b'<html')),
    'json': lambda head: _is_text(head) and head.lstrip()[:1] in (b'{', b'['),
    'png': _starts_with(b'\x89PNG\r\n\x1a\n'),
}


def experiment_file(path):
    """Whether `path` is (or would be) one of the files train.py keeps in an
    experiment root (a folder with args.json) or in its `best/` folder."""
    folder, name = os.path.split(os.path.realpath(path))
    roots = [folder] + ([os.path.dirname(folder)] if os.path.basename(folder) == 'best' else [])
    return EXPERIMENT_FILES.fullmatch(name) is not None and any(
        os.path.isfile(os.path.join(root, 'args.json')) for root in roots)


def check_output(path, flag, kind, inputs=()):
    """Refuses an output file that writing would harm, before the work that
    fills it: one that cannot be written (see `check_writable`), a link to
    nothing, anything but a regular file (a device such as /dev/full, a
    pipe), one of the command's `inputs` (also through a link), a file of an
    experiment root, and an existing file that is not of the `kind` (a key
    of OUTPUT_KINDS) that the flag writes. An empty file may be replaced.

    Args:
        path (str): The output file.
        flag (str): Its flag, for the message.
        kind (str): What the flag writes.
        inputs: (flag, path) pairs of the command's input files; a None
            path is skipped.

    Raises:
        UserError naming the flag, the path and what to do.
    """
    if os.path.islink(path) and not os.path.exists(path):
        raise UserError('{} `{}` is a link to `{}`, which does not exist; give the path of a '
                        'file. Nothing was written.'.format(flag, path, os.readlink(path)))
    check_writable(path, flag)
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError('{} `{}` is not a regular file (a device, a pipe or a socket); give the '
                        'path of a file. Nothing was written.'.format(flag, path))
    check_not_input(path, flag, inputs)
    if experiment_file(path):
        raise UserError('{} `{}` is one of the files that train.py keeps in the experiment root; '
                        'writing it would damage the experiment. Choose another file name. '
                        'Nothing was written.'.format(flag, path))
    if os.path.isfile(path) and os.path.getsize(path):
        try:
            with open(path, 'rb') as f:
                head = f.read(1024)
        except OSError as e:
            raise UserError('{} `{}` exists and cannot be read ({}), so it cannot be told to '
                            'be an earlier {} output. Nothing was written.'.format(
                                flag, path, e.strerror, kind.upper()))
        if not OUTPUT_KINDS[kind](head):
            raise UserError('{} `{}` exists and is not {} {} file; {} replaces only its own '
                            'earlier output. Choose another file name. Nothing was '
                            'written.'.format(flag, path, 'an' if kind.startswith('h') else 'a',
                                              kind.upper(), flag))


def check_outputs(outputs, inputs=()):
    """`check_output` for each of `outputs`, (flag, path, kind) triples, each
    also refused where it is the path of an input or of an earlier output."""
    inputs = list(inputs)
    for flag, path, kind in outputs:
        check_output(path, flag, kind, inputs)
        inputs.append((flag, path))


def files_of_folder_output(folder, flag, names, kind):
    """The (flag, path, kind) outputs for `check_outputs` of the files `names`
    that a folder output writes, after checking that the folder can be
    written or created (a new folder holds none of them yet)."""
    check_writable(folder, flag, folder=True)
    return [(flag, os.path.join(folder, name), kind) for name in names] \
        if os.path.isdir(folder) else []


def temporary_beside(path, directory, suffix=''):
    """A new, uniquely named temporary folder (or file) next to `path`, for
    writing `path` and renaming it into place. `suffix` ends the name, for
    writers that insist on one (Keras' `.weights.h5`).

    The name holds the host and process, so that the leftovers of a killed
    writer of `path` are removed here, and never a living process's."""
    parent = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path.rstrip('/'))
    remove_dead_temporaries(parent, name)
    prefix = '.{}.partial-{}-{}-'.format(name, socket.gethostname(), os.getpid())
    if directory:
        name = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
        os.close(handle)
    open_permissions(name)
    return name


def remove_dead_temporaries(parent, name):
    """Removes the `temporary_beside` files and folders of `parent/name` that
    processes of this host left when they were killed."""
    pattern = re.compile(r'\.{}\.partial-{}-(\d+)-'.format(re.escape(name),
                                                           re.escape(socket.gethostname())))
    for entry in os.listdir(parent):
        match = pattern.match(entry)
        if match is None or process_alive(int(match.group(1))):
            continue
        leftover = os.path.join(parent, entry)
        if os.path.isdir(leftover) and not os.path.islink(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def process_alive(pid):
    """Whether a process `pid` runs on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def open_permissions(path):
    """Gives a file or folder that mkstemp or mkdtemp made private the
    permissions that open() or os.makedirs would have given it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


# The file by which a folder that a tool wrote whole (write_folder) names that
# tool, so that its --force replaces only such a folder.
FOLDER_MARK = '.written-by'


def check_folder_output(path, flag, maker, force, layout=()):
    """Refuses to replace a folder that `maker` (such as `make_demo.py`) did
    not write, before any work: a new or empty folder may be written; an
    existing one only with `force`, and only when its FOLDER_MARK names
    `maker` or, for the folders of older versions without the mark, when it
    holds a CSV and nothing but the names `layout` lists. Anything else (an
    experiment, a dataset, a home folder) is refused by name.

    Raises:
        UserError naming the flag, the folder and some of what it holds.
    """
    check_writable(path, flag, folder=True)
    entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
    if not entries:
        return
    if not force:
        raise UserError('{} `{}` exists already; use --force to replace it with a new one '
                        '(only a folder that {} wrote is replaced).'.format(flag, path, maker))
    try:
        with open(os.path.join(path, FOLDER_MARK), encoding='utf-8') as f:
            mark = f.read().strip()
    except (OSError, UnicodeDecodeError):
        mark = None
    legacy = mark is None and set(entries) <= set(layout) and any(
        name.endswith('.csv') for name in entries)
    if mark == maker or legacy:
        return
    foreign = [name for name in entries if name not in layout and name != FOLDER_MARK]
    if FOLDER_MARK in entries:
        # A mark of another tool, or one that cannot be read, is the first thing to name.
        foreign.insert(0, '{} {}'.format(FOLDER_MARK, 'naming {}'.format(mark) if mark
                                         else 'that cannot be read'))
    raise UserError('{} `{}` holds files that {} did not write ({}{}); --force replaces only a '
                    'folder of its own. Choose another folder, or move it away yourself. '
                    'Nothing was written.'.format(flag, path, maker, ', '.join(foreign[:5]),
                                                  ', …' if len(foreign) > 5 else ''))


def write_folder(output, make, maker=None):
    """Builds the folder `output` by calling `make(folder)` on a new temporary
    folder beside it, then renames that into place, replacing an old `output`.
    With `maker`, the folder's FOLDER_MARK names it (see check_folder_output).
    An interrupted run leaves the old folder or the new one, never half of
    one, and nothing but `output` is ever removed. Missing parent folders are
    created (check them first with `check_writable(output, flag, folder=True)`).

    Two processes writing `output` at once never delete each other's files:
    the old folder is moved aside in one rename before it is removed, and the
    one whose rename into place finds another's new folder there stops with a
    `UserError`, leaving the other's complete folder.

    Returns:
        What `make` returns.
    """
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    partial = temporary_beside(output, directory=True)
    old = None
    try:
        result = make(partial)
        if maker is not None:
            with open(os.path.join(partial, FOLDER_MARK), 'w', encoding='utf-8') as f:
                f.write(maker + '\n')
        if os.path.isdir(output):
            old = temporary_beside(output, directory=True)
            try:
                os.replace(output, old)
            except FileNotFoundError:
                pass  # Another writer moved it aside first.
        try:
            os.replace(partial, output)
        except OSError as e:
            raise UserError('cannot put {} in place: another process wrote it at the same time '
                            '({}). It holds that process\'s complete result; rerun if you '
                            'want this one\'s.'.format(output, e.strerror))
    finally:
        for folder in (partial, old):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    return result


def atomic_write(path, data, mode='w'):
    """Writes `data` to `path` through a temporary file and a rename, so a
    crash leaves either the old or the new content, never a mixture."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.')
    try:
        open_permissions(tmp)
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, obj):
    atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + '\n')


def read_json(path, remedy):
    """The JSON object (a dict) that this project wrote to `path`.

    Raises:
        UserError saying the file is corrupt, ending with `remedy`, when it
        is not valid JSON, not UTF-8, or not a JSON object.
    """
    try:
        with open(path, encoding='utf-8') as f:
            value = json.load(f)
        if not isinstance(value, dict):
            raise ValueError('not a JSON object')
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError('`{}` is corrupt ({}); {}.'.format(path, e, remedy))
    return value
