#!/usr/bin/env python3
r"""Turn a public multi-camera tracking set into what associate.py and
embed.py read: each camera's frames and its boxes with global identities,
and the cameras' clock.

    python data/convert_mtmc.py aicity --dataset_root ~/data/AIC21_Track3_MTMC_Tracking \
        --scenario train/S01 --output_dir data/aicity_S01
    python data/convert_mtmc.py wildtrack --dataset_root ~/data/Wildtrack_dataset \
        --output_dir data/wildtrack
    python data/convert_mtmc.py epfl --dataset_root ~/data/epfl --sequence terrace1 \
        --output_dir data/terrace1
    python data/convert_mtmc.py mmptracking --dataset_root ~/data/MMPTracking/validation \
        --scene 64pm/lobby_0 --output_dir data/lobby_0

Writes, under --output_dir (whole, or not at all):
    CAMERA/gt/gt.txt   the boxes, MOT-Challenge `frame,id,left,top,width,height,1,-1,-1,-1`,
                       ids global (one person or vehicle, one id in every camera),
    CAMERA/img1/       (WILDTRACK, MMPTracking) links to the frames, numbered from 1 as MOT
                       numbers them,
    cameras.csv        `camera,frames,ground_truth`: what to pass embed.py --frames and
                       --detections, and associate.py --ground_truth (paths relative to
                       --output_dir, or absolute),
    topology.json      the cameras' clock (inputs/topology.py): AI City's frame rates and
                       start times in seconds; for the others, whose cameras all watch one
                       place, one clock of frames and every pair's views overlapping. No
                       links, which associate.py estimates.

The AI City Challenge's MTMC sets (2020-2022, vehicles: `<split>/S01/c001/vdo.avi`,
`gt/gt.txt`, and `cam_timestamp/S01.txt` of each camera's start) keep their frames in the
video; its frame rate is read from the video (10 frames a second, 8 for c015). WILDTRACK
(`Image_subsets/C1/00000000.png`, one annotation JSON a frame in `annotations_positions/`,
each person's box in each view, -1 where unseen) is annotated every fifth frame of 60 fps
video: its frames are numbered in their order. EPFL's multi-camera pedestrian videos
(`terrace1-c0.avi` …, 25 fps, and the ground truth `terrace1-c0.txt` …, `ID XMIN YMIN XMAX
YMAX FRAME LOST OCCLUDED GENERATED LABEL` a line from frame 0, anywhere under the root):
boxes marked lost are outside the view and left out, occluded ones kept. MMPTracking
(`images/64pm/lobby_0/rgb_00000_1.jpg`, frame 0 of camera 1, and `labels/…/rgb_00000_1.json`,
`{"ID": [XMIN, YMIN, XMAX, YMAX]}`; the archives of a scene unpacked where they lie).
"""

import argparse
import csv
import io
import json
import math
import os
import re
import sys

if __package__ in (None, ''):
    # Run as a script, this folder is on the path but the repository root is not.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402
from triplet_reid.cli import flags  # noqa: E402
from triplet_reid.storage import files, json_files  # noqa: E402
from triplet_reid.inputs import footage  # noqa: E402

MAKER = 'convert_mtmc.py'

# AI City's frame rate where the video does not say (its readme: 10 fps, c015 8).
AICITY_FPS = 10.0

# What AI City's cam_timestamp files and EPFL's ground truth are, as messages say it.
STARTS_TEXT = "AI City's cam_timestamp/SXX.txt is text, a line `CAMERA SECONDS` each"
EPFL_TEXT = ("EPFL's ground truth is text, a line `ID XMIN YMIN XMAX YMAX FRAME LOST OCCLUDED "
             "GENERATED LABEL` each")

# The most annotation files, and boxes in one, a WILDTRACK or MMPTracking
# folder may hold: WILDTRACK has 400 frames of about 20 people, an
# MMPTracking scene some 50,000 images of up to 6 cameras.
MAX_FRAMES = 1_000_000
MAX_PEOPLE = 10_000

# EPFL's ground truth: `id xmin ymin xmax ymax frame lost occluded generated
# "label"` a line, frames counted from 0 (VATIC's text export).
EPFL_FIELDS = 9

# Video containers an EPFL sequence may come in (its site gives AVI files).
EPFL_VIDEOS = ('.avi', '.mp4', '.mkv', '.mov', '.mpg', '.mpeg')

