#!/usr/bin/env python3
"""Render camera footage from the demo set's people, with their boxes.

Each camera's people are test identities of the demo set (`make demo`, or
data/make_demo.py) that the demo shows in that camera, those that most
cameras see first; each walks across the
camera's background for a stretch of frames, drawn with that camera's demo
images of them, growing and shrinking a little as they walk, and passing in
front of each other. It is the input of embed.py --frames, for the whole path
from frames and boxes to a gallery of tracks (docs/search.md).

Output, under `--output` (default `data/footage`): for each camera camC,
    camC/img1/000001.jpg, …   the frames,
    camC/gt/gt.txt            the boxes, MOT-Challenge `frame,id,left,top,width,height,1,1,1`,
    camC/tracks.csv           `identity,camC/trackID` for each track,
    camC/boxes.csv            `identity,camC/FRAME.jpg#ID` for each box,
    camC/video.mp4            with --video, the frames as an H.264 video,
named as embed.py --frames names the rows of camC (`--camera camC`).
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
from triplet_reid.storage import files  # noqa: E402

FRAME_HEIGHT, FRAME_WIDTH = 256, 512
DEMO_NAME = re.compile(r'(\d{4})_c(\d)s\d_\d+_\d+\.jpg')


# The demo set's folders of each split's identities.
SPLIT_FOLDERS = {'test': ('query', 'bounding_box_test'), 'train': ('bounding_box_train',)}


def demo_people(demo, identities='test'):
    """{camera: {identity: [image paths]}} of the demo set's test identities
    (query and gallery images, distractors and junk left out), or of its
    training identities."""
    people = collections.defaultdict(lambda: collections.defaultdict(list))
    for split in SPLIT_FOLDERS[identities]:
        folder = os.path.join(demo, split)
        if not os.path.isdir(folder):
            raise cli.UserError('`{}` is not the demo set: it has no `{}` folder. Make it with '
                                '`make demo` or data/make_demo.py.'.format(demo, split))
        for name in sorted(os.listdir(folder)):
            match = DEMO_NAME.fullmatch(name)
            if match and match.group(1) != '0000':
                people[int(match.group(2))][match.group(1)].append(os.path.join(folder, name))
    if not people:
        raise cli.UserError('`{}` holds no demo images (`PPPP_cCsS_…jpg`).'.format(demo))
    return people


def background(rng):
    """A camera's backdrop (H, W, 3): a colour gradient, a floor, and noise."""
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    ramp = np.linspace(0, 1, FRAME_HEIGHT)[:, None, None]
    picture = np.broadcast_to(top + (bottom - top) * ramp, (FRAME_HEIGHT, FRAME_WIDTH, 3)).copy()
    picture[int(FRAME_HEIGHT * 0.8):] *= 0.7
    return picture + rng.normal(0, 6, picture.shape)


