"""The dataset layer, TensorFlow-free, as the original's common.py: the one
reader of crop tables (the dataset CSVs of `identity,relative/path` rows,
read with pandas, CSVs of paths, and CSVs whose first line names their
columns, which inputs/unlabelled.py and inputs/tracklets.py interpret),
finding images in folders, and joining several training sets into one.
"""

import io
import logging
import os
import re

import numpy as np
import pandas as pd

from triplet_reid.cli import UserError
from triplet_reid.storage import files
from triplet_reid.cli.flags import as_list


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


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


def read_text(csv_file):
    """The text of the dataset CSV `csv_file`, UTF-8 with or without a BOM.

    Raises:
        UserError naming the file, and the line that is not UTF-8.
    """
    files.check_regular(csv_file, 'the dataset CSV', 'pass a CSV file of rows '
                        '`identity,relative/path`')
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
    return text


def read_csv_rows(csv_file, text=None):
    """Reads `identity,relative/path` rows from a CSV file without header.

    Read with pandas as strings, with no NA conversion, so that identities
    such as `0002` or `NA` stay as written. Blank lines are skipped, as the
    original did; surrounding white space is stripped.

    Args:
        text (str or None): The file's text, when the caller has read it.

    Returns:
        A list of (pid, fid) string pairs, in file order.

    Raises:
        UserError naming the file and line for an unreadable, empty or
        malformed file, or one that starts with a header line.
    """
    text = read_text(csv_file) if text is None else text

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
        if is_absolute(fid.strip()):
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


def is_absolute(fid):
    """Whether the path `fid` is absolute here or on Windows (`C:\\`)."""
    return os.path.isabs(fid) or re.match(r'[A-Za-z]:[\\/]', fid) is not None


# The columns that the first line of a crop table may name: see
# inputs/unlabelled.py and inputs/tracklets.py for what each means there.
COLUMNS = ('path', 'identity', 'camera', 'track', 'frame')

# Frames are compared as int64.
MAX_FRAME = 2 ** 62


def header_of(text):
    """The column names of a CSV whose first line names them, or None."""
    first = next((line for line in text.splitlines() if line.strip()), '')
    names = [name.strip().lower() for name in first.split(',')]
    return names if 'path' in names else None


def read_columns(csv_file, names, text):
    """The columns {name: (N,) strings} of the CSV `csv_file`, whose text
    `text` has the header `names`."""
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or len(set(names)) < len(names):
        raise UserError('`{}` line 1: the header names the columns {}; each of {} may be named '
                        'once, and no other.'.format(csv_file, ', '.join(names),
                                                     ', '.join(COLUMNS)))
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str,
                            keep_default_na=False, na_values=[], skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as e:
        raise UserError('`{}` is not a readable CSV file ({}); it needs the columns its first '
                        'line names.'.format(csv_file, str(e).strip().splitlines()[0]))
    table.columns = [c.strip().lower() for c in table.columns]
    if table.empty:
        raise UserError('`{}` names its columns but has no rows.'.format(csv_file))
    return {name: table[name].str.strip().to_numpy(dtype=str) for name in names}


def checked_paths(fids, csv_file, first_line):
    """Refuses empty and absolute paths, naming the line."""
    for line, fid in enumerate(fids, first_line):
        if not fid or is_absolute(fid):
            raise UserError('`{}` line {}: `{}` is not a path relative to --image_root.'.format(
                csv_file, line, fid))
    return fids


def checked_frames(values, csv_file):
    """The frame column as int64, refusing what is not an integer."""
    frames = np.zeros(len(values), np.int64)
    for line, value in enumerate(values, 2):
        if not re.fullmatch(r'-?\d{1,19}', value) or abs(int(value)) > MAX_FRAME:
            raise UserError('`{}` line {}: the frame `{}` is not an integer; every crop with '
                            'a frame column needs its frame number.'.format(csv_file, line,
                                                                            value))
        frames[line - 2] = int(value)
    return frames


def read_crop_table(csv_file):
    """The one reader of a crop table, in any of its three forms, read once:
    a CSV whose first line names its columns (see `COLUMNS`), a CSV of
    `relative/path` rows, or a dataset CSV of `identity,relative/path` rows.

    Returns:
        (columns, header): {name: (N,) strings}, with `path` always and
        `identity` for a dataset CSV, and the header's names (None for the
        two forms without one). A header's paths and frames are left for the
        caller to check, with the messages of its kind of set.

    Raises:
        UserError naming the file and line of what cannot be read.
    """
    text = read_text(csv_file)
    names = header_of(text)
    if names is not None:
        return read_columns(csv_file, names, text), names
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and all(',' not in line for line in lines):
        return {'path': checked_paths(np.array(lines), csv_file, 1)}, None
    rows = read_csv_rows(csv_file, text)
    return {'identity': np.array([pid for pid, _ in rows]),
            'path': np.array([fid for _, fid in rows])}, None


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
        missing = check_images_exist(fids, image_root, csv_file, fail_on_missing)
        pids, fids = pids[~missing], fids[~missing]
    return pids, fids


def check_images_exist(fids, image_root, csv_file, fail_on_missing=True):
    """Refuses (or, unless `fail_on_missing`, warns about) the images of
    `fids` that `csv_file` lists and that are missing under `image_root`.

    Returns:
        The (N,) boolean mask of the missing images.
    """
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
    return missing


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
