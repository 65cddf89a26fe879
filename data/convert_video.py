#!/usr/bin/env python3
r"""Turn an extracted public video re-id dataset into tracklet CSVs: one row
`identity,camera,track,frame,path` per frame image, under that header.

One sub-command per dataset; each takes `--dataset_root`, the folder the
download extracts to, which is also the `--image_root` for the other scripts:

    python data/convert_video.py mars     --dataset_root ~/data/MARS
    python data/convert_video.py ilidsvid --dataset_root ~/data/iLIDS-VID [--split 0]
    python data/convert_video.py prid2011 --dataset_root ~/data/PRID2011 [--splits splits.json]
    python data/convert_video.py dukev    --dataset_root ~/data/DukeMTMC-VideoReID

MARS is the folder with `bbox_train/`, `bbox_test/` and the `info/` folder of
the MARS evaluation code (train_name.txt, test_name.txt, tracks_train_info.mat,
tracks_test_info.mat, query_IDX.mat); its junk tracklets (identity -1) stay
in the gallery, where the `tracklets` excluder ignores them, and the
gallery is every test tracklet that is not a query, as torchreid has it.
iLIDS-VID is the folder with `i-LIDS-VID/sequences/cam{1,2}/personNNN/` and
`train-test people splits/train_test_splits_ilidsvid.mat`; split N (of 10)
tests the first half of its row, queries from camera 1 and the gallery from
camera 2 (Wang et al. 2014). PRID-2011 is the folder with
`multi_shot/cam_{a,b}/person_NNNN/` (or `prid_2011/multi_shot/…`); its people
seen by both cameras are split in halves, by a split file in torchreid's
`splits_prid2011.json` format when given, else at random from --seed;
queries come from camera a, the gallery from camera b. DukeMTMC-VideoReID is
the folder with `train/`, `query/` and `gallery/` of `PPPP/TTTT/*.jpg`.

Each writes `<prefix>_train.csv`, `<prefix>_query.csv` and `<prefix>_test.csv`
(the gallery) to `--output_dir`, all at once or not at all. Evaluate them
with `--excluder tracklets` (same identity in the same camera and junk
ignored). No TensorFlow: SciPy reads the .mat files, which hold data only.
"""

import argparse
import collections
import os
import re
import sys

import numpy as np

if __package__ in (None, ''):
    # Run as a script, this folder is on the path but the repository root is not.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402
from triplet_reid.cli import flags  # noqa: E402
from triplet_reid.storage import files, json_files  # noqa: E402
from triplet_reid.data.convert import ConversionError, check_output_dir, write_csvs  # noqa: E402

HEADER = ('identity', 'camera', 'track', 'frame', 'path')

# The largest split or info file read (MARS' largest is 2 MB): a file that
# claims more is not one of these datasets.
MAX_INFO_BYTES = 64 * 2 ** 20


def folder(root, *names, dataset):
    """The folder `root/names…`, refused with what `--dataset_root` must hold."""
    path = os.path.join(root, *names)
    if not os.path.isdir(path):
        raise ConversionError('`{}` has no folder `{}`, so it is not an extracted {}; pass the '
                              'folder that holds it as --dataset_root.'.format(
                                  root, os.path.join(*names), dataset))
    return path


def info_file(root, *names, dataset):
    """The path of a split or info file under `root`, checked to be a regular
    file of a plausible size."""
    path = os.path.join(root, *names)
    if not os.path.isfile(path):
        raise ConversionError('the {} file `{}` is missing; pass the folder that holds it as '
                              '--dataset_root.'.format(dataset, path))
    files.check_regular(path, 'the {} file'.format(dataset), 'restore it from the download')
    if os.path.getsize(path) > MAX_INFO_BYTES:
        raise ConversionError('`{}` has {} bytes, more than any {} file; restore it from the '
                              'download.'.format(path, os.path.getsize(path), dataset))
    return path


def read_mat(path, key, dataset):
    """The integer array `key` of the MATLAB file `path`."""
    from scipy.io import loadmat
    try:
        value = loadmat(path).get(key)
    except Exception as e:  # SciPy raises many kinds for a damaged file.
        raise ConversionError('cannot read the {} file `{}` ({}); restore it from the '
                              'download.'.format(dataset, path, str(e).splitlines()[0][:200]))
    if not isinstance(value, np.ndarray) or value.dtype.kind not in 'iuf' or not np.all(
            np.isfinite(value)) or not np.all(value == np.round(value)):
        raise ConversionError('`{}` holds no integer array `{}`, which the {} file has; restore '
                              'it from the download.'.format(path, key, dataset))
    return value.astype(np.int64)


