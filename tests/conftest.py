"""Shared fixtures: the repository on sys.path and a tiny generated dataset."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def write_image(path, array):
    """Writes a uint8 (H, W, C) array as JPEG or PNG, chosen by the file name."""
    import tensorflow as tf
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith('.png'):
        data = tf.io.encode_png(array).numpy()
    else:
        data = tf.io.encode_jpeg(array, quality=95).numpy()
    with open(path, 'wb') as f:
        f.write(data)


def make_dataset(root, num_ids=8, images_per_id=5, size=(32, 16), seed=0, single_image_ids=0,
                 folder='train'):
    """A dataset of flat-coloured identities with noise, learnable in a few steps.

    Identity i is a two-colour figure; the background noise differs per image.
    The last `single_image_ids` identities have a single image each. Image j
    of an identity is seen by camera j % 3 + 1, named as in Market-1501.

    Returns:
        The CSV path `root/<folder>.csv`; images live under `root/<folder>`.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_ids):
        pid = '{:04d}'.format(i + 1)
        top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        count = 1 if i >= num_ids - single_image_ids else images_per_id
        for j in range(count):
            image = rng.uniform(0, 255, size + (3,))
            h = size[0]
            image[h // 8:h // 2, 3:-3] = top + rng.normal(0, 20, 3)
            image[h // 2:h - h // 8, 3:-3] = bottom + rng.normal(0, 20, 3)
            fid = '{}/{}_c{}s1_{:06d}_00.jpg'.format(folder, pid, j % 3 + 1, j)
            write_image(os.path.join(root, fid), np.clip(image, 0, 255).astype(np.uint8))
            rows.append('{},{}\n'.format(pid, fid))
    csv_path = os.path.join(root, folder + '.csv')
    with open(csv_path, 'w') as f:
        f.writelines(rows)
    return csv_path


@pytest.fixture
def tiny_dataset(tmp_path):
    """(csv path, image root) of an 8-identity, 5-images-each 32×16 dataset."""
    root = str(tmp_path / 'data')
    return make_dataset(root), root