# MMPTracking's frames and labels: `rgb_FRAME_CAMERA.jpg` and `.json`, frames
# counted from 0 and cameras from 1.
MMP_FRAME = re.compile(r'rgb_(\d{1,9})_(\d{1,6})\.(jpg|png|json)')


def video_rate(path):
    """Frames a second of the video `path` as its container says, or None."""
    import av
    try:
        with av.open(path, metadata_errors='ignore') as container:
            stream = container.streams.video[0] if container.streams.video else None
            rate = stream.average_rate if stream is not None else None
            return float(rate) if rate and math.isfinite(float(rate)) and rate > 0 else None
    except (OSError, ValueError, av.error.FFmpegError):
        return None


def read_starts(path):
    """{camera: start seconds} of an AI City `cam_timestamp/SXX.txt`."""
    starts = {}
    for number, fields in footage.read_lines(path, 'the cameras\' start times', STARTS_TEXT):
        text = ' '.join(fields).split()
        if not text:
            continue
        try:
            camera, start = text[0], float(text[1])
        except (IndexError, ValueError):
            raise cli.UserError('`{}` line {}: `{}` is not `CAMERA SECONDS`.'.format(
                path, number, ' '.join(text)[:100]))
        if not math.isfinite(start) or start < 0:
            raise cli.UserError('`{}` line {}: the start {} of {} is not a time.'.format(
                path, number, start, camera))
        starts[camera] = start
    return starts


def aicity(root, scenario):
    """The cameras of the AI City scenario `scenario` (such as train/S01):
    ({camera: (video, MOT lines)}, topology)."""
    folder = os.path.join(root, scenario)
    if not os.path.isdir(folder):
        raise cli.UserError('`{}` has no scenario folder `{}`; give --scenario as it lies '
                            'under the dataset root (such as train/S01).'.format(root, scenario))
    name = os.path.basename(os.path.normpath(scenario))
    timestamps = os.path.join(root, 'cam_timestamp', name + '.txt')
    starts = read_starts(timestamps) if os.path.isfile(timestamps) else {}
    cameras, clocks = {}, {}
    for camera in sorted(os.listdir(folder)):
        video = os.path.join(folder, camera, 'vdo.avi')
        truth = os.path.join(folder, camera, 'gt', 'gt.txt')
        if not re.fullmatch(r'c\d+', camera) or not os.path.isfile(video):
            continue
        if not os.path.isfile(truth):
            raise cli.UserError('camera `{}` of `{}` has no gt/gt.txt; the test scenarios have '
                                'no ground truth.'.format(camera, folder))
        boxes = footage.read_boxes(truth, 'ground truth')
        cameras[camera] = (os.path.abspath(video), [
            footage.mot_line(frame, identity, box)
            for frame, identity, box in zip(boxes.frames, boxes.ids, boxes.boxes)])
        clocks[camera] = {'fps': video_rate(video) or AICITY_FPS,
                          'start': starts.get(camera, 0.0)}
    if not cameras:
        raise cli.UserError('`{}` holds no camera folders (c001/vdo.avi); is it an AI City MTMC '
                            'scenario?'.format(folder))
    missing = sorted(set(cameras) - set(starts))
    if starts and missing:
        raise cli.UserError('`{}` gives no start of camera `{}`.'.format(timestamps, missing[0]))
    return cameras, {'clock': 'seconds', 'cameras': clocks}


def one_place(cameras):
    """The topology of cameras that share their frame numbers and all watch
    one place: any two may see a person at once."""
    names = sorted(cameras)
    return {'clock': 'frames', 'overlaps': [[a, b] for i, a in enumerate(names)
                                             for b in names[i + 1:]]}


def wildtrack_frames(root):
    """{camera: {annotation number: image path}} of WILDTRACK's Image_subsets."""
    folder = os.path.join(root, 'Image_subsets')
    if not os.path.isdir(folder):
        raise cli.UserError('`{}` has no Image_subsets folder; is it WILDTRACK\'s '
                            'Wildtrack_dataset?'.format(root))
    cameras = {}
    for camera in sorted(os.listdir(folder)):
        if re.fullmatch(r'C\d+', camera):
            cameras[camera] = footage.frame_files(os.path.join(folder, camera))
    if not cameras:
        raise cli.UserError('`{}` holds no camera folders C1 … C7.'.format(folder))
    return cameras


