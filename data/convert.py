#!/usr/bin/env python3
r"""Turn an extracted public re-id dataset into the CSVs train.py, embed.py and
evaluate.py read: one row `identity,relative/path` per image.

One sub-command per dataset; each takes `--dataset_root`, the folder the
download extracts to, which is also the `--image_root` for the other scripts:

    python data/convert.py market1501 --dataset_root ~/data/Market-1501-v15.09.15
    python data/convert.py duke       --dataset_root ~/data/DukeMTMC-reID
    python data/convert.py msmt17     --dataset_root ~/data/MSMT17_V1
    python data/convert.py cuhk03     --dataset_root ~/data/cuhk03
    python data/convert.py cuhk03_folders --dataset_root ~/data/CUHK03_dataset/detected
    python data/convert.py veri776    --dataset_root ~/data/VeRi
    python data/convert.py folders    --dataset_root ~/my_crops [--camera_regex '_c(\d+)']

`folders` takes any folder with one sub-folder of images per identity and
splits its identities into training and test (`--train_fraction`, `--seed`).

Each writes `<prefix>_train.csv`, `<prefix>_query.csv` and `<prefix>_test.csv`
(the gallery) to `--output_dir` and names the excluder that evaluate.py needs.
Junk and distractors stay in the galleries, as in the original CSVs: the
excluders ignore Market-1501's junk (identity -1) and every same-identity,
same-camera match, and distractors (identity 0000) count as wrong matches.
CUHK03 ships its images inside a MATLAB file; they are written as PNGs under
the dataset root first. All files appear at once at the end, or not at all.

This script needs no TensorFlow (h5py and SciPy read CUHK03's .mat files).
"""

import argparse
import contextlib
import csv
import io
import os
import re
import sys
from importlib import import_module

import numpy as np

if __package__ in (None, ''):
    # Run as a script, this folder is on the path but the repository root,
    # which holds common.py, is not.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402
from triplet_reid import common  # noqa: E402
from triplet_reid.cli import flags, patterns  # noqa: E402
from triplet_reid.storage import files  # noqa: E402
from triplet_reid import excluders  # noqa: E402
import triplet_reid.excluders._camera  # noqa: F401, E402
import triplet_reid.excluders.cuhk03_folders  # noqa: F401, E402
from triplet_reid.cli import progress  # noqa: E402


class ConversionError(cli.UserError):
    """A problem with the dataset folder that the user can fix; printed without a traceback."""


# Writing.
###