def images(path, extension):
    """The sorted names of the `extension` images in the folder `path`."""
    return sorted(n for n in os.listdir(path) if n.lower().endswith(extension))


def frame_number(name, path):
    """The last number in an image's name: its frame."""
    numbers = re.findall(r'\d+', os.path.splitext(name)[0])
    if not numbers:
        raise ConversionError('the image `{}` has no frame number in its name; is this the '
                              'right dataset?'.format(os.path.join(path, name)))
    return str(int(numbers[-1]))


# MARS.
###

MARS_NAME = re.compile(r'(\d{4}|00-1)C(\d)T(\d{4})F(\d{3,})\.jpg')


def mars_split(root, names_file, info, key, home, picked=None):
    """The rows of the MARS tracklets `info` rows (start, end, identity,
    camera, 1-based into the names of `names_file`) at `picked`, or all."""
    with open(info_file(root, 'info', names_file, dataset='MARS')) as f:
        names = [line.strip() for line in f if line.strip()]
    tracks = read_mat(info_file(root, 'info', info, dataset='MARS'), key, 'MARS')
    if tracks.ndim != 2 or tracks.shape[1] != 4:
        raise ConversionError('`{}` holds `{}` of shape {}, not (tracklets, 4); restore it from '
                              'the download.'.format(info, key, tracks.shape))
    rows = []
    for number in (range(len(tracks)) if picked is None else picked):
        start, end, identity, camera = (int(v) for v in tracks[number])
        if not 1 <= start <= end <= len(names):
            raise ConversionError('`{}` row {}: frames {} to {} are not among the {} names of '
                                  '{}.'.format(info, number + 1, start, end, len(names),
                                               names_file))
        for name in names[start - 1:end]:
            match = MARS_NAME.fullmatch(name)
            if match is None or int(match.group(2)) != camera:
                raise ConversionError('`{}`: `{}` is not a MARS frame of camera {} '
                                      '(`0001C1T0001F001.jpg`); is this the right '
                                      'dataset?'.format(names_file, name, camera))
            rows.append(('-1' if identity < 0 else '{:04d}'.format(identity), str(camera),
                         match.group(3), str(int(match.group(4))),
                         '{}/{}/{}'.format(home, name[:4], name)))
    return rows


def mars(args):
    root = args.dataset_root
    for name in ('bbox_train', 'bbox_test'):
        folder(root, name, dataset='MARS')
    query = read_mat(info_file(root, 'info', 'query_IDX.mat', dataset='MARS'), 'query_IDX',
                     'MARS').ravel() - 1
    count = len(read_mat(info_file(root, 'info', 'tracks_test_info.mat', dataset='MARS'),
                         'track_test_info', 'MARS'))
    if query.size and (query.min() < 0 or query.max() >= count):
        raise ConversionError('query_IDX.mat names tracklets outside the {} of '
                              'tracks_test_info.mat; restore it from the download.'.format(count))
    gallery = np.setdiff1d(np.arange(count), query)
    return {'train': mars_split(root, 'train_name.txt', 'tracks_train_info.mat',
                                'track_train_info', 'bbox_train'),
            'query': mars_split(root, 'test_name.txt', 'tracks_test_info.mat', 'track_test_info',
                                'bbox_test', query),
            'test': mars_split(root, 'test_name.txt', 'tracks_test_info.mat', 'track_test_info',
                               'bbox_test', gallery)}


# Two-camera sets: iLIDS-VID and PRID-2011.
###

def sequence_rows(root, prefix, people, cameras, extension, dataset):
    """The rows of each person folder of `people` under `prefix/CAMERA` for
    each camera; a person's track is its folder's name."""
    rows = []
    for person in people:
        for camera in cameras:
            path = os.path.join(root, prefix, camera, person)
            frames = images(path, extension)
            if not frames:
                raise ConversionError('`{}` holds no {} images; is the {} download '
                                      'whole?'.format(path, extension, dataset))
            rows += [(person, camera, person, frame_number(name, path),
                      '{}/{}/{}/{}'.format(prefix, camera, person, name)) for name in frames]
    return rows