def wildtrack_boxes(path, views):
    """[(view, person, (left, top, width, height))] of one annotation file."""
    people = json_files.read_json_value(path, 'pass WILDTRACK\'s annotations_positions', list)
    if len(people) > MAX_PEOPLE:
        raise cli.UserError('`{}` is not a list of people; is it a WILDTRACK annotation?'
                            .format(path))
    found = []
    for index, person in enumerate(people):
        try:
            identity = person['personID']
            for view in person['views']:
                number = view['viewNum']
                box = [view[key] for key in ('xmin', 'ymin', 'xmax', 'ymax')]
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in box + [number, identity]):
                    raise TypeError
                if box[0] < 0 or number not in range(views):
                    continue  # Not seen in this view.
                if box[2] <= box[0] or box[3] <= box[1]:
                    raise TypeError
                found.append((int(number), int(identity),
                              (box[0], box[1], box[2] - box[0], box[3] - box[1])))
        except (KeyError, TypeError):
            raise cli.UserError('`{}` person {}: not {{"personID", "views": [{{"viewNum", '
                                '"xmin", "ymin", "xmax", "ymax"}}]}} with a box of positive '
                                'size.'.format(path, index))
    return found


def wildtrack(root):
    """WILDTRACK's cameras: ({camera: (frame images by MOT frame, MOT lines)},
    topology)."""
    images = wildtrack_frames(root)
    folder = os.path.join(root, 'annotations_positions')
    if not os.path.isdir(folder):
        raise cli.UserError('`{}` has no annotations_positions folder.'.format(root))
    names = sorted(n for n in os.listdir(folder) if re.fullmatch(r'\d+\.json', n))
    if not names or len(names) > MAX_FRAMES:
        raise cli.UserError('`{}` holds {} annotation files (00000000.json, …).'.format(
            folder, len(names) or 'no'))
    cameras = sorted(images)
    order = {int(name[:-5]): position + 1 for position, name in enumerate(names)}
    lines = {camera: [] for camera in cameras}
    for name in names:
        for view, person, box in wildtrack_boxes(os.path.join(folder, name), len(cameras)):
            lines[cameras[view]].append(footage.mot_line(order[int(name[:-5])], person, box))
    frames = {}
    for camera in cameras:
        missing = sorted(set(order) - set(images[camera]))
        if missing:
            raise cli.UserError('camera {} has no image of annotated frame {}.'.format(
                camera, missing[0]))
        frames[camera] = {order[number]: images[camera][number] for number in order}
    found = {camera: (frames[camera], lines[camera]) for camera in cameras}
    return found, one_place(found)


def epfl_files(root, sequence):
    """({camera: video}, {camera: ground truth}) of `sequence` (such as
    terrace1): the files `<sequence>-c<N>.avi` and `.txt` anywhere under
    `root`, as EPFL's videos and its ground truth archive lie side by side
    or apart."""
    pattern = re.compile(re.escape(sequence) + r'-(c\d+)(\.[A-Za-z0-9]+)')
    videos, truths = {}, {}
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            match = pattern.fullmatch(name)
            extension = match and match.group(2).lower()
            found = truths if extension == '.txt' else videos if extension in EPFL_VIDEOS \
                else None
            if found is None:
                continue
            camera, path = match.group(1), os.path.join(folder, name)
            if camera in found:
                raise cli.UserError('`{}` and `{}` are both camera {} of {}; keep one.'.format(
                    found[camera], path, camera, sequence))
            found[camera] = path
    if not truths:
        raise cli.UserError('`{}` holds no ground truth of `{}` ({}-c0.txt, …); give the '
                            'sequence\'s name as its files start (such as terrace1, 6p, '
                            'passageway1).'.format(root, sequence, sequence))
    missing = sorted(set(truths) - set(videos))
    if missing:
        raise cli.UserError('`{}` holds no video of camera {} of `{}` ({}-{}.avi).'.format(
            root, missing[0], sequence, sequence, missing[0]))
    return videos, truths


