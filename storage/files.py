"""Writing files safely: every output of every script is checked before the
work that fills it, and written beside its place and renamed into it, so
that a crash, a kill or a full disk leaves the old file or the new one,
never half of one, and never one of the command's inputs or a file of an
experiment root. TensorFlow-free.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile

from triplet_reid.cli import UserError


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
    # A file behind a link is written where the link points (see `output`).
    parent = path if folder else os.path.dirname(real if os.path.exists(path) else path)
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
    check_writable(path, flag)
    refuse_harmful(path, flag, inputs=inputs)
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


# The one way every output is written
###

@contextlib.contextmanager
def output(path, directory=False, replace=True, suffix='', flag=None, inputs=(),
           experiment=False):
    """Where every output of every script is written, a file or a folder.

    Yields a new temporary path beside `path` for the caller to fill; when the
    block ends, syncs what was written to the disk and renames it into place,
    so that `path` holds the old content or the new, never half of either.
    A file or folder behind a link is replaced where the link points, the
    link kept.
    When the block raises, the temporary is removed; after a kill it is left,
    named after this host and process, and the next writer of `path` removes
    it (`temporary_beside`). The temporary has the permissions that open()
    or os.makedirs would give; missing parent folders are created.

    Before the block runs it refuses what `check_output` refuses before the
    work, so that no writer can harm a file by skipping that check: a link to
    nothing, something that is neither a regular file nor a folder (a
    device, a pipe), one of `inputs`, or a file of an experiment root unless
    `experiment` says the caller keeps it (train.py's args.json and
    best.json).

    Args:
        path (str): The output.
        directory (bool): Whether the output is a folder.
        replace (bool): Whether an existing output is replaced. When not,
            one that exists, or appears meanwhile, is refused.
        suffix (str): Ends the temporary's name, for writers that insist on
            one (Keras' `.weights.h5`).
        flag (str): The output's flag, for the messages.
        inputs: (flag, path) pairs of the command's input files.
        experiment (bool): Whether `path` is an experiment file the caller keeps.

    Raises:
        UserError for a refused output, or when another process put one in
        place at the same time (its complete output is kept).
    """
    refuse_harmful(path, flag or 'the output', directory, inputs, experiment)
    if os.path.islink(path):
        # The user keeps a file or folder behind the link (a gallery, say):
        # replacing the link would leave it as it was while the command
        # reports it changed, and a folder cannot replace a link at all. What
        # it points to is replaced instead.
        path = os.path.realpath(path)
        refuse_harmful(path, flag or 'the output', directory, inputs, experiment)
    if not replace and os.path.lexists(path):
        raise appeared(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    partial = temporary_beside(path, directory, suffix)
    try:
        yield partial
        sync(partial)
        (put_folder if directory else put_file)(partial, path, replace)
        sync(parent, contents=False)
    finally:
        remove(partial)


def refuse_harmful(path, flag, directory=False, inputs=(), experiment=False):
    """Refuses an output `path` that writing would harm (see `output`).

    Raises:
        UserError naming the flag, the path and what to do.
    """
    if os.path.islink(path) and not os.path.exists(path):
        raise UserError('{} `{}` is a link to `{}`, which does not exist; give the path of a '
                        'file. Nothing was written.'.format(flag, path, os.readlink(path)))
    if os.path.exists(path) and not (os.path.isdir(path) if directory else os.path.isfile(path)):
        raise UserError('{} `{}` is not a regular {} (a device, a pipe or a socket); give the '
                        'path of a {}. Nothing was written.'.format(
                            flag, path, *(['folder'] * 2 if directory else ['file'] * 2)))
    check_not_input(path, flag, inputs)
    if not experiment and experiment_file(path):
        raise UserError('{} `{}` is one of the files that train.py keeps in the experiment root; '
                        'writing it would damage the experiment. Choose another file name. '
                        'Nothing was written.'.format(flag, path))


def appeared(path):
    return UserError('`{}` appeared while it was being written (by another process?); nothing '
                     'was replaced. Choose another name, or remove it and rerun.'.format(path))


def put_file(partial, path, replace):
    """Renames the written file `partial` to `path`; without `replace`, in a
    way that refuses a `path` that exists, even one made a moment before."""
    if replace:
        os.replace(partial, path)
        return
    try:
        # A hard link fails where the name exists, in one step; `output` then
        # removes `partial`.
        os.link(partial, path)
    except FileExistsError:
        raise appeared(path)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # A file system without hard links.
        if os.path.lexists(path):
            raise appeared(path)
        os.replace(partial, path)


def put_folder(partial, path, replace):
    """Renames the written folder `partial` to `path`. An old folder is first
    moved aside in one rename and removed after, so that two processes
    writing `path` at once never delete each other's files: the one whose
    rename finds another's new folder in place stops with a `UserError`."""
    old = None
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            if not replace:
                raise appeared(path)
            old = temporary_beside(path, directory=True)
            try:
                os.replace(path, old)
            except FileNotFoundError:
                pass  # Another writer moved it aside first.
        try:
            os.rename(partial, path)
        except OSError as e:
            if not replace:
                raise appeared(path)
            raise UserError('cannot put {} in place: another process wrote it at the same time '
                            '({}). It holds that process\'s complete result; rerun if you '
                            'want this one\'s.'.format(path, e.strerror))
    finally:
        if old:
            shutil.rmtree(old, ignore_errors=True)


def sync(path, contents=True):
    """Flushes the file `path` to the disk, or the folder `path` (with
    `contents`, every file and folder below it), so that a rename never
    puts in place what a power cut would leave empty."""
    folders = os.walk(path) if contents and os.path.isdir(path) else [(path, [], [])]
    for folder, _, names in folders:
        for name in [os.path.join(folder, n) for n in names] + [folder]:
            if os.path.islink(name):
                continue
            try:
                handle = os.open(name, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(handle)
            except OSError as e:
                # Some file systems cannot sync a folder; a file that cannot be synced can fail.
                if not os.path.isdir(name) or e.errno not in (errno.EINVAL, errno.EBADF,
                                                              errno.ENOTSUP):
                    raise
            finally:
                os.close(handle)


def remove(path):
    """Removes a file or folder, if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def write_folder(path, make, maker=None):
    """Builds the folder `path` by calling `make(folder)` on a new temporary
    folder beside it, which `output` then renames into place, replacing an
    old one. With `maker`, the folder's FOLDER_MARK names it (see
    check_folder_output). Check the path first with
    `check_writable(path, flag, folder=True)`.

    Returns:
        What `make` returns.
    """
    with output(path, directory=True) as partial:
        result = make(partial)
        if maker is not None:
            with open(os.path.join(partial, FOLDER_MARK), 'w', encoding='utf-8') as f:
                f.write(maker + '\n')
    return result


def atomic_write(path, data, mode='w', **options):
    """Writes `data` (text, UTF-8, or bytes with mode 'wb') to `path` whole or
    not at all, through `output`, which takes the `options`."""
    with output(path, **options) as partial:
        with open(partial, mode, encoding=None if 'b' in mode else 'utf-8') as f:
            f.write(data)


def write_json(path, obj, **options):
    """Writes `obj` to `path` as indented JSON with sorted keys, through `output`."""
    atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + '\n',
                 **options)


def irregular(path):
    """Whether `path` exists but is no regular file (a device such as
    /dev/zero or a pipe, which may never end, or a folder), or is no path
    the system can open (a NUL character in it)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
    except ValueError:
        return True


def check_regular(path, what, remedy):
    """Refuses an `irregular` `path` (`what`, such as 'the dataset CSV')."""
    if irregular(path):
        raise UserError('{} `{}` is not a regular file; {}.'.format(what, path, remedy))


# How many times its file's bytes an HDF5 dataset may claim: compressed data
# (h5repack, MATLAB's v7.3 files) shrinks a few times at most, while fill
# values or compressed zeros can claim terabytes in a file of kilobytes.
MAX_INFLATION = 64


def stored_values(dataset, path):
    """The values of the h5py `dataset` of the file `path`, refused (UserError)
    before they are read when they claim more bytes than `MAX_INFLATION`
    times the file (at least a megabyte) could hold."""
    claimed = dataset.size * dataset.dtype.itemsize
    if claimed > max(1 << 20, MAX_INFLATION * os.path.getsize(path)):
        raise UserError('the `{}` dataset of `{}` claims {} values of {} bytes, {:.3g} GiB, '
                        'far more than its file of {} bytes holds; the file is damaged or was '
                        'not written by the program it claims.'.format(
                            dataset.name.lstrip('/'), path, dataset.size,
                            dataset.dtype.itemsize, claimed / 2 ** 30, os.path.getsize(path)))
    return dataset[()]

