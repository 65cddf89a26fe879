#!/usr/bin/env python3
"""Cut camera footage's boxes into crops for train.py --pseudo_labels.

Reads every camera folder under `--footage` that holds MOT-Challenge frames
and boxes (`CAM/img1/000001.jpg`, … and `CAM/gt/gt.txt` or `--detections`,
as data/make_footage.py writes them and embed.py --frames reads them), crops
each box with a track into `--output/CAM/`, and writes `--output/crops.csv`
with the header `path,camera,track,frame`: every crop of a track is then one
person for the clustering, and two tracks that one camera sees at the same
time are two. Where a camera folder has the `tracks.csv` of make_footage.py
(`identity,CAM/trackID` rows), its identities are added as an `identity`
column, which train.py uses for measuring the pseudo-labels only.

    .venv/bin/python data/footage_crops.py --footage data/footage --output data/footage_crops
    .venv/bin/python train.py --pseudo_labels --train_set data/footage_crops/crops.csv \\
        --image_root data/footage_crops … (see docs/training.md)
"""

import argparse
import csv
import io
import os
import sys

if __package__ in (None, ''):
    # Run as a script, this folder is on the path but the repository root is not.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402
from triplet_reid import common  # noqa: E402
from triplet_reid.cli import flags  # noqa: E402
from triplet_reid.storage import files  # noqa: E402
from triplet_reid.inputs import footage  # noqa: E402


def cameras_of(root, detections):
    """The (camera, frames folder, detections file) of each camera folder under `root`."""
    if not os.path.isdir(root):
        raise cli.UserError('--footage `{}` is not a folder.'.format(root))
    found = [(name, os.path.join(root, name, 'img1'), os.path.join(root, name, detections))
             for name in sorted(os.listdir(root))
             if os.path.isdir(os.path.join(root, name, 'img1'))]
    if not found:
        raise cli.UserError('`{}` holds no camera folder with an `img1/` folder of frames; '
                            'pass the folder that data/make_footage.py wrote.'.format(root))
    for camera, _, path in found:
        if not os.path.isfile(path):
            raise cli.UserError('the camera `{}` has no detections file `{}`; name it with '
                                '--detections.'.format(camera, path))
    return found


def identities_of(root, camera):
    """{track: identity} from the camera's tracks.csv, or {} without one."""
    path = os.path.join(root, camera, 'tracks.csv')
    if not os.path.isfile(path):
        return {}
    identities = {}
    for number, row in enumerate(csv.reader(io.StringIO(common.read_text(path))), 1):
        if len(row) != 2 or '/track' not in row[1]:
            raise cli.UserError('`{}` line {}: expected `identity,{}/trackID`.'.format(
                path, number, camera))
        identities[row[1].split('/track', 1)[1]] = row[0]
    return identities


def crop_all(root, cameras, folder, margin):
    """Crops every camera's tracked boxes into `folder`; returns the crops.csv
    rows and whether identities were known for all of them."""
    rows, known = [], True
    for camera, frames_folder, detections_file in cameras:
        detections = [d for d in footage.read_detections(detections_file) if d.track >= 0]
        os.makedirs(os.path.join(folder, camera))
        crops, _ = footage.crop_detections(detections, footage.frame_files(frames_folder),
                                           os.path.join(folder, camera), margin,
                                           path=detections_file)
        identities = identities_of(root, camera)
        known &= all(str(d.track) in identities for _, d, _ in crops)
        rows += [(camera + '/' + name, camera, d.track, d.frame,
                  identities.get(str(d.track), '')) for name, d, _ in crops]
    return rows, known


def write(folder, root, cameras, margin):
    rows, known = crop_all(root, cameras, folder, margin)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(['path', 'camera', 'track', 'frame'] + (['identity'] if known else []))
    writer.writerows(row if known else row[:4] for row in rows)
    with open(os.path.join(folder, 'crops.csv'), 'w', encoding='utf-8') as f:
        f.write(text.getvalue())
    return len(rows), len({row[1:3] for row in rows})


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--footage', required=True,
                        help='The folder of camera folders (data/make_footage.py\'s --output).')
    parser.add_argument('--output', required=True,
                        help='Folder to create, with the crops and crops.csv; must not exist '
                             'yet unless --force is given.')
    parser.add_argument('--detections', default=os.path.join('gt', 'gt.txt'),
                        help='Each camera folder\'s MOT-Challenge boxes, relative to it.')
    parser.add_argument('--margin', type=flags.float_between(0, 1), default=0.0,
                        help='Grow each box by this fraction of its size on every side.')
    parser.add_argument('--force', action='store_true',
                        help='Replace an existing output folder, if this tool wrote it.')
    args = parser.parse_args(argv)

    files.check_folder_output(args.output, '--output', 'footage_crops.py', args.force)
    cameras = cameras_of(args.footage, args.detections)
    count, tracks = files.write_folder(args.output, lambda folder: write(
        folder, args.footage, cameras, args.margin), 'footage_crops.py')
    print('Wrote {} crops of {} tracks to {}; train on {}.'.format(
        count, tracks, args.output, os.path.join(args.output, 'crops.csv')))
    return 0


if __name__ == '__main__':
    cli.run(main)
