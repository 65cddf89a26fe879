"""TensorFlow-free pieces shared by every script.

The error users cause, command-line argument types, atomic file writes,
dataset CSV loading, logging, and the wrapper that runs a script's main().
Importing this module has no side effects and does not import TensorFlow, so
that evaluate.py starts in a fraction of a second.
"""

import argparse
import contextlib
import errno
import io
import json
import logging
import logging.handlers
import math
import os
import re
import shutil
import socket
import sys
import tempfile

import numpy as np
import pandas as pd


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


class UserError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


# Command-line argument types
###

def _check_directory(arg, access, access_str):
    """Accepts `arg` when it exists with `access`, or its closest existing parent has it."""
    path_head = os.path.abspath(arg)
    while True:
        if os.path.exists(path_head):
            if not os.path.isdir(path_head):
                raise argparse.ArgumentTypeError(
                    '`{}` is not a {} directory: `{}` exists and is not a '
                    'directory.'.format(arg, access_str, path_head))
            if os.access(path_head, access):
                return arg
            raise argparse.ArgumentTypeError(
                '`{}` is not a {} directory: `{}` exists without {} '
                'access.'.format(arg, access_str, path_head, access_str))
        parent = os.path.dirname(path_head)
        if parent == path_head:
            break
        path_head = parent
    raise argparse.ArgumentTypeError('`{}` is not a valid {} path.'.format(arg, access_str))


def writeable_directory(arg):
    """A directory that exists and is writeable, or can be created."""
    return _check_directory(arg, os.W_OK, 'writeable')


def readable_directory(arg):
    """An existing, readable directory."""
    if not os.path.isdir(arg):
        raise argparse.ArgumentTypeError('`{}` is not an existing directory.'.format(arg))
    return _check_directory(arg, os.R_OK, 'readable')


# Integers go into TensorFlow's int64 (steps, sizes), so larger ones are refused
# where they are typed, not where they overflow.
MAX_INT = 2 ** 63 - 1


def _number_greater_x(arg, type_, x):
    try:
        value = type_(arg)
    except ValueError:
        raise argparse.ArgumentTypeError('`{}` is not an {}.'.format(arg, type_.__name__))
    if type_ is int and value > MAX_INT:
        raise argparse.ArgumentTypeError('found {} where an int of at most 2**63 - 1 was '
                                         'required.'.format(arg))
    if value > x and math.isfinite(value):
        return value
    raise argparse.ArgumentTypeError(
        'found {} where an {} greater than {} was required.'.format(arg, type_.__name__, x))


def int_between(lower, upper):
    """An argument type: an int from `lower` to `upper`, both included."""
    def checked(arg):
        value = _number_greater_x(arg, int, lower - 1)
        if value > upper:
            raise argparse.ArgumentTypeError('found {} where an int from {} to {} was '
                                             'required.'.format(arg, lower, upper))
        return value
    checked.__name__ = 'int'
    return checked


def float_between(lower, upper, include_lower=True):
    """An argument type: a finite float from `lower` (excluded unless
    `include_lower`) to `upper`, included. Every float flag has an upper
    bound, so that a typo such as 1e40 is refused where it is typed rather
    than overflowing in the middle of the work."""
    def checked(arg):
        try:
            value = float(arg)
        except ValueError:
            raise argparse.ArgumentTypeError('`{}` is not a float.'.format(arg))
        if not (value >= lower if include_lower else value > lower) or not value <= upper:
            raise argparse.ArgumentTypeError('found {} where a number {} {} to {} was '
                                             'required.'.format(
                                                 arg, 'from' if include_lower else 'above',
                                                 lower, upper))
        return value
    checked.__name__ = 'float'
    return checked


# A random seed, as NumPy and Keras take it.
seed = int_between(0, 2 ** 32 - 1)


def positive_int(arg):
    return _number_greater_x(arg, int, 0)


def nonnegative_int(arg):
    return _number_greater_x(arg, int, -1)


def unit_float(arg):
    """A float between 0 and 1, both included."""
    try:
        value = float(arg)
    except ValueError:
        raise argparse.ArgumentTypeError('`{}` is not a float.'.format(arg))
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError('found {} where a value in [0, 1] was required.'
                                         .format(arg))
    return value


def float_or_string(arg):
    """Tries to convert the string to float, otherwise returns the string."""
    try:
        return float(arg)
    except (ValueError, TypeError):
        return arg


# Distances between embeddings are in the tens to hundreds; a larger margin is a typo.
MAX_MARGIN = 1000