def walks(people, frames, rng):
    """For each (identity, images) of `people`: its track of (frame, left,
    top, width, height, image), entering at one side and leaving at the
    other over a random stretch of the frames, or, for (identity, images,
    start, length), over `length` frames from frame `start`."""
    tracks = []
    for identity, images, *stretch in people:
        if stretch:
            start, length = stretch
        else:
            length = int(rng.integers(max(frames // 2, 2), frames + 1))
            start = int(rng.integers(1, frames - length + 2))
        scale = rng.uniform(0.9, 1.3)
        leftward = rng.random() < 0.5
        x0, x1 = (FRAME_WIDTH - 40, -20) if leftward else (-20, FRAME_WIDTH - 40)
        steps = []
        for step in range(length):
            size = scale * (1 + 0.08 * np.sin(step / 3))
            width, height = int(40 * size), int(80 * size)
            left = int(x0 + (x1 - x0) * step / max(length - 1, 1))
            top = int(FRAME_HEIGHT * 0.85) - height
            steps.append((start + step, left, top, width, height, images[step % len(images)]))
        tracks.append((identity, steps))
    return tracks


def render_camera(folder, camera, people, frames, rng, network=False):
    """Writes camera `camera`'s frames, boxes and CSVs into `folder`, its
    `people` walking (see `walks`); returns the numbers
    of tracks and boxes. In a `network`, gt/gt.txt gives each box its
    person's global identity (the demo's), and tracks.txt its track's number,
    as a tracker that follows people within the camera would."""
    from PIL import Image
    name = 'cam{}'.format(camera)
    os.makedirs(os.path.join(folder, name, 'img1'))
    os.makedirs(os.path.join(folder, name, 'gt'))
    backdrop, tracks = background(rng), walks(people, frames, rng)
    lines, track_rows, box_rows, global_lines = [], [], [], []
    for frame in range(1, frames + 1):
        picture = Image.fromarray(np.clip(backdrop + rng.normal(0, 3, backdrop.shape), 0,
                                          255).astype(np.uint8))
        for number, (identity, steps) in enumerate(tracks, 1):
            for at, left, top, width, height, image in steps:
                if at != frame:
                    continue
                with Image.open(image) as person:
                    picture.paste(person.convert('RGB').resize((width, height)), (left, top))
                # The box as MOT counts it, from pixel 1, clipped to the frame.
                x0, y0 = max(left, 0), max(top, 0)
                x1, y1 = min(left + width, FRAME_WIDTH), min(top + height, FRAME_HEIGHT)
                if x1 - x0 < 8:
                    continue
                lines.append('{},{},{},{},{},{},1,1,1\n'.format(frame, number, x0 + 1, y0 + 1,
                                                                 x1 - x0, y1 - y0))
                global_lines.append('{},{},{},{},{},{},1,1,1\n'.format(
                    frame, int(identity), x0 + 1, y0 + 1, x1 - x0, y1 - y0))
                box_rows.append('{},{}/{:06d}.jpg#{}\n'.format(identity, name, frame, number))
        picture.save(os.path.join(folder, name, 'img1', '{:06d}.jpg'.format(frame)), quality=92)
    track_rows = ['{},{}/track{}\n'.format(identity, name, number)
                  for number, (identity, _) in enumerate(tracks, 1)]
    outputs = ((('gt/gt.txt', global_lines), ('tracks.txt', lines)) if network else
               (('gt/gt.txt', lines),))
    for path, rows in outputs + (('tracks.csv', track_rows), ('boxes.csv', box_rows)):
        with open(os.path.join(folder, name, path), 'w') as f:
            f.writelines(rows)
    return len(track_rows), len(box_rows)


def encode_video(frames_folder, path, fps=25):
    """Encodes the numbered frames of `frames_folder` into the H.264 video `path`
    (frame 1 first), as a camera records them."""
    import av
    from PIL import Image
    names = sorted(os.listdir(frames_folder))
    with av.open(path, 'w') as container:
        stream = container.add_stream('libx264', rate=fps)
        stream.width, stream.height, stream.pix_fmt = FRAME_WIDTH, FRAME_HEIGHT, 'yuv420p'
        stream.options = {'crf': '18'}
        for name in names:
            with Image.open(os.path.join(frames_folder, name)) as image:
                frame = av.VideoFrame.from_image(image.convert('RGB'))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# A camera network (--network): cameras in a ring, each linked to the next,
# a walk from one to the next taking between these many frames (the
# topology.json it writes); each visit lasts between these many frames.
TRANSIT = (10, 40)
VISIT = (12, 30)


def network_walks(available, cameras, frames, people, rng):
    """The walks of a camera network on one clock of `frames` frames:
    ({camera: [(identity, images, start, length)]}, links [(camera, camera)]).
    The `people` whom most `cameras` saw walk from camera to camera along
    the ring, taking `TRANSIT` frames between two, into each camera that has
    their images, and sometimes come back to the camera they left."""
    links = list(zip(cameras, cameras[1:] + cameras[:1])) if len(cameras) > 2 else (
        [tuple(cameras)] if len(cameras) == 2 else [])
    neighbours = collections.defaultdict(set)
    for a, b in links:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen = collections.Counter(identity for camera in cameras for identity in available[camera])
    walkers = sorted(seen, key=lambda identity: (-seen[identity], identity))[:people]
    visits = collections.defaultdict(list)
    for identity in walkers:
        here = [c for c in cameras if identity in available[c]]
        camera = here[int(rng.integers(len(here)))]
        start = int(rng.integers(1, max(frames // 3, 2)))
        while True:
            length = int(rng.integers(*VISIT))
            if start + length > frames:
                break
            visits[camera].append((identity, available[camera][identity], start, length))
            choices = sorted(c for c in neighbours[camera] if identity in available[c])
            if rng.random() < 0.2:
                choices = [camera]  # Back into the camera just left.
            if not choices:
                break
            camera = choices[int(rng.integers(len(choices)))]
            start += length + int(rng.integers(TRANSIT[0], TRANSIT[1] + 1))
    return visits, links


def generate_network(folder, demo, cameras, frames, people, seed, video=False):
    """Renders a camera network (see `network_walks`) into `folder`, with
    its topology.json; returns the numbers of tracks and boxes."""
    import json
    rng = np.random.default_rng(seed)
    available = demo_people(demo, 'test')
    rendered = sorted(available)[:cameras]
    visits, links = network_walks(available, rendered, frames, people, rng)
    counts = [0, 0]
    for camera in rendered:
        tracks, boxes = render_camera(folder, camera, visits.get(camera, []), frames, rng,
                                      network=True)
        if video:
            name = os.path.join(folder, 'cam{}'.format(camera))
            encode_video(os.path.join(name, 'img1'), os.path.join(name, 'video.mp4'))
        counts = [counts[0] + tracks, counts[1] + boxes]
    with open(os.path.join(folder, 'topology.json'), 'w') as f:
        # From a track's last frame to the next one's first: the frames
        # between, plus one.
        json.dump({'clock': 'frames', 'links': [
            {'cameras': ['cam{}'.format(a), 'cam{}'.format(b)], 'min': TRANSIT[0] + 1,
             'max': TRANSIT[1] + 1} for a, b in links]}, f, indent=1)
    return counts


def generate(folder, demo, cameras, frames, people, seed, identities='test', video=False,
             offset=0):
    """Renders the footage of `cameras` cameras into `folder`, of the demo's
    `identities` ('test' or 'train'), the people `offset` to `offset + people`
    of each camera's list; returns the numbers of tracks and boxes."""
    rng = np.random.default_rng(seed)
    available = demo_people(demo, identities)
    rendered = sorted(available)[:cameras]
    # The people whom most of the rendered cameras see walk first, so that
    # most tracks have their person in another camera, as in a camera network.
    seen = collections.Counter(identity for camera in rendered for identity in available[camera])
    counts = [0, 0]
    for camera in rendered:
        chosen = sorted(available[camera].items(),
                        key=lambda item: (-seen[item[0]], rng.random()))[offset:offset + people]
        if not chosen:
            continue
        tracks, boxes = render_camera(folder, camera, sorted(chosen), frames, rng)
        if video:
            name = os.path.join(folder, 'cam{}'.format(camera))
            encode_video(os.path.join(name, 'img1'), os.path.join(name, 'video.mp4'))
        counts = [counts[0] + tracks, counts[1] + boxes]
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--demo', default=os.path.join(os.path.dirname(__file__), 'demo'),
                        help='The demo set whose people walk (data/demo, as `make demo` '
                             'makes it).')
    parser.add_argument('--output', default=os.path.join(os.path.dirname(__file__), 'footage'),
                        help='Folder to create; must not exist yet unless --force is given.')
    parser.add_argument('--cameras', type=flags.int_between(1, 6), default=6,
                        help='Cameras to render (the demo set has six).')
    parser.add_argument('--frames', type=flags.int_between(2, 10000), default=40,
                        help='Frames per camera.')
    parser.add_argument('--people', type=flags.int_between(1, 200), default=10,
                        help='People per camera (at most the demo\'s in that camera).')
    parser.add_argument('--seed', type=flags.nonnegative_int, default=0,
                        help='Seed of the generator (0 or more).')
    parser.add_argument('--video', action='store_true',
                        help='Also encode each camera\'s frames as camC/video.mp4 (H.264), which '
                             'embed.py --frames reads in place of the img1 folder.')
    parser.add_argument('--network', action='store_true',
                        help='Render a camera network on one clock: the --people whom most '
                             'cameras saw walk from camera to camera along a ring (topology.json), '
                             'and gt/gt.txt holds each box\'s global identity, tracks.txt its '
                             'track within the camera (see docs/tracking.md).')
    parser.add_argument('--force', action='store_true',
                        help='Replace an existing output folder, if this tool wrote it.')
    args = parser.parse_args(argv)

    files.check_folder_output(args.output, '--output', 'make_footage.py', args.force)
    demo_people(args.demo)
    make = generate_network if args.network else generate
    tracks, boxes = files.write_folder(args.output, lambda folder: make(
        folder, args.demo, args.cameras, args.frames, args.people, args.seed, video=args.video),
        'make_footage.py')
    print('Wrote {} ({} tracks, {} boxes).'.format(args.output, tracks, boxes))
    return 0


if __name__ == '__main__':
    cli.run(main)
