#!/usr/bin/env python3
"""Make the video demo set: tracklets of the demo's people walking in six cameras.

Renders footage of the demo set's training identities and, apart, of its
test identities (data/make_footage.py), cuts every box of a track into a
crop (data/footage_crops.py), and writes tracklet CSVs, one row a frame,
`identity,camera,track,frame,path`, as data/convert_video.py writes the
public video sets:

    video_train.csv   every tracklet of the training identities,
    video_query.csv   one tracklet of each test identity that two cameras see,
    video_test.csv    the other test tracklets, the gallery,

with the crops under `train/sN/CAM/` and `test/sN/CAM/` (session N of each
camera, a few people at a time), so that `--output` is the image root. Train
with `train.py --seq_len 4 …`, embed the query and gallery CSVs and evaluate
with `--excluder tracklets` (docs/training.md, "Video").
"""

import argparse
import csv
import io
import os
import sys
import tempfile

import numpy as np

if __package__ in (None, ''):
    # Run as a script, this folder is on the path but the repository root is not.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402
from triplet_reid.cli import flags  # noqa: E402
from triplet_reid.storage import files  # noqa: E402
from triplet_reid.data import footage_crops, make_footage  # noqa: E402

HEADER = ['identity', 'camera', 'track', 'frame', 'path']


def crop_split(folder, demo, split, frames, people, sessions, seed):
    """Renders the footage of the demo's `split` identities, `people` at a
    time in each of `sessions` sessions of each camera (so that few people
    share a frame and each crop shows mostly its own), and crops it into
    `folder/split/sN`; returns its rows (identity, camera, track, frame, path)
    with the tracks named `N-track` after their session."""
    rows = []
    for session in range(sessions):
        target = os.path.join(folder, split, 's{}'.format(session))
        with tempfile.TemporaryDirectory(prefix='footage-') as footage:
            tracks, _ = make_footage.generate(footage, demo, 6, frames, people, seed + session,
                                              split, offset=session * people)
            if not tracks:
                break  # The cameras have shown all their people.
            os.makedirs(target)
            footage_crops.write(target, footage, footage_crops.cameras_of(
                footage, os.path.join('gt', 'gt.txt')), 0.0)
        with open(os.path.join(target, 'crops.csv'), encoding='utf-8') as f:
            table = list(csv.DictReader(f))
        os.remove(os.path.join(target, 'crops.csv'))
        rows += [(row['identity'], row['camera'], '{}-{}'.format(session, row['track']),
                  row['frame'], '{}/s{}/{}'.format(split, session, row['path']))
                 for row in table]
    return rows


def split_queries(rows, seed):
    """(query rows, gallery rows): one tracklet of each identity that two
    cameras see, chosen at random from `seed`, is its query."""
    rng = np.random.default_rng(seed)
    tracklets = {}
    for row in rows:
        tracklets.setdefault(row[0], {}).setdefault(row[1:3], None)
    queries = set()
    for identity, seen in sorted(tracklets.items()):
        keys = sorted(seen)
        if len({camera for camera, _ in keys}) > 1:
            queries.add((identity,) + keys[rng.integers(len(keys))])
    return ([row for row in rows if row[:3] in queries],
            [row for row in rows if row[:3] not in queries])


def write_csv(path, rows):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(HEADER)
    writer.writerows(rows)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text.getvalue())


def generate(folder, demo, frames, people, sessions, seed):
    """Writes the video demo set into `folder`; returns {csv: (tracklets, frames)}."""
    train = crop_split(folder, demo, 'train', frames, people, sessions, seed)
    query, gallery = split_queries(
        crop_split(folder, demo, 'test', frames, people, sessions, seed + 1000), seed)
    counts = {}
    for name, rows in (('video_train.csv', train), ('video_query.csv', query),
                       ('video_test.csv', gallery)):
        write_csv(os.path.join(folder, name), rows)
        counts[name] = (len({row[:3] for row in rows}), len(rows))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--demo', default=os.path.join(os.path.dirname(__file__), 'demo'),
                        help='The demo set whose people walk (data/demo, as `make demo` '
                             'makes it).')
    parser.add_argument('--output', default=os.path.join(os.path.dirname(__file__),
                                                         'video_demo'),
                        help='Folder to create; must not exist yet unless --force is given.')
    parser.add_argument('--frames', type=flags.int_between(2, 10000), default=40,
                        help='Frames per camera and session.')
    parser.add_argument('--people', type=flags.int_between(1, 200), default=6,
                        help='People per camera and session.')
    parser.add_argument('--sessions', type=flags.int_between(1, 100), default=5,
                        help='Sessions of each camera, each with the next --people of the '
                             'demo\'s people that camera saw.')
    parser.add_argument('--seed', type=flags.nonnegative_int, default=0,
                        help='Seed of the rendering and of the queries (0 or more).')
    parser.add_argument('--force', action='store_true',
                        help='Replace an existing output folder, if this tool wrote it.')
    args = parser.parse_args(argv)

    files.check_folder_output(args.output, '--output', 'make_video_demo.py', args.force)
    make_footage.demo_people(args.demo)
    counts = files.write_folder(args.output, lambda folder: generate(
        folder, args.demo, args.frames, args.people, args.sessions, args.seed),
        'make_video_demo.py')
    for name, (tracklets, frames) in counts.items():
        print('{:<40} {:5d} tracklets, {:6d} frames'.format(
            os.path.join(args.output, name), tracklets, frames))
    return 0


if __name__ == '__main__':
    cli.run(main)