def epfl_lines(path):
    """The MOT lines of the boxes of one EPFL ground-truth file, leaving out
    those marked lost (outside the view)."""
    lines, seen = [], {}
    for number, fields in footage.read_lines(path, 'the ground truth', EPFL_TEXT):
        text = ' '.join(fields).split()
        if not text:
            continue
        try:
            numbers = [float(v) for v in text[:EPFL_FIELDS]]
            if len(numbers) < EPFL_FIELDS or not all(math.isfinite(v) for v in numbers):
                raise ValueError
            identity, left, top, right, bottom, frame, lost = numbers[:7]
            if min(identity, frame) < 0 or max(identity, frame) >= footage.MAX_NUMBER or \
                    identity != int(identity) or frame != int(frame):
                raise ValueError
            if not lost and (right <= left or bottom <= top or
                             max(map(abs, (left, top, right, bottom))) > footage.MAX_PIXELS):
                raise ValueError
        except ValueError:
            raise cli.UserError('`{}` line {}: `{}` is not `ID XMIN YMIN XMAX YMAX FRAME LOST '
                                'OCCLUDED GENERATED LABEL` with a box of positive size (EPFL\'s '
                                'ground truth).'.format(path, number, ' '.join(text)[:100]))
        if lost:
            continue
        key = (int(frame), int(identity))
        if key in seen:
            raise cli.UserError('`{}` line {}: person {} is in frame {} twice (also line {}).'
                                .format(path, number, key[1], key[0], seen[key]))
        seen[key] = number
        lines.append(footage.mot_line(key[0] + 1, key[1], (left, top, right - left,
                                                             bottom - top)))
    return lines


def epfl(root, sequence):
    """The cameras of EPFL's multi-camera sequence `sequence`: ({camera:
    (video, MOT lines)}, topology)."""
    videos, truths = epfl_files(root, sequence)
    cameras = {camera: (os.path.abspath(videos[camera]), epfl_lines(truths[camera]))
               for camera in sorted(truths)}
    return cameras, one_place(cameras)


def mmptracking_names(folder, extensions, remedy):
    """{(camera, frame): path} of the `rgb_FRAME_CAMERA` files of `folder`."""
    if not os.path.isdir(folder):
        if os.path.isfile(folder + '.zip'):
            raise cli.UserError('`{}.zip` is not unpacked; unzip it where it lies ({}), then '
                                'convert again.'.format(folder, remedy))
        raise cli.UserError('`{}` is not a folder; give --scene as it lies under images/ and '
                            'labels/ (such as 63am/retail_0).'.format(folder))
    found = {}
    for name in os.listdir(folder):
        match = MMP_FRAME.fullmatch(name)
        if match and match.group(3) in extensions:
            found['c' + str(int(match.group(2))), int(match.group(1))] = os.path.join(
                folder, name)
            if len(found) > MAX_FRAMES:
                raise cli.UserError('`{}` holds more than {} frames.'.format(folder, MAX_FRAMES))
    if not found:
        raise cli.UserError('`{}` holds no rgb_FRAME_CAMERA files.'.format(folder))
    return found


def mmptracking_boxes(path):
    """{person: (left, top, width, height)} of one MMPTracking label file."""
    people = json_files.read_json_value(path, 'pass MMPTracking\'s labels', dict)
    if len(people) > MAX_PEOPLE:
        raise cli.UserError('`{}` names more than {} people.'.format(path, MAX_PEOPLE))
    boxes = {}
    for person, box in people.items():
        if not (re.fullmatch(r'\d{1,15}', person) and isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) and abs(v) <= footage.MAX_PIXELS for v in box)
                and box[2] > box[0] and box[3] > box[1]):
            raise cli.UserError('`{}` person `{}`: not `"ID": [XMIN, YMIN, XMAX, YMAX]` with a '
                                'box of positive size.'.format(path, str(person)[:40]))
        boxes[int(person)] = (box[0], box[1], box[2] - box[0], box[3] - box[1])
    return boxes


def mmptracking(root, scene):
    """The cameras of the MMPTracking scene `scene` (such as 63am/retail_0)
    of a split folder `root` (holding images/ and labels/): ({camera:
    (frame images by MOT frame, MOT lines)}, topology)."""
    images = mmptracking_names(os.path.join(root, 'images', scene), ('jpg', 'png'),
                               'images and labels alike')
    labels = mmptracking_names(os.path.join(root, 'labels', scene), ('json',),
                               'images and labels alike')
    missing = sorted(set(labels) - set(images))
    if missing:
        raise cli.UserError('camera {} has no image of labelled frame {} in `{}`.'.format(
            missing[0][0], missing[0][1], os.path.join(root, 'images', scene)))
    cameras = {}
    for (camera, frame) in sorted(images, key=lambda key: (int(key[0][1:]), key[1])):
        frames, lines = cameras.setdefault(camera, ({}, []))
        frames[frame + 1] = images[camera, frame]
        if (camera, frame) in labels:
            for person, box in sorted(mmptracking_boxes(labels[camera, frame]).items()):
                lines.append(footage.mot_line(frame + 1, person, box))
    return cameras, one_place(cameras)