def margin(arg):
    """The triplet margin: a non-negative float, `soft` or `none`."""
    value = float_or_string(arg)
    if isinstance(value, float):
        if not 0 <= value <= MAX_MARGIN:
            raise argparse.ArgumentTypeError('a numeric margin must be a number from 0 to {}, '
                                             'got {}.'.format(MAX_MARGIN, arg))
        return value
    if value.lower() in ('soft', 'none'):
        return value.lower()
    raise argparse.ArgumentTypeError(
        'the margin must be a number, `soft` or `none`, got `{}`.'.format(arg))


class OneOrMore(argparse.Action):
    """A flag of one or more values that may also be repeated (`--x a b` or
    `--x a --x b`). A single value is stored as itself, not as a list, so
    that the args.json of a one-value run reads as the original's did."""

    def __init__(self, option_strings, dest, nargs='+', **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        items = [] if current is None else as_list(current)
        items = items + list(values)
        setattr(namespace, self.dest, items[0] if len(items) == 1 else items)


def as_list(value):
    """`value` as a list: a OneOrMore flag's single value becomes a list of one."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def given_arguments(parser, argv):
    """Returns the set of destinations the user gave explicitly on the command line.

    Parses `argv` a second time with every default suppressed, so what remains
    in the namespace is exactly what was typed.
    """
    # argparse keeps its actions in a private list (docs/private_apis.md).
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def check_stored_arguments(parser, stored, path):
    """Refuses stored arguments (a dict from args.json) that the parser would
    not accept on the command line: a wrong type, a value outside the choices,
    a non-finite number.

    Raises:
        UserError naming the file, the argument and the value.
    """
    # argparse keeps its actions in a private list (docs/private_apis.md).
    for action in parser._actions:
        if action.dest not in stored or stored[action.dest] is None:
            continue
        value = stored[action.dest]
        if action.type in (writeable_directory, readable_directory) and all(
                isinstance(item, str) for item in as_list(value)):
            # Folders are checked where they are used: they may have moved.
            continue
        values = as_list(value) if isinstance(action, OneOrMore) else value if isinstance(
            action.nargs, str) and action.nargs in '+*' else [value]
        try:
            if not isinstance(values, list):
                raise ValueError('a list was expected')
            for item in values:
                if isinstance(action.default, bool) and not isinstance(item, bool):
                    raise ValueError('true or false was expected')
                if isinstance(item, (dict, list)):
                    raise ValueError('a single value was expected')
                if action.type in (None, writeable_directory, readable_directory) and \
                        not isinstance(action.default, bool) and not isinstance(item, str):
                    raise ValueError('a text was expected')
                checked = action.type(str(item)) if action.type else item
                if action.type is int and (isinstance(item, bool) or checked != item):
                    raise ValueError('an integer was expected')
                if action.choices is not None and checked not in action.choices:
                    raise ValueError('one of {} was expected'.format(
                        ', '.join(map(str, action.choices))))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            raise UserError('`{}` stores `{}` = `{}`, which is not a valid value ({}); fix or '
                            'remove it there, or start a new experiment root.'.format(
                                path, action.dest, value, e))


def physical_memory():
    """This machine's memory in bytes."""
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


# Files that must never be half-written.
###

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


def check_finite(embs, what, remedy, names=None):
    """Refuses embeddings (N, D) with NaN or infinite values, or values so
    large that the distances between them overflow float32 (a squared
    Euclidean distance sums D squared differences), naming the rows.

    Args:
        embs: (N, D) array.
        what (str): Names the embeddings' source in the message.
        remedy (str): What the user can do, one sentence without its full stop.
        names: Optional (N,) names of the rows (such as file names) to show
            beside their numbers.

    Raises:
        UserError when some value is not finite or too large.
    """
    embs = np.asarray(embs)
    with np.errstate(invalid='ignore'):
        largest = np.abs(embs).max(axis=1, initial=0) if embs.ndim == 2 else np.abs(embs)
    limit = np.sqrt(np.finfo(np.float32).max / (4 * max(embs.shape[-1], 1)))
    for bad, problem in ((np.flatnonzero(~np.isfinite(largest)),
                          'non-finite values (NaN or infinity)'),
                         (np.flatnonzero(largest > limit),
                          'values larger than {:.3g} in magnitude, whose distances overflow'
                          .format(limit))):
        if not len(bad):
            continue
        shown = ', '.join('{}{}'.format(i, ' ({})'.format(names[i]) if names is not None else '')
                          for i in bad[:5])
        raise UserError('{}: {} of {} rows hold {}, row {}{}; {}.'.format(
            what, len(bad), len(embs), problem, shown, ', …' if len(bad) > 5 else '', remedy))


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


# Dataset handling
###

def _has_image_extension(path):
    return path.lower().endswith(IMAGE_EXTENSIONS)


def find_images(paths):
    """The image files among `paths`: files as given, and folders searched
    recursively for files with an image extension, each folder's in sorted
    order.

    Raises:
        UserError for a path that does not exist, or when no image is found.
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            for folder, subfolders, files in os.walk(path):
                subfolders.sort()
                found += [os.path.join(folder, f) for f in sorted(files)
                          if _has_image_extension(f)]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UserError('`{}` is neither an image file nor a folder.'.format(path))
    if not found:
        raise UserError('no images (files ending in {}) were found in {}.'.format(
            ', '.join(IMAGE_EXTENSIONS), ', '.join('`{}`'.format(p) for p in paths)))
    return found


def common_root(paths):
    """The deepest folder that holds all `paths`, and the paths relative to it:
    (root, (N,) array of relative paths), for the image loaders that join an
    image root and relative paths."""
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return root, np.array([os.path.relpath(p, root) for p in absolute])


def read_csv_rows(csv_file):
    """Reads `identity,relative/path` rows from a CSV file without header.

    Read with pandas as strings, with no NA conversion, so that identities
    such as `0002` or `NA` stay as written. Blank lines are skipped, as the
    original did; surrounding white space is stripped.

    Returns:
        A list of (pid, fid) string pairs, in file order.

    Raises:
        UserError naming the file and line for an unreadable, empty or
        malformed file, or one that starts with a header line.
    """
    try:
        with open(csv_file, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise UserError('cannot read the dataset CSV `{}`: {}.'.format(csv_file, e.strerror))
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b'\n') + 1
        raise UserError('`{}` line {}: the file is not valid UTF-8 text. Save it as UTF-8 '
                        'with rows `identity,relative/path`.'.format(csv_file, line))

    # One table row per line, blank lines included; a missing field is NaN,
    # an empty one ''. The two-field line put first keeps pandas from taking
    # the first column of a longer first row as an index; it is row 0 and
    # line 0, so row i is line i.
    try:
        table = pd.read_csv(io.StringIO('pid,fid\n' + text), header=None, names=['pid', 'fid'],
                            dtype=str, keep_default_na=False, na_values=[],
                            skip_blank_lines=False, engine='python').iloc[1:]
    except pd.errors.ParserError as e:
        too_many = re.search(r'Expected \d+ fields in line (\d+), saw (\d+)', str(e))
        if too_many:
            line_no = int(too_many.group(1)) - 1
            raise UserError(
                '`{}` line {}: expected 2 columns `identity,relative/path`, found {}: '
                '`{}`.'.format(csv_file, line_no, too_many.group(2),
                               text.splitlines()[line_no - 1]))
        raise UserError('`{}` is not a readable CSV file ({}); it needs rows '
                        '`identity,relative/path`.'.format(csv_file, str(e).strip()))

    rows = []
    for line_no, (pid, fid) in enumerate(table.itertuples(index=False, name=None), start=1):
        if pd.isna(fid):
            if pd.isna(pid) or not pid.strip():
                continue  # Blank lines carry nothing, the original ignored them too.
            raise UserError(
                '`{}` line {}: expected 2 columns `identity,relative/path`, found 1: '
                '`{}`.'.format(csv_file, line_no, pid))
        if not pid.strip() or not fid.strip():
            raise UserError('`{}` line {}: the identity and the path must both be non-empty, '
                            'found `{},{}`.'.format(csv_file, line_no, pid, fid))
        # Paths are joined to --image_root everywhere; an absolute one would
        # pass some checks and fail others, so it is refused everywhere.
        if os.path.isabs(fid.strip()) or re.match(r'[A-Za-z]:[\\/]', fid.strip()):
            raise UserError('`{}` line {}: `{}` is an absolute path, but paths are relative to '
                            '--image_root. Write them relative to one folder and pass that '
                            'folder as --image_root.'.format(csv_file, line_no, fid.strip()))
        rows.append((line_no, pid.strip(), fid.strip()))

    if not rows:
        raise UserError('the dataset CSV `{}` is empty; it needs rows '
                        '`identity,relative/path`.'.format(csv_file))
    first_line, pid0, fid0 = rows[0]
    others_are_images = any(_has_image_extension(f) for _, _, f in rows[1:])
    if not _has_image_extension(fid0) and (others_are_images or len(rows) == 1):
        raise UserError(
            '`{}` line {}: `{},{}` looks like a header line. The CSV has no header: '
            'remove that line so every row is `identity,relative/path`.'.format(
                csv_file, first_line, pid0, fid0))
    return [(pid, fid) for _, pid, fid in rows]


def load_dataset(csv_file, image_root, fail_on_missing=True):
    """Loads a dataset CSV file, returning PIDs and FIDs.

    PIDs are the "person IDs", i.e. class names/labels, kept as strings because
    leading zeros matter (`0002` and `2` are different people).
    FIDs are the "file IDs", the image paths relative to `image_root`.

    Args:
        csv_file (str): The CSV file to load, rows `identity,relative/path`.
        image_root (str or None): The folder the paths are relative to. When
            None, the existence of the files is not checked.
        fail_on_missing (bool): When files are missing, raise (True) or drop
            them with a warning (False).

    Returns:
        (pids, fids), two numpy unicode arrays of equal length.

    Raises:
        UserError for malformed files and, with `fail_on_missing`, missing images.
    """
    rows = read_csv_rows(csv_file)
    pids = np.array([pid for pid, _ in rows])
    fids = np.array([fid for _, fid in rows])

    if image_root is not None:
        if not os.path.isdir(image_root):
            raise UserError('the image root `{}` is not a folder.'.format(image_root))
        missing = np.array([not os.path.isfile(os.path.join(image_root, f)) for f in fids],
                           dtype=bool)
        if missing.any():
            examples = ', '.join('`{}`'.format(f) for f in fids[missing][:3])
            if fail_on_missing:
                raise UserError(
                    '{} of the {} images listed in `{}` are missing under the image root '
                    '`{}`, for example {}. Check `--image_root`.'.format(
                        missing.sum(), len(fids), csv_file, image_root, examples))
            logging.getLogger(__name__).warning(
                'Removing %d missing file(s) from the dataset `%s`, for example %s.',
                missing.sum(), csv_file, examples)
            pids, fids = pids[~missing], fids[~missing]
    return pids, fids


def training_sets(train_set, image_root):
    """The (CSV, image root) pairs of train.py's --train_set and --image_root
    (each a path or a list of paths): one image root serves every set, or
    each set has its own.

    Raises:
        UserError when the numbers of sets and roots do not match.
    """
    sets, roots = as_list(train_set), as_list(image_root)
    if len(roots) == 1:
        roots = roots * len(sets)
    if len(roots) != len(sets):
        raise UserError('--train_set names {} CSV file(s) and --image_root {} folders; give '
                        'one folder for all sets or one per set, in the same order.'.format(
                            len(sets), len(roots)))
    return list(zip(sets, roots))


def merge_datasets(parts):
    """Joins several training sets into one, with their identities kept apart.

    The identities of the i-th set (from 1) are prefixed `i:`, since one
    dataset's `0002` is not another's, and the paths become relative to the
    deepest folder that holds every set's image root. One set is returned as
    it is, so that a run on one set sees the paths and identities of its CSV.

    Args:
        parts: A list of (pids, fids, image_root, csv_file), from `load_dataset`.

    Returns:
        (pids, fids, image_root) of the union.

    Raises:
        UserError when two sets list the same image: it would be two people.
    """
    if len(parts) == 1:
        pids, fids, root, _ = parts[0]
        return pids, fids, root
    root = os.path.commonpath([os.path.abspath(part[2]) for part in parts])
    all_pids, all_fids, source = [], [], {}
    for number, (pids, fids, image_root, csv_file) in enumerate(parts, 1):
        folder = os.path.relpath(os.path.abspath(image_root), root)
        prefix = '' if folder == '.' else folder + '/'
        fids = np.array([os.path.normpath(prefix + f) for f in fids.tolist()], dtype=str)
        for fid in fids.tolist():
            first, first_csv = source.setdefault(fid, (number, csv_file))
            if first != number:
                raise UserError('the image `{}` is listed in training set {} (`{}`) and in set '
                                '{} (`{}`), whose identities are kept apart, so it would be '
                                'two people; give each training set once and leave out the '
                                'images they share.'.format(os.path.join(root, fid), first,
                                                            first_csv, number, csv_file))
        all_pids.append(np.array(['{}:{}'.format(number, p) for p in pids.tolist()], dtype=str))
        all_fids.append(fids)
    return np.concatenate(all_pids), np.concatenate(all_fids), root


# Logging
###

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
    formatter = logging.Formatter('%(asctime)s [%(levelname)s] %(name)s: %(message)s')
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


# Entry points
###

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

    Every script ends with `common.run(main)`, so that bad input is reported
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