def format_rows(rows):
    """The CSV text of `rows` (identity, path): fields holding a comma or a
    quote are quoted, which common.read_csv_rows reads back.

    Raises:
        ConversionError for a field that no CSV line can hold as it is: a
        line break, or white space at either end (which the readers strip).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    for row in rows:
        for field in row:
            if re.search(r'[\r\n]', field) or field != field.strip():
                raise ConversionError(
                    '{!r} holds a line break or begins or ends with white space, which a CSV '
                    'row `identity,relative/path` cannot hold; rename it. Nothing was '
                    'written.'.format(field))
        writer.writerow(row)
    return buffer.getvalue()


def write_csvs(output_dir, prefix, splits):
    """Writes `<prefix>_<split>.csv` for every (split, rows) in `splits`, all or none.

    Returns:
        {split: path} of the files written.
    """
    texts = {split: format_rows(rows) for split, rows in splits.items()}
    paths = {split: os.path.join(output_dir, '{}_{}.csv'.format(prefix, split))
             for split in splits}
    # Every file is written before any is renamed into place: the renames
    # happen as the blocks end, after the last file is whole.
    with contextlib.ExitStack() as stack:
        for split, text in texts.items():
            partial = stack.enter_context(files.output(paths[split]))
            with open(partial, 'w', encoding='utf-8') as f:
                f.write(text)
    return paths


# Reading.
###

def require_folder(root, name, dataset):
    path = os.path.join(root, name)
    if not os.path.isdir(path):
        raise ConversionError(
            '`{}` has no folder `{}`, so it is not an extracted {}; pass the folder that '
            'holds it as --dataset_root.'.format(root, name, dataset))
    return path


def scan_folder(root, folder, pattern, dataset):
    """Rows (identity, folder/name) for the JPEG images of `root/folder`, sorted
    by path.

    The identity is the first group of `pattern` matched against the name;
    other files (such as Thumbs.db) are skipped.
    """
    directory = require_folder(root, folder, dataset)
    regexp = re.compile(pattern)
    rows = []
    for name in sorted(os.listdir(directory)):
        if not name.lower().endswith('.jpg'):
            continue
        match = regexp.fullmatch(name)
        if match is None:
            raise ConversionError(
                'the image `{}` does not follow the {} naming `{}`; is this the right '
                'dataset?'.format(os.path.join(directory, name), dataset, pattern))
        rows.append((match.group(1), folder + '/' + name))
    if not rows:
        raise ConversionError('`{}` holds no images.'.format(directory))
    return rows


def read_list_file(path, dataset):
    """The non-empty lines of a dataset's list file, split at whitespace."""
    if not os.path.isfile(path):
        raise ConversionError('the {} list file `{}` is missing; pass the folder that '
                              'holds it as --dataset_root.'.format(dataset, path))
    try:
        with open(path) as f:
            return [(number, line.split()) for number, line in enumerate(f, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError('cannot read the {} list file `{}`: {}.'.format(dataset, path, e))


# Market-1501 and DukeMTMC-reID: one folder per split, identity in the name.
###

# Some Market-1501 files really end in `.jpg.jpg`, for example `-1_c4s6_022316_11.jpg.jpg`.
MARKET_PATTERN = r'(-1|\d{4})_c\d+s\d+_\d+_\d+(\.jpg)+'
DUKE_PATTERN = r'(\d{4})_c\d+_f\d+\.jpg'
FOLDER_SPLITS = (('train', 'bounding_box_train'), ('test', 'bounding_box_test'),
                 ('query', 'query'))


def market1501(dataset_root):
    """Market-1501: gallery junk is `-1_…` (the market1501 excluder ignores it) and
    distractors `0000_…` (wrong matches)."""
    return {split: scan_folder(dataset_root, folder, MARKET_PATTERN, 'Market-1501')
            for split, folder in FOLDER_SPLITS}


def duke(dataset_root):
    """DukeMTMC-reID: no junk; the duke excluder drops same-camera matches."""
    return {split: scan_folder(dataset_root, folder, DUKE_PATTERN, 'DukeMTMC-reID')
            for split, folder in FOLDER_SPLITS}


# MSMT17: list files `folder/name label` below train/ and test/.
###

MSMT_PATTERN = r'(\d{4})_\d+_\d{2}_\w+_\d+_\d+\.jpg'


def msmt17(dataset_root):
    """MSMT17 (V1, or V2 with its mask_*_v2 folders). The training set is
    list_train plus list_val, the usual protocol; the labels of the list files
    are the identities."""
    splits = {}
    for split, lists in (('train', ('list_train', 'list_val')), ('query', ('list_query',)),
                         ('test', ('list_gallery',))):
        folder = 'train' if split == 'train' else 'test'
        if not os.path.isdir(os.path.join(dataset_root, folder)) and \
                os.path.isdir(os.path.join(dataset_root, 'mask_{}_v2'.format(folder))):
            folder = 'mask_{}_v2'.format(folder)
        require_folder(dataset_root, folder, 'MSMT17')
        rows = []
        for name in lists:
            path = os.path.join(dataset_root, name + '.txt')
            for number, fields in read_list_file(path, 'MSMT17'):
                if len(fields) != 2 or not fields[1].isdigit() or \
                        re.fullmatch(MSMT_PATTERN, os.path.basename(fields[0])) is None:
                    raise ConversionError(
                        '{}:{}: expected `IIII/IIII_NNN_CC_<time>_NNNN_N.jpg label`, got `{}`.'
                        .format(path, number, ' '.join(fields)))
                image = folder + '/' + fields[0]
                if not os.path.isfile(os.path.join(dataset_root, image)):
                    raise ConversionError('{}:{}: the image `{}` is missing.'.format(
                        path, number, os.path.join(dataset_root, image)))
                rows.append(('{:04d}'.format(int(fields[1])), image))
        splits[split] = rows
    return splits


# CUHK03, new protocol (Zhong et al. 2017): images from cuhk-03.mat, splits
# from cuhk03_new_protocol_config_{detected,labeled}.mat.
###

def find_file(root, name):
    for directory, _, names in os.walk(root):
        if name in names:
            return os.path.join(directory, name)
    raise ConversionError('`{}` not found below `{}`; extract cuhk03_release.zip and put the '
                          'new-protocol .mat files there.'.format(name, root))


def cuhk03_image_name(campus, person, index):
    """`C_PPP_V_II.png` (all 1-based): camera pair, person in that pair, view
    (1 for the first five images, 2 for the rest), image. The protocol files
    name the images this way."""
    return '{:d}_{:03d}_{:d}_{:02d}.png'.format(campus + 1, person + 1, 1 if index < 5 else 2,
                                                index + 1)


def extract_cuhk03_images(mat_path, image_type, directory, progress=None):
    """Writes the `image_type` ('detected' or 'labeled') crops of cuhk-03.mat as PNG
    files into `directory`, created whole through a temporary folder; calls
    `progress` (if given) with (done, total) of its identities after each."""
    import h5py
    from PIL import Image

    if os.path.isdir(directory):
        return

    def extract(folder):
        with h5py.File(mat_path, 'r') as mat:
            if image_type not in mat:
                raise ConversionError('`{}` holds no `{}` images.'.format(mat_path, image_type))
            campuses = [files.stored_values(mat[ref], mat_path).T
                        for ref in np.ravel(files.stored_values(mat[image_type], mat_path))]
            total, done = sum(cells.shape[0] for cells in campuses), 0
            # MATLAB stores arrays column-major, so h5py sees them transposed.
            for campus, cells in enumerate(campuses):
                for person in range(cells.shape[0]):
                    for index in range(cells.shape[1]):
                        image = files.stored_values(mat[cells[person, index]], mat_path).T
                        if image.ndim != 3:
                            continue  # MATLAB's empty cell: this view has fewer images.
                        Image.fromarray(image.astype(np.uint8)).save(
                            os.path.join(folder, cuhk03_image_name(campus, person, index)))
                    done += 1
                    if progress is not None:
                        progress(done, total)

    try:
        files.write_folder(directory, extract)
    except (OSError, KeyError, ValueError) as e:
        raise ConversionError('cannot read the images of `{}`: {}.'.format(mat_path, e))


def cuhk03_split(protocol_path, folder, dataset_root):
    """train/query/test rows of one new-protocol configuration file."""
    from scipy.io import loadmat

    try:
        config = loadmat(protocol_path)
        files = [str(np.ravel(entry)[0]) for entry in np.ravel(config['filelist'])]
        labels = np.ravel(config['labels']).astype(int)
        indices = {split: np.ravel(config[key]).astype(int) - 1 for split, key in
                   (('train', 'train_idx'), ('query', 'query_idx'), ('test', 'gallery_idx'))}
    except (OSError, KeyError, ValueError, IndexError) as e:
        raise ConversionError('cannot read the CUHK03 protocol `{}`: {}.'.format(
            protocol_path, e))
    available = set(os.listdir(os.path.join(dataset_root, folder)))
    missing = sorted(set(files) - available)
    if missing:
        raise ConversionError('the protocol `{}` lists {} images that cuhk-03.mat does not '
                              'hold, for example `{}`.'.format(protocol_path, len(missing),
                                                               missing[0]))
    return {split: [('{:04d}'.format(labels[i]), folder + '/' + files[i]) for i in idx]
            for split, idx in indices.items()}


def cuhk03(dataset_root, image_types=('detected', 'labeled'), progress=None):
    """CUHK03 new protocol: 767 training and 700 test identities. Returns the
    splits of every image type, keyed `<type>_<split>`. `progress` hears how
    the extraction of the crops goes (see extract_cuhk03_images)."""
    mat_path = find_file(dataset_root, 'cuhk-03.mat')
    splits = {}
    for image_type in image_types:
        protocol = find_file(dataset_root,
                             'cuhk03_new_protocol_config_{}.mat'.format(image_type))
        folder = 'images_' + image_type
        extract_cuhk03_images(mat_path, image_type, os.path.join(dataset_root, folder),
                              progress)
        for split, rows in cuhk03_split(protocol, folder, dataset_root).items():
            splits['{}_{}'.format(image_type, split)] = rows
    return splits


# CUHK03 as folders of crops: train/ and val/ with `IIII_KK.jpg`, images 00-04
# from one camera of the pair and 05-09 from the other.
###

CUHK03_FOLDERS_PATTERN = r'(\d{4})_(\d{2})\.jpg'


def cuhk03_folders(dataset_root):
    """CUHK03 crops in `train/` and `val/` (as the `detected` folder of some
    repackagings): the training set is train/; of each val/ identity, the
    first image of each camera is a query when the other camera has an image
    of it in the gallery, and every other image forms the gallery."""
    splits = {'train': scan_folder(dataset_root, 'train', CUHK03_FOLDERS_PATTERN, 'CUHK03 folders'),
              'query': [], 'test': []}
    by_identity = {}
    for identity, path in scan_folder(dataset_root, 'val', CUHK03_FOLDERS_PATTERN,
                                      'CUHK03 folders'):
        by_identity.setdefault(identity, []).append(path)
    for identity, paths in sorted(by_identity.items()):
        # The excluder's rule, so that every query keeps a match it does not ignore.
        cameras = excluders.cuhk03_folders.camera(np.array([
            re.fullmatch(CUHK03_FOLDERS_PATTERN, os.path.basename(p)).group(2)
            for p in paths])).tolist()
        queries = choose_queries(cameras, lambda candidates: candidates[0])
        splits['query'] += [(identity, paths[j]) for j in sorted(queries)]
        splits['test'] += [(identity, p) for j, p in enumerate(paths) if j not in queries]
    return splits


# VeRi-776: image_{train,query,test}/ with name_{train,query,test}.txt.
###

VERI_PATTERN = r'(\d{4})_c\d{3}_\d+_\d+\.jpg'


def veri776(dataset_root):
    """VeRi-776 vehicles. Junk is every same-vehicle, same-camera gallery image,
    which the veri776 excluder ignores (the official jk_index.txt)."""
    return {split: scan_folder(dataset_root, 'image_' + split, VERI_PATTERN, 'VeRi-776')
            for split in ('train', 'query', 'test')}


# Command line.
###

# name: (function, CSV prefix, excluder, description)
# Any folder of identities: one sub-folder per identity.
###

def choose_queries(cameras, pick):
    """The indices of one identity's query images: one per camera, drawn by
    `pick(indices of that camera's images)`, as long as every query keeps an
    image of another camera in the gallery to match it (without cameras, all
    None: one image, if any other stays).

    Cameras are judged in order, each against the queries chosen before it,
    so that no query is left without a match: an identity seen by camera 1
    twice and camera 2 once gets one query, not a second one that would take
    the first one's only match out of the gallery.
    """
    def matched(chosen):
        return all(any(j not in chosen and (c != cameras[q] if c is not None else j != q)
                       for j, c in enumerate(cameras)) for q in chosen)

    chosen = set()
    for cam in sorted(set(cameras), key=str):
        candidates = [j for j, c in enumerate(cameras) if c == cam]
        # All images of one camera leave the gallery alike, so the first
        # stands for whichever `pick` draws (drawn only when one is taken).
        if matched(chosen | {candidates[0]}):
            chosen.add(pick(candidates))
    return chosen


def camera_reader(excluder, camera_regex=None):
    """A function from file paths to their cameras, as the excluder `excluder`
    reads them from the file names (`folders`: the first group of
    `camera_regex`; without one, or for `diagonal`, no cameras: all None)."""
    if excluder in ('folders', 'diagonal'):
        if not camera_regex:
            return lambda paths: [None] * len(paths)
        regexp = patterns.compile(camera_regex, '--camera_regex')

        def by_regex(paths):
            cameras = []
            for path in paths:
                match = regexp.search(os.path.basename(path))
                if match is None or not match.groups():
                    raise ConversionError('the file name `{}` does not match --camera_regex `{}` '
                                          '(its first group is the camera).'.format(
                                              path, camera_regex))
                cameras.append(match.group(1))
            return cameras
        return by_regex
    module = import_module('triplet_reid.excluders.' + excluder)

    def by_pattern(paths):
        _, cameras = excluders._camera.parse(paths, module.PATTERN, excluder)
        return list(module.camera(cameras) if hasattr(module, 'camera') else cameras)
    return by_pattern


def hold_out_validation(splits, val_ids, seed, cameras_of):
    """Moves `val_ids` identities of each training split (drawn with `seed`)
    into its validation splits `val_query` and `val_test` (`<type>_val_...`
    for `<type>_train`): of each held-out identity, a query per camera with a
    match in another camera (see `choose_queries`), and the rest as gallery.

    Raises:
        ConversionError when too few identities remain, or no held-out
        identity can be a query.
    """
    for key in [k for k in splits if k == 'train' or k.endswith('_train')]:
        stem = key[:-len('train')]
        rows = splits[key]
        ids = sorted({pid for pid, _ in rows})
        if val_ids >= len(ids):
            raise ConversionError('--val_ids {} leaves no training identities of the {} in `{}`; '
                                  'hold out fewer.'.format(val_ids, len(ids), key))
        rng = np.random.default_rng(seed)
        held = {ids[i] for i in rng.permutation(len(ids))[:val_ids]}
        query, test = [], []
        for identity in sorted(held):
            files = [f for pid, f in rows if pid == identity]
            chosen = choose_queries(cameras_of(files), lambda candidates: candidates[
                rng.integers(len(candidates))])
            query += [(identity, files[j]) for j in sorted(chosen)]
            test += [(identity, f) for j, f in enumerate(files) if j not in chosen]
        if not query:
            raise ConversionError('none of the {} held-out identities has images that can be '
                                  'matched across cameras, so there is no validation query; '
                                  'hold out more with --val_ids.'.format(val_ids))
        splits[key] = [row for row in rows if row[0] not in held]
        splits[stem + 'val_query'], splits[stem + 'val_test'] = query, test
    return splits


def folders(dataset_root, seed=0, train_fraction=0.5, camera_regex=None, progress=None):
    """Splits a folder of identity sub-folders into train, query and gallery.

    The identities (sub-folder names, sorted, then shuffled with `seed`) are
    split into training and test identities by `train_fraction`. Of each test
    identity, one image (drawn with `seed`) becomes a query for every camera
    it was seen by (one query without cameras), provided another image of it
    remains in the gallery from another camera (any other image without
    cameras); all its other images form the gallery, so identities without a
    possible match stay as distractors.

    Args:
        camera_regex (str or None): A regular expression whose first group,
            searched in each file name, is its camera.
        progress: None, or called with (done, total) identity folders as
            they are scanned.
    """
    identities = sorted(name for name in os.listdir(dataset_root)
                        if os.path.isdir(os.path.join(dataset_root, name)))
    images = {}
    for done, identity in enumerate(identities, 1):
        files = []
        for folder, subfolders, names in os.walk(os.path.join(dataset_root, identity)):
            subfolders.sort()
            files += [os.path.relpath(os.path.join(folder, n), dataset_root).replace(os.sep, '/')
                      for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
        if files:
            images[identity] = files
        if progress is not None:
            progress(done, len(identities))
    if len(images) < 2:
        raise ConversionError('`{}` holds {} sub-folders with images; it needs one folder per '
                              'identity, at least two.'.format(dataset_root, len(images)))
    cameras_of = camera_reader('folders', camera_regex)
    rng = np.random.default_rng(seed)
    order = [identities[i] for i in rng.permutation(len(identities)) if identities[i] in images]
    cut = int(round(train_fraction * len(order)))
    if not 0 < cut < len(order):
        raise ConversionError('--train_fraction {} leaves no {} identities of the {}.'.format(
            train_fraction, 'training' if cut == 0 else 'test', len(order)))
    splits = {'train': [(i, f) for i in sorted(order[:cut]) for f in images[i]],
              'query': [], 'test': []}
    for identity in sorted(order[cut:]):
        files = list(images[identity])
        cameras = cameras_of(files)
        chosen = choose_queries(cameras, lambda candidates: candidates[rng.integers(
            len(candidates))])
        splits['query'] += [(identity, files[j]) for j in sorted(chosen)]
        splits['test'] += [(identity, f) for j, f in enumerate(files) if j not in chosen]
    return splits


DATASETS = {
    'market1501': (market1501, 'market1501', 'market1501', 'Market-1501'),
    'duke': (duke, 'dukeMTMC', 'duke', 'DukeMTMC-reID'),
    'msmt17': (msmt17, 'msmt17', 'msmt17', 'MSMT17 (V1 or V2)'),
    'cuhk03': (cuhk03, 'cuhk03', 'cuhk03', 'CUHK03, new protocol'),
    'cuhk03_folders': (cuhk03_folders, 'cuhk03_folders', 'cuhk03_folders',
                       'CUHK03 crops in train/ and val/ folders'),
    'veri776': (veri776, 'veri776', 'veri776', 'VeRi-776'),
    'folders': (folders, None, None, 'a folder of identity sub-folders'),
}

IMAGE_EXTENSIONS = common.IMAGE_EXTENSIONS


def csv_prefix(arg):
    """A file-name prefix of the CSVs, for argparse: a name, never a path, so
    that the CSVs land in --output_dir and nowhere else."""
    # Both separators, on every system: a CSV may be converted on one and read on another.
    if not arg or arg in ('.', '..') or '/' in arg or '\\' in arg or '\x00' in arg:
        raise argparse.ArgumentTypeError('`{}` is not a file name prefix (no folders, no `/`); '
                                         'the CSVs are written to --output_dir.'.format(arg))
    return arg


def check_output_dir(path):
    """Refuses an output folder that is a file or cannot be created or written,
    before the dataset is read."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConversionError('--output_dir `{}` is a file, not a folder.'.format(path))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConversionError('cannot write to --output_dir `{}`: `{}` is not a writeable '
                              'folder.'.format(path, existing))


def fraction(arg):
    """A number strictly between 0 and 1, for argparse."""
    try:
        value = float(arg)
    except ValueError:
        value = float('nan')
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError('expected a number between 0 and 1, got `{}`.'.format(
            arg))
    return value


def make_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='dataset', required=True, metavar='DATASET',
                                     help='One of: {}.'.format(', '.join(DATASETS)))
    for name, (_, prefix, _, description) in DATASETS.items():
        command = commands.add_parser(name, help='Convert ' + description + '.')
        command.add_argument(
            '--dataset_root', required=True,
            help='The extracted dataset; also the --image_root for training and embedding.')
        command.add_argument(
            '--output_dir', default='data',
            help='Where to write {}_{{train,query,test}}.csv.'.format(prefix or '<prefix>'))
        command.add_argument(
            '--val_ids', default=0, type=flags.nonnegative_int,
            help='Hold out this many training identities as a validation set, written as '
                 '{0}_val_query.csv and {0}_val_test.csv for train.py\'s --val_query and '
                 '--val_gallery (a query per camera with a match in another camera). 0: '
                 'none.'.format(prefix or '<prefix>'))
        command.add_argument(
            '--val_seed', default=0, type=flags.nonnegative_int,
            help='Seed of the held-out identities and their queries (0 or more).')
        command.add_argument(
            '--quiet', action='store_true', default=False,
            help='No progress bar (drawn only on a terminal, for work of more than a second).')
        if name == 'folders':
            command.add_argument(
                '--prefix', default=None, type=csv_prefix,
                help='The CSVs\' prefix; the dataset root\'s folder name by default.')
            command.add_argument(
                '--camera_regex', default=None,
                help='A regular expression whose first group, searched in each file name, is '
                     'the camera that saw it (such as `_c(\\d+)` for `..._c3_....jpg`). With '
                     'it, queries are chosen per camera and evaluation ignores same-camera '
                     'matches; without it, every other image of the identity counts.')
            command.add_argument(
                '--seed', default=0, type=flags.nonnegative_int,
                help='Seed of the identity split and the query choice (0 or more).')
            command.add_argument(
                '--train_fraction', default=0.5, type=fraction,
                help='The share of the identities used for training; the rest are tested.')
        if name == 'cuhk03':
            command.add_argument(
                '--image_type', choices=('detected', 'labeled', 'both'), default='both',
                help='Which crops to convert: the detector\'s, the hand-labelled, or both '
                     '(CSV prefixes cuhk03_detected and cuhk03_labeled).')
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    function, prefix, excluder, description = DATASETS[args.dataset]
    root = os.path.expanduser(args.dataset_root)
    if not os.path.isdir(root):
        raise ConversionError('the dataset root `{}` is not a folder.'.format(root))
    check_output_dir(args.output_dir)
    if args.dataset == 'cuhk03':
        types = ('detected', 'labeled') if args.image_type == 'both' else (args.image_type,)
        with progress.bar('Extracting the crops', 'identity', args.quiet) as report:
            splits = function(root, types, report)
    elif args.dataset == 'folders':
        if args.camera_regex:
            try:
                patterns.compile(args.camera_regex, '--camera_regex')
            except cli.UserError as e:
                raise ConversionError(str(e))
        with progress.bar('Scanning the identity folders', 'folder', args.quiet) as report:
            splits = function(root, args.seed, args.train_fraction, args.camera_regex, report)
        prefix = args.prefix or os.path.basename(os.path.normpath(os.path.abspath(root)))
        excluder = 'folders --camera_regex \'{}\''.format(args.camera_regex) \
            if args.camera_regex else 'diagonal'
    else:
        splits = function(root)
    # `folders` names its camera regex after the excluder's name.
    excluder_name, camera_regex = excluder.split()[0], getattr(args, 'camera_regex', None)
    if args.val_ids:
        splits = hold_out_validation(splits, args.val_ids, args.val_seed,
                                     camera_reader(excluder_name, camera_regex))
    for split, rows in splits.items():
        if not rows:
            raise ConversionError('the {} split of `{}` is empty, so {} is incomplete or damaged; '
                                  'nothing was written.'.format(split, root, description))
    # A new --output_dir holds nothing to protect; check_output_dir has checked it.
    for split in splits if os.path.isdir(args.output_dir) else ():
        files.check_output(os.path.join(args.output_dir, '{}_{}.csv'.format(prefix, split)),
                           '--output_dir', 'csv')
    try:
        written = write_csvs(args.output_dir, prefix, splits)
    except OSError as e:
        raise ConversionError('cannot write the CSVs into `{}`: {}; nothing was written.'.format(
            args.output_dir, e.strerror or e))
    for split, path in written.items():
        rows = splits[split]
        print('{:<40} {:6d} images, {:5d} identities'.format(
            path, len(rows), len({pid for pid, _ in rows})))
    print('Evaluate {} with --excluder {}, and train with --image_root {}.'.format(
        description, excluder, root))
    if args.val_ids:
        print('Validate during training with --val_query and --val_gallery the *_val_query.csv '
              'and *_val_test.csv above, and --val_excluder {}{}.'.format(
                  excluder_name, ' --val_camera_regex \'{}\''.format(camera_regex)
                  if camera_regex else ''))
    return 0


if __name__ == '__main__':
    cli.run(main)