def ilidsvid(args):
    root = args.dataset_root
    sequences = os.path.join('i-LIDS-VID', 'sequences')
    cam1, cam2 = (folder(root, sequences, c, dataset='iLIDS-VID') for c in ('cam1', 'cam2'))
    people = sorted(os.listdir(cam1))
    if set(people) != set(os.listdir(cam2)) or not people:
        raise ConversionError('`{}` and `{}` do not hold the same person folders; is the '
                              'iLIDS-VID download whole?'.format(cam1, cam2))
    splits = read_mat(info_file(root, 'train-test people splits',
                                'train_test_splits_ilidsvid.mat', dataset='iLIDS-VID'),
                      'ls_set', 'iLIDS-VID')
    if splits.ndim != 2 or args.split >= len(splits) or splits.min() < 1 or \
            splits.max() > len(people):
        raise ConversionError('train_test_splits_ilidsvid.mat does not hold split {} of the {} '
                              'people; choose --split below {}.'.format(
                                  args.split, len(people), len(splits)))
    twice = [i for i, count in collections.Counter(splits[args.split]).items() if count > 1]
    if twice:
        raise ConversionError('split {} of train_test_splits_ilidsvid.mat names `{}` twice, so '
                              'it could be trained on and tested; restore the file from the '
                              'download.'.format(args.split, people[twice[0] - 1]))
    order = [people[i - 1] for i in splits[args.split]]
    test, train = sorted(order[:len(order) // 2]), sorted(order[len(order) // 2:])
    return two_camera_splits(root, sequences, train, test, ('cam1', 'cam2'), '.png',
                             'iLIDS-VID')


def two_camera_splits(root, prefix, train, test, cameras, extension, dataset):
    """Training on both cameras of `train`; queries from the first camera of
    `test` and the gallery from the second."""
    return {'train': sequence_rows(root, prefix, train, cameras, extension, dataset),
            'query': sequence_rows(root, prefix, test, cameras[:1], extension, dataset),
            'test': sequence_rows(root, prefix, test, cameras[1:], extension, dataset)}


def prid_split(path, split, people):
    """(train, test) people of split `split` of a torchreid splits file."""
    path = info_file(os.path.dirname(os.path.abspath(path)), os.path.basename(path),
                     dataset='PRID-2011 splits')
    try:
        with open(path, encoding='utf-8') as f:
            splits = json_files.parse_json(f.read())
        chosen = splits[split]
        train, test = chosen['train'], chosen['test']
    except (OSError, ValueError, IndexError, KeyError, TypeError) as e:
        raise ConversionError('`{}` is not a splits file with split {} (a JSON list of '
                              '{{"train": [...], "test": [...]}}, as torchreid\'s '
                              'splits_prid2011.json): {}.'.format(path, split, e))
    unknown = [p for p in list(train) + list(test) if p not in people]
    if unknown or not train or not test:
        raise ConversionError('split {} of `{}` names {}, which is not a person of both '
                              'cameras.'.format(split, path, unknown[0] if unknown else
                                                'no people'))
    return sorted(train), sorted(test)


def prid2011(args):
    root = args.dataset_root
    prefix = 'multi_shot' if os.path.isdir(os.path.join(root, 'multi_shot')) else \
        os.path.join('prid_2011', 'multi_shot')
    cam_a, cam_b = (folder(root, prefix, c, dataset='PRID-2011') for c in ('cam_a', 'cam_b'))
    people = sorted(set(os.listdir(cam_a)) & set(os.listdir(cam_b)))
    if len(people) < 2:
        raise ConversionError('`{}` and `{}` share fewer than two person folders; is the '
                              'PRID-2011 download whole?'.format(cam_a, cam_b))
    if args.splits:
        train, test = prid_split(args.splits, args.split, people)
    else:
        shuffled = list(np.random.default_rng(args.seed).permutation(people))
        train, test = sorted(shuffled[len(people) // 2:]), sorted(shuffled[:len(people) // 2])
    return two_camera_splits(root, prefix, train, test, ('cam_a', 'cam_b'), '.png',
                             'PRID-2011')


# DukeMTMC-VideoReID.
###

DUKEV_NAME = re.compile(r'(\d{4})_?C(\d+)_?F(\d+)_?X\d+\.jpg')


def dukev_split(root, split):
    path = folder(root, split, dataset='DukeMTMC-VideoReID')
    rows = []
    for person in sorted(os.listdir(path)):
        for track in sorted(os.listdir(os.path.join(path, person))):
            directory = os.path.join(path, person, track)
            for name in images(directory, '.jpg'):
                match = DUKEV_NAME.fullmatch(name)
                if match is None or match.group(1) != person:
                    raise ConversionError('`{}` is not a DukeMTMC-VideoReID frame of person {} '
                                          '(`{}_C6_F0001_X30823.jpg`); is this the right '
                                          'dataset?'.format(os.path.join(directory, name),
                                                            person, person))
                rows.append((person, match.group(2), track, str(int(match.group(3))),
                             '{}/{}/{}/{}'.format(split, person, track, name)))
    return rows


def dukev(args):
    root = args.dataset_root
    if os.path.isdir(os.path.join(root, 'DukeMTMC-VideoReID')):
        raise ConversionError('pass `{}` as --dataset_root, the folder that holds train/, '
                              'query/ and gallery/.'.format(
                                  os.path.join(root, 'DukeMTMC-VideoReID')))
    return {'train': dukev_split(root, 'train'), 'query': dukev_split(root, 'query'),
            'test': dukev_split(root, 'gallery')}


def check_consistent(splits, dataset):
    """Refuses splits that contradict themselves: a frame listed twice (in
    one split or two), which would be two tracklets of one picture, or an
    identity in training and in testing, which would leak what is tested
    into training. Junk (identity -1) may be anywhere.

    Raises:
        ConversionError naming the frame or the identity; nothing is written.
    """
    trained = {row[0] for row in splits['train']} - {'-1'}
    for split in ('query', 'test'):
        leaked = sorted(trained & {row[0] for row in splits[split]})
        if leaked:
            raise ConversionError(
                'the {} split puts {} of its identities, such as `{}`, in training and in the {} '
                'set, so tested people would be trained on; fix or restore the split file. '
                'Nothing was written.'.format(dataset, len(leaked), leaked[0], split))
    seen = {}
    for split, rows in splits.items():
        for row in rows:
            identity, camera, track, frame, path = row
            if path in seen:
                raise ConversionError(
                    'the {} files list the frame `{}` (identity {}, camera {}, track {}, frame '
                    '{}) twice {}; restore them from the download. Nothing was '
                    'written.'.format(dataset, path, identity, camera, track, frame,
                                      'in the {} split'.format(split) if seen[path] == split
                                      else 'in the {} and the {} split'.format(seen[path],
                                                                               split)))
            seen[path] = split


DATASETS = {
    'mars': (mars, 'mars', 'MARS'),
    'ilidsvid': (ilidsvid, 'ilidsvid', 'iLIDS-VID'),
    'prid2011': (prid2011, 'prid2011', 'PRID-2011'),
    'dukev': (dukev, 'dukev', 'DukeMTMC-VideoReID'),
}


def make_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='dataset', required=True, metavar='DATASET',
                                     help='One of: {}.'.format(', '.join(DATASETS)))
    for name, (_, prefix, description) in DATASETS.items():
        command = commands.add_parser(name, help='Convert ' + description + '.')
        command.add_argument(
            '--dataset_root', required=True,
            help='The extracted dataset; also the --image_root for training and embedding.')
        command.add_argument(
            '--output_dir', default='data',
            help='Where to write {}_{{train,query,test}}.csv.'.format(prefix))
        if name in ('ilidsvid', 'prid2011'):
            command.add_argument(
                '--split', default=0, type=flags.nonnegative_int,
                help='Which of the published train/test splits to write (0 to 9).')
        if name == 'prid2011':
            command.add_argument(
                '--splits', default=None,
                help='A split file in torchreid\'s splits_prid2011.json format; without it, '
                     'the people of both cameras are halved at random from --seed.')
            command.add_argument(
                '--seed', default=0, type=flags.nonnegative_int,
                help='Seed of the random halves without --splits.')
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    function, prefix, description = DATASETS[args.dataset]
    args.dataset_root = os.path.expanduser(args.dataset_root)
    if not os.path.isdir(args.dataset_root):
        raise ConversionError('the dataset root `{}` is not a folder.'.format(args.dataset_root))
    check_output_dir(args.output_dir)
    try:
        splits = function(args)
    except OSError as e:
        raise ConversionError('cannot read `{}`: {}.'.format(e.filename, e.strerror or e))
    for split, rows in splits.items():
        if not rows:
            raise ConversionError('the {} split of `{}` is empty, so {} is incomplete or damaged; '
                                  'nothing was written.'.format(split, args.dataset_root,
                                                                description))
    check_consistent(splits, description)
    for split in splits if os.path.isdir(args.output_dir) else ():
        files.check_output(os.path.join(args.output_dir, '{}_{}.csv'.format(prefix, split)),
                           '--output_dir', 'csv')
    try:
        written = write_csvs(args.output_dir, prefix, {
            split: [HEADER] + rows for split, rows in splits.items()})
    except OSError as e:
        raise ConversionError('cannot write the CSVs into `{}`: {}; nothing was written.'.format(
            args.output_dir, e.strerror or e))
    for split, path in written.items():
        rows = splits[split]
        print('{:<32} {:7d} frames, {:5d} tracklets, {:4d} identities'.format(
            path, len(rows), len({row[:3] for row in rows}), len({row[0] for row in rows})))
    print('Train with --image_root {} and --seq_len; evaluate with --excluder '
          'tracklets.'.format(args.dataset_root))
    return 0


if __name__ == '__main__':
    cli.run(main)