def write(folder, cameras, topology):
    """Fills the output `folder` (see the module's description) with the
    `cameras` ({camera: (a video, or {MOT frame: image}, MOT lines)})."""
    table = io.StringIO()
    writer = csv.writer(table, lineterminator='\n')
    writer.writerow(('camera', 'frames', 'ground_truth'))
    for camera, (frames, lines) in cameras.items():
        os.makedirs(os.path.join(folder, camera, 'gt'))
        source = frames
        if isinstance(frames, dict):
            # Images are linked into one folder a camera, numbered as MOT numbers frames.
            source = os.path.join(camera, 'img1')
            os.makedirs(os.path.join(folder, source))
            for number, path in frames.items():
                extension = os.path.splitext(path)[1]
                os.symlink(os.path.abspath(path), os.path.join(
                    folder, source, '{:06d}{}'.format(number, extension)))
        with open(os.path.join(folder, camera, 'gt', 'gt.txt'), 'w') as f:
            f.write(''.join(lines))
        writer.writerow((camera, source, os.path.join(camera, 'gt', 'gt.txt')))
    with open(os.path.join(folder, 'cameras.csv'), 'w') as f:
        f.write(table.getvalue())
    with open(os.path.join(folder, 'topology.json'), 'w') as f:
        json.dump(topology, f, indent=1)
    return len(cameras)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='dataset', required=True, metavar='DATASET',
                                     help='aicity, wildtrack, epfl or mmptracking.')
    for name, what in (('aicity', "the AI City Challenge's MTMC (2020-2022) scenario"),
                       ('wildtrack', 'WILDTRACK'),
                       ('epfl', "a sequence of EPFL's multi-camera pedestrian videos"),
                       ('mmptracking', "a scene of MMPTracking (MMPTrack)")):
        command = commands.add_parser(name, help='Convert ' + what + '.')
        command.add_argument('--dataset_root', required=True, type=flags.readable_directory,
                             help='The extracted dataset' + (
                                 "'s split folder, which holds images/ and labels/ (such as "
                                 "MMPTracking_validation/validation)."
                                 if name == 'mmptracking' else '.'))
        command.add_argument('--output_dir', required=True,
                             help='The folder to write; an earlier one of this tool is '
                                  'replaced with --force.')
        command.add_argument('--force', action='store_true',
                             help='Replace an --output_dir that this tool wrote.')
        if name == 'aicity':
            command.add_argument('--scenario', required=True,
                                 help='The scenario folder under the root, such as train/S01.')
        if name == 'epfl':
            command.add_argument('--sequence', required=True,
                                 help='The sequence, as its files\' names start: terrace1, '
                                      'passageway1, 6p, campus7, … (terrace1-c0.avi and '
                                      'terrace1-c0.txt, anywhere under the root).')
        if name == 'mmptracking':
            command.add_argument('--scene', required=True,
                                 help='The scene folder under images/ and labels/, such as '
                                      '63am/retail_0.')
    args = parser.parse_args(argv)
    files.check_folder_output(args.output_dir, '--output_dir', MAKER, args.force)
    if args.dataset == 'aicity':
        cameras, topology = aicity(args.dataset_root, args.scenario)
    elif args.dataset == 'epfl':
        cameras, topology = epfl(args.dataset_root, args.sequence)
    elif args.dataset == 'mmptracking':
        cameras, topology = mmptracking(args.dataset_root, args.scene)
    else:
        cameras, topology = wildtrack(args.dataset_root)
    count = files.write_folder(args.output_dir, lambda folder: write(
        folder, cameras, topology), MAKER)
    print('Wrote {} cameras to {}: embed each with embed.py --frames and --detections as '
          'cameras.csv lists them, and associate them with --topology {}.'.format(
              count, args.output_dir, os.path.join(args.output_dir, 'topology.json')))
    return 0


if __name__ == '__main__':
    cli.run(main)
