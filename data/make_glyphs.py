#!/usr/bin/env python3
"""Generate a character-retrieval set from real typefaces, for the 64×64 parity recipe.

A stand-in for handwritten-character hold-outs such as Omniglot: each
identity is one letter, each image one rendering of it in one of the
DejaVu and STIX typefaces that matplotlib ships (so nothing is downloaded),
at a random size, rotation and position, drawn either solid or as a thin
outline. Training and test letters come from disjoint alphabets, and the
test set is searched against itself with the `diagonal` excluder. The
105×105 images are shrunk to 72×72 or 64×64 by the recipe, so strokes one
pixel wide vanish unless resizing is antialiased: the case the demo's
128×64 pedestrians, which are only ever enlarged, cannot show.

Output, under `--output` (default `data/glyphs`): `train/` and `test/` with
one folder per letter (`u0041/` for U+0041) of PNG images, and the CSVs
glyphs_train.csv and glyphs_test.csv with rows `identity,relative/path`.

    .venv/bin/python data/make_glyphs.py --output ../scratch/glyphs
"""

import argparse
import glob
import os
import sys
import unicodedata

import numpy as np

if __package__ in (None, ''):
    # Run as a script, this folder is on the path but the repository root,
    # which holds common.py, is not.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402
from triplet_reid.cli import flags  # noqa: E402
from triplet_reid.storage import files  # noqa: E402

SIZE = 105
# Alphabets as code point ranges; only letters that enough typefaces cover are used.
ALPHABETS = {
    'latin': [range(0x41, 0x5B), range(0x61, 0x7B)],
    'cyrillic': [range(0x410, 0x450)],
    'armenian': [range(0x531, 0x557), range(0x561, 0x587)],
    'greek': [range(0x391, 0x3AA), range(0x3B1, 0x3CA)],
    'georgian': [range(0x10D0, 0x10FB)],
    'lao': [range(0xE81, 0xEAF)],
}
TRAIN_ALPHABETS = ('latin', 'cyrillic', 'armenian')
TEST_ALPHABETS = ('greek', 'georgian', 'lao')
MIN_TYPEFACES = 8
# Two letters of one split whose normalised shapes overlap this much (for
# example Latin A and Cyrillic А) are one letter: the second is left out.
SAME_SHAPE_IOU = 0.8


def typefaces():
    """matplotlib's DejaVu and STIX text faces, with the code points each covers."""
    import matplotlib
    from fontTools.ttLib import TTFont
    folder = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf')
    paths = sorted(glob.glob(os.path.join(folder, 'DejaVu*.ttf')) +
                   glob.glob(os.path.join(folder, 'STIXGeneral*.ttf')))
    return [(path, set(TTFont(path).getBestCmap())) for path in paths
            if 'Display' not in path]


def shape(font, char, size=32):
    """The letter's ink, cropped to its bounding box and scaled to size×size, as booleans."""
    from PIL import Image, ImageDraw
    image = Image.new('L', (3 * SIZE, 3 * SIZE), 0)
    ImageDraw.Draw(image).text((1.5 * SIZE, 1.5 * SIZE), char, fill=255, font=font, anchor='mm')
    box = image.getbbox()
    if box is None:
        return None
    return np.asarray(image.crop(box).resize((size, size))) > 127


def letters(alphabets, faces, reference_font):
    """The letters of `alphabets` that at least MIN_TYPEFACES faces cover, one per shape."""
    kept, shapes = [], []
    for name in alphabets:
        for block in ALPHABETS[name]:
            for code in block:
                char = chr(code)
                if not unicodedata.category(char).startswith('L'):
                    continue
                if sum(code in covered for _, covered in faces) < MIN_TYPEFACES:
                    continue
                ink = shape(reference_font, char)
                if ink is None or any((ink & other).sum() / max((ink | other).sum(), 1) >
                                      SAME_SHAPE_IOU for other in shapes):
                    continue
                kept.append(code)
                shapes.append(ink)
    return kept


def render(char, font_path, rng):
    """One 105×105 grayscale rendering: black ink on white, solid or a thin outline,
    at a random size, rotation and offset."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.truetype(font_path, int(rng.integers(46, 70)))
    image = Image.new('L', (SIZE, SIZE), 255)
    draw = ImageDraw.Draw(image)
    centre = (SIZE / 2 + rng.uniform(-8, 8), SIZE / 2 + rng.uniform(-8, 8))
    if rng.random() < 0.5:
        draw.text(centre, char, fill=0, font=font, anchor='mm')
    else:
        draw.text(centre, char, fill=255, font=font, anchor='mm', stroke_width=1,
                  stroke_fill=0)
    return image.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, fillcolor=255)


def generate(output, per_letter=20, seed=0):
    """Writes the two splits and their CSVs under `output`; returns the counts."""
    from PIL import ImageFont
    rng = np.random.default_rng(seed)
    faces = typefaces()
    reference_font = ImageFont.truetype(faces[[os.path.basename(p) for p, _ in faces].index(
        'DejaVuSans.ttf')][0], 64)
    counts = {}
    for split, alphabets in (('train', TRAIN_ALPHABETS), ('test', TEST_ALPHABETS)):
        rows = []
        for code in letters(alphabets, faces, reference_font):
            label = 'u{:04X}'.format(code)
            folder = os.path.join(split, label)
            os.makedirs(os.path.join(output, folder))
            covering = [path for path, covered in faces if code in covered]
            for number in range(per_letter):
                path = os.path.join(folder, '{:02d}.png'.format(number))
                font_path = covering[int(rng.integers(len(covering)))]
                render(chr(code), font_path, rng).save(os.path.join(output, path))
                rows.append('{},{}\n'.format(label, path))
        with open(os.path.join(output, 'glyphs_{}.csv'.format(split)), 'w') as f:
            f.writelines(rows)
        counts[split] = (len(rows) // per_letter, len(rows))
    return counts


# A bound, so that a typo cannot fill the disk: 1,000 images of each of the
# 330 generated letters are 330,000 small PNGs (about 1 GB).
MAX_PER_LETTER = 1000


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--output', default=os.path.join(os.path.dirname(__file__), 'glyphs'),
                        help='Folder to create; must not exist yet unless --force is given.')
    parser.add_argument('--per_letter', type=flags.int_between(2, MAX_PER_LETTER), default=20,
                        help='Images of each letter (Omniglot has 20).')
    parser.add_argument('--seed', type=flags.nonnegative_int, default=0,
                        help='Seed of the generator (0 or more).')
    parser.add_argument('--force', action='store_true',
                        help='Replace an existing output folder, if this tool wrote it.')
    args = parser.parse_args(argv)

    files.check_folder_output(args.output, '--output', 'make_glyphs.py', args.force,
                              ('train', 'test', 'glyphs_train.csv', 'glyphs_test.csv'))
    counts = files.write_folder(args.output,
                                lambda folder: generate(folder, args.per_letter, args.seed),
                                'make_glyphs.py')
    print('Wrote {}: {} training letters ({} images), {} test letters ({} images).'.format(
        args.output, *counts['train'], *counts['test']))
    return 0


if __name__ == '__main__':
    cli.run(main)
