#!/usr/bin/env python3
"""Generate the built-in synthetic pedestrian dataset in Market-1501 layout.

Identities differ in the colours and patterns of their clothes, hair, shoes
and bags. Each is seen by several of six cameras, each camera with its own
background texture, colour cast and brightness, and every image jitters the
position, scale, pose and lighting. Colour statistics alone are therefore
dominated by the camera, so an untrained network ranks poorly, while a trained
one learns to look at the person.

Output, under `--output` (default `data/demo`):
    bounding_box_train/, bounding_box_test/, query/ with files named
    `PPPP_cCsS_FFFFFF_BB.jpg` as in Market-1501 (gallery junk `-1_…`,
    distractors `0000_…`), and the CSVs demo_train.csv, demo_test.csv and
    demo_query.csv with rows `identity,relative/path`. Identities held out
    for validation during training are in bounding_box_val/ and query_val/,
    listed by demo_val_test.csv and demo_val_query.csv.
"""

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ''):
    # Run as a script, this folder is on the path but the repository root,
    # which holds common.py, is not.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402
from triplet_reid.cli import flags, startup  # noqa: E402
from triplet_reid.storage import files  # noqa: E402

HEIGHT, WIDTH = 128, 64
NUM_CAMERAS = 6

# Saturated and muted clothing colours; several identities share each one, so
# only combinations (and patterns) tell people apart.
PALETTE = np.array([
    [200, 30, 30], [30, 150, 40], [30, 60, 190], [220, 200, 40], [240, 240, 240],
    [25, 25, 25], [120, 120, 120], [130, 70, 30], [200, 100, 170], [40, 170, 180],
    [230, 130, 30], [90, 40, 130], [150, 170, 90], [110, 150, 220]], dtype=np.float32)
SKIN = np.array([[240, 200, 170], [200, 150, 110], [140, 90, 60], [90, 60, 40]], np.float32)
PATTERNS = ('solid', 'hstripes', 'vstripes', 'checks')


def identity_attributes(rng):
    """Everything that stays the same for one person across cameras."""
    shirt, stripe, pants = rng.choice(len(PALETTE), 3, replace=False)
    return {
        'shirt': PALETTE[shirt], 'stripe': PALETTE[stripe], 'pants': PALETTE[pants],
        'pattern': PATTERNS[rng.integers(len(PATTERNS))], 'period': int(rng.integers(4, 9)),
        'skin': SKIN[rng.integers(len(SKIN))], 'hair': PALETTE[rng.choice([5, 7, 6, 3])],
        'shoes': PALETTE[rng.choice([5, 4, 7, 2])],
        'bag': PALETTE[rng.integers(len(PALETTE))] if rng.random() < 0.5 else None,
        'long_pants': rng.random() < 0.7, 'width': rng.uniform(0.85, 1.15),
        'height': rng.uniform(0.9, 1.05),
    }


def camera_attributes(rng):
    """Everything that one camera adds to every person it sees."""
    return {
        'bg': rng.uniform(20, 235, 3).astype(np.float32),
        'bg2': rng.uniform(20, 235, 3).astype(np.float32),
        'texture': int(rng.integers(3)),
        'cast': rng.uniform(0.7, 1.3, 3).astype(np.float32),
        'brightness': rng.uniform(0.75, 1.2),
        'scale': rng.uniform(0.85, 1.05),
    }


def _background(cam, rng, yy, xx):
    t = cam['texture']
    if t == 0:  # Vertical gradient, like a wall above a floor.
        w = (yy / HEIGHT)[..., None]
    elif t == 1:  # Tiles.
        w = (((yy // 16 + xx // 16) % 2) * 0.8 + 0.1)[..., None]
    else:  # Smooth blobs.
        w = (0.5 + 0.5 * np.sin(yy / 9.0 + rng.uniform(0, 6)) *
             np.cos(xx / 7.0 + rng.uniform(0, 6)))[..., None]
    image = cam['bg'] * (1 - w) + cam['bg2'] * w
    return image + rng.normal(0, 12, image.shape)


def render(person, cam, rng, junk=False):
    """Draws one (H, W, 3) uint8 image of `person` as seen by `cam`."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    image = _background(cam, rng, yy, xx)
    scale = cam['scale'] * person['height'] * rng.uniform(0.9, 1.08)
    cx = WIDTH / 2 + rng.normal(0, 3)
    top = 6 + rng.normal(0, 3) + (1 - scale) * HEIGHT * 0.5
    if junk:
        # A badly placed detection: mostly background, the person cut off.
        cx += rng.choice([-1, 1]) * rng.uniform(22, 34)
        top += rng.uniform(-50, 40)
    size = (HEIGHT - 12) * scale
    half = 10 * person['width'] * scale

    def box(y0, y1, x0, x1):
        return (yy >= top + y0 * size) & (yy < top + y1 * size) & \
               (xx >= cx + x0 * half) & (xx < cx + x1 * half)

    head_y, head_r = top + 0.08 * size, 0.075 * size
    head = ((yy - head_y) / head_r) ** 2 + ((xx - cx) / (head_r * 0.8)) ** 2 < 1
    hair = head & (yy < head_y - head_r * 0.3)
    torso = box(0.16, 0.52, -1, 1)
    arms = box(0.17, 0.5, -1.35, -1) | box(0.17, 0.5, 1, 1.35)
    stride = rng.uniform(0, 0.45)  # Legs together or apart: a crude pose change.
    legs = box(0.52, 0.94, -0.95 - stride, -0.1) | box(0.52, 0.94, 0.1, 0.95 + stride)
    shorts = box(0.52, 0.7, -0.95 - stride, 0.95 + stride) & legs
    shoes = box(0.94, 0.99, -1.05 - stride, -0.05) | box(0.94, 0.99, 0.05, 1.05 + stride)

    shirt = np.broadcast_to(person['shirt'], image.shape).copy()
    p = person['period'] * scale
    stripes = {'hstripes': (yy // p) % 2 == 1, 'vstripes': (xx // p) % 2 == 1,
               'checks': ((yy // p + xx // p) % 2) == 1}.get(person['pattern'])
    if stripes is not None:
        shirt[stripes] = person['stripe']
    image[legs] = person['pants'] if person['long_pants'] else person['skin']
    image[shorts] = person['pants']
    image[shoes] = person['shoes']
    image[torso | arms] = shirt[torso | arms]
    image[head] = person['skin']
    image[hair] = person['hair']
    if person['bag'] is not None:
        # The bag hangs on the left or the right: seen from the front or the back.
        x0, x1 = (1.0, 1.7) if rng.random() < 0.5 else (-1.7, -1.0)
        image[box(0.3, 0.55, x0, x1)] = person['bag']

    if rng.random() < 0.15:  # An occluder: a passer-by or a pole.
        x0 = rng.integers(0, WIDTH - 12)
        image[:, x0:x0 + rng.integers(6, 16)] = rng.uniform(0, 255, 3)
    light = cam['cast'] * cam['brightness'] * rng.uniform(0.85, 1.15)
    image = image * light + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode_jpeg(image):
    import tensorflow as tf
    return tf.io.encode_jpeg(image, quality=90).numpy()


def generate(output, train_ids=150, test_ids=150, distractors=150, junk=150, val_ids=50,
             images_per_camera=(2, 4), seed=0):
    """Writes the dataset tree and its five CSVs under `output`."""
    rng = np.random.default_rng(seed)
    cameras = [camera_attributes(rng) for _ in range(NUM_CAMERAS)]
    rows = {'train': [], 'test': [], 'query': [], 'val_test': [], 'val_query': []}
    frame = [0]

    def save(folder, label, cam_index, image, bb=1):
        frame[0] += 1 + int(rng.integers(0, 25))
        name = '{}_c{}s1_{:06d}_{:02d}.jpg'.format(label, cam_index + 1, frame[0], bb)
        path = os.path.join(folder, name)
        with open(os.path.join(output, path), 'wb') as f:
            f.write(encode_jpeg(image))
        return path

    for folder in SPLIT_FOLDERS:
        os.makedirs(os.path.join(output, folder))

    def film(label, person, gallery, query=None):
        """Images of one person by 2-4 cameras into the splits `gallery` and
        (one per camera) `query`, given as (split, folder) pairs."""
        seen_by = rng.choice(NUM_CAMERAS, int(rng.integers(2, 5)), replace=False)
        for cam in seen_by:
            count = int(rng.integers(images_per_camera[0], images_per_camera[1] + 1))
            for bb in range(count):
                image = render(person, cameras[cam], rng)
                rows[gallery[0]].append((label, save(gallery[1], label, cam, image, bb)))
            if query is not None:
                image = render(person, cameras[cam], rng)
                rows[query[0]].append((label, save(query[1], label, cam, image)))

    people = [identity_attributes(rng) for _ in range(train_ids + test_ids)]
    for number, person in enumerate(people, start=1):
        label = '{:04d}'.format(number)
        if number <= train_ids:
            film(label, person, ('train', 'bounding_box_train'))
        else:
            film(label, person, ('test', 'bounding_box_test'), ('query', 'query'))

    for _ in range(distractors):
        cam = int(rng.integers(NUM_CAMERAS))
        rows['test'].append(('0000', save('bounding_box_test', '0000', cam,
                                          render(identity_attributes(rng), cameras[cam], rng))))
    for _ in range(junk):
        cam = int(rng.integers(NUM_CAMERAS))
        person = people[train_ids + int(rng.integers(test_ids))]
        rows['test'].append(('-1', save('bounding_box_test', '-1', cam,
                                        render(person, cameras[cam], rng, junk=True))))

    # Validation identities come last, so that they leave the other splits
    # exactly as they were before there were any.
    for number in range(train_ids + test_ids + 1, train_ids + test_ids + val_ids + 1):
        film('{:04d}'.format(number), identity_attributes(rng), ('val_test', 'bounding_box_val'),
             ('val_query', 'query_val'))

    for split, split_rows in rows.items():
        split_rows.sort(key=lambda row: row[1])
        with open(os.path.join(output, 'demo_{}.csv'.format(split)), 'w') as f:
            f.writelines('{},{}\n'.format(pid, path) for pid, path in split_rows)
    return {split: len(split_rows) for split, split_rows in rows.items()}


# What the set's folder holds: the folders of its splits and their CSVs (also
# what a folder written before FOLDER_MARK existed may hold).
SPLIT_FOLDERS = ('bounding_box_train', 'bounding_box_test', 'query', 'bounding_box_val',
                 'query_val')
LAYOUT = SPLIT_FOLDERS + tuple('demo_{}.csv'.format(split) for split in (
    'train', 'test', 'query', 'val_test', 'val_query'))


# Each count is bounded so that a typo cannot fill the disk: 20,000 identities
# are about 190,000 images (1.3 GB), thirteen times Market-1501's identities.
MAX_COUNT = 20000


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--output', default=os.path.join(os.path.dirname(__file__), 'demo'),
                        help='Folder to create; must not exist yet unless --force is given.')
    parser.add_argument('--train_ids', type=flags.int_between(1, MAX_COUNT), default=150,
                        help='Number of training identities.')
    parser.add_argument('--test_ids', type=flags.int_between(1, MAX_COUNT), default=150,
                        help='Number of test identities (query and gallery).')
    parser.add_argument('--distractors', type=flags.int_between(0, MAX_COUNT), default=150,
                        help='Number of distractor images (identity 0000) in the gallery.')
    parser.add_argument('--junk', type=flags.int_between(0, MAX_COUNT), default=150,
                        help='Number of junk images (identity -1) in the gallery.')
    parser.add_argument('--val_ids', type=flags.int_between(0, MAX_COUNT), default=50,
                        help='Number of validation identities (its own query and gallery).')
    parser.add_argument('--seed', type=flags.nonnegative_int, default=0,
                        help='Seed of the generator (0 or more).')
    parser.add_argument('--force', action='store_true',
                        help='Replace an existing output folder, if this tool wrote it.')
    args = parser.parse_args(argv)

    files.check_folder_output(args.output, '--output', 'make_demo.py', args.force, LAYOUT)
    # The JPEG encoder is TensorFlow's; `make demo` starts without its start-up noise.
    startup.quiet_tensorflow()
    counts = files.write_folder(args.output, lambda folder: generate(
        folder, args.train_ids, args.test_ids, args.distractors, args.junk, args.val_ids,
        seed=args.seed), 'make_demo.py')
    print('Wrote {} ({} train, {} gallery, {} query, {} validation images).'.format(
        args.output, counts['train'], counts['test'], counts['query'],
        counts['val_test'] + counts['val_query']))
    return 0


if __name__ == '__main__':
    cli.run(main)
