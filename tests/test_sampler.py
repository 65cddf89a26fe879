"""Image decoding and the P×K sampler, eagerly and inside `Dataset.map`."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid import common
from triplet_reid.inputs.images import Preprocessing, decode, fid_to_image, resize, resize_by_matmul
from triplet_reid.inputs import sampler
from conftest import make_dataset, write_file, write_image


# Image decoding.

@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    made = {
        'rgb.jpg': rng.integers(0, 255, (20, 10, 3), dtype=np.uint8),
        'rgb.png': rng.integers(0, 255, (20, 10, 3), dtype=np.uint8),
        'gray.png': rng.integers(0, 255, (20, 10, 1), dtype=np.uint8),
        'gray.jpg': rng.integers(0, 255, (20, 10, 1), dtype=np.uint8),
        'rgba.png': rng.integers(0, 255, (20, 10, 4), dtype=np.uint8),
        'png_named.jpg': rng.integers(0, 255, (20, 10, 3), dtype=np.uint8),
    }
    for name, array in made.items():
        if name == 'png_named.jpg':
            with open(tmp_path / name, 'wb') as f:
                f.write(tf.io.encode_png(array).numpy())
        else:
            write_image(str(tmp_path / name), array)
    return str(tmp_path), made


def test_a_webp_image_named_jpg_is_decoded_by_its_content(tmp_path):
    """Accepted, as docs/datasets.md says: images are decoded by content, not by name."""
    from PIL import Image
    pixels = np.zeros((8, 4, 3), np.uint8)
    pixels[:, :2] = (200, 30, 30)
    Image.fromarray(pixels).save(tmp_path / 'w.jpg', format='WEBP', lossless=True)
    eager = fid_to_image(tf.constant('w.jpg'), str(tmp_path), (8, 4)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors('w.jpg').map(
        lambda fid: fid_to_image(fid, str(tmp_path), (8, 4))))).numpy()
    np.testing.assert_array_equal(eager, pixels.astype(np.float32))
    np.testing.assert_array_equal(mapped, eager)


def test_fid_to_image_eager_and_in_dataset_map(images):
    root, made = images
    names = sorted(made)
    eager = [fid_to_image(tf.constant(n), root, (8, 4)).numpy() for n in names]
    mapped = list(tf.data.Dataset.from_tensor_slices(names).map(
        lambda f: fid_to_image(f, root, (8, 4))).as_numpy_iterator())
    for name, a, b in zip(names, eager, mapped):
        assert a.shape == (8, 4, 3) and a.dtype == np.float32, name
        np.testing.assert_array_equal(a, b)
        assert 0 <= a.min() and a.max() <= 255
    # Lossless files keep their exact colours, grayscale is replicated, alpha dropped.
    full = {n: fid_to_image(tf.constant(n), root, (20, 10)).numpy() for n in names}
    np.testing.assert_allclose(full['rgb.png'], made['rgb.png'], atol=1e-3)
    np.testing.assert_allclose(full['png_named.jpg'], made['png_named.jpg'], atol=1e-3)
    np.testing.assert_allclose(full['gray.png'], np.repeat(made['gray.png'], 3, -1), atol=1e-3)
    np.testing.assert_allclose(full['rgba.png'], made['rgba.png'][..., :3], atol=1e-3)


# The P×K sampler.

def take(dataset, n):
    return [tuple(t.numpy() for t in batch) for batch in dataset.take(n)]


def pk_batches(csv_path, root, **kwargs):
    pids, fids = common.load_dataset(csv_path, root)
    options = dict(batch_p=3, batch_k=4, net_input_size=(16, 8), seed=7, loading_threads=2)
    options.update(kwargs)
    preprocessing = Preprocessing(*(options.pop(key, default) for key, default in (
        ('net_input_size', None), ('pre_crop_size', None), ('antialias', True),
        ('accurate_jpeg', True))))
    return sampler.pk_dataset(pids, fids, root, preprocessing, **options), pids, fids


def test_pk_batches_structure(tmp_path):
    root = str(tmp_path)
    csv_path = make_dataset(root, num_ids=7, images_per_id=6, size=(16, 8), single_image_ids=1)
    dataset, pids, fids = pk_batches(csv_path, root, batch_p=3, batch_k=4)
    pid_of = dict(zip(fids, pids))
    batches = take(dataset, 12)
    epoch_pids = []
    for images, batch_fids, batch_pids, labels in batches:
        assert images.shape == (12, 16, 8, 3) and images.dtype == np.float32
        groups = batch_pids.reshape(3, 4)
        assert (groups == groups[:, :1]).all(), 'each group of K shares one identity'
        assert len(set(groups[:, 0])) == 3, 'P different identities'
        for fid, pid, label in zip(batch_fids, batch_pids, labels):
            assert pid_of[fid.decode()] == pid.decode()
            assert np.unique(pids)[label] == pid.decode()
        for group_fids in batch_fids.reshape(3, 4):
            if pid_of[group_fids[0].decode()] != '0007':
                assert len(set(group_fids)) == 4, 'without replacement when >= K images'
        epoch_pids.extend(groups[:, 0])
    # 7 identities, P=3: each epoch uses 6 distinct identities, then reshuffles.
    for start in range(0, len(epoch_pids), 6):
        assert len(set(epoch_pids[start:start + 6])) == 6


def test_padded_sampling_is_balanced(tmp_path):
    root = str(tmp_path)
    rows = []
    for pid in ('0001', '0002'):
        for j in range(3):
            fid = '{}_{}.png'.format(pid, j)
            write_image(os.path.join(root, fid), np.full((4, 4, 3), 10 * j, np.uint8))
            rows.append('{},{}\n'.format(pid, fid))
    csv_path = write_file(os.path.join(root, 'x.csv'), ''.join(rows))
    dataset, _, _ = pk_batches(csv_path, root, batch_p=2, batch_k=4, net_input_size=(4, 4))
    total = collections.Counter()
    for _, batch_fids, _, _ in take(dataset, 150):
        for group in batch_fids.reshape(2, 4):
            # 4 draws from 3 images padded to 6 entries: no image more than twice.
            assert max(collections.Counter(group).values()) <= 2
            total.update(group)
    # Every image equally likely: 150 batches * 4 draws / 3 images = 200 each.
    assert len(total) == 6 and all(150 < n < 250 for n in total.values())


def test_same_seed_same_batches_and_exact_resume(tiny_dataset):
    csv_path, root = tiny_dataset
    options = dict(flip_augment=True, crop_augment=True, pre_crop_size=(20, 10))
    first = take(pk_batches(csv_path, root, **options)[0], 6)
    again = take(pk_batches(csv_path, root, loading_threads=1, **options)[0], 6)
    other = take(pk_batches(csv_path, root, seed=8, **options)[0], 6)
    resumed = take(pk_batches(csv_path, root, start_step=4, **options)[0], 2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert any((a[1] != b[1]).any() for a, b in zip(first, other))
    for a, b in zip(first[4:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_augmentation_flips_and_crops(tmp_path):
    root = str(tmp_path)
    rows = []
    gradient = np.tile(np.arange(0, 240, 30, dtype=np.uint8)[None, :, None], (8, 1, 3))
    for pid in ('0001', '0002'):
        for j in range(2):
            fid = '{}_{}.png'.format(pid, j)
            write_image(os.path.join(root, fid), gradient)
            rows.append('{},{}\n'.format(pid, fid))
    csv_path = write_file(os.path.join(root, 'x.csv'), ''.join(rows))
    plain = take(pk_batches(csv_path, root, batch_p=2, batch_k=2, net_input_size=(8, 8))[0], 1)
    flipped = take(pk_batches(csv_path, root, batch_p=2, batch_k=2, net_input_size=(8, 8),
                              flip_augment=True)[0], 10)
    cropped = take(pk_batches(csv_path, root, batch_p=2, batch_k=2, net_input_size=(6, 6),
                              pre_crop_size=(8, 8), crop_augment=True)[0], 1)
    np.testing.assert_allclose(plain[0][0][0], gradient, atol=1e-3)
    images = np.concatenate([b[0] for b in flipped])
    is_flipped = [np.allclose(im, gradient[:, ::-1]) for im in images]
    assert any(is_flipped) and not all(is_flipped)
    assert all(np.allclose(im, gradient) for im, f in zip(images, is_flipped) if not f)
    assert cropped[0][0].shape == (4, 6, 6, 3)


def test_too_few_identities(tiny_dataset):
    csv_path, root = tiny_dataset
    with pytest.raises(cli.UserError,
                       match='8 identities but --batch_p is 9; lower --batch_p to at most 8'):
        pk_batches(csv_path, root, batch_p=9)


def test_shards_and_splits_reassemble_the_global_batches(tiny_dataset):
    csv_path, root = tiny_dataset
    options = dict(batch_p=4, batch_k=2, flip_augment=True, crop_augment=True,
                   pre_crop_size=(20, 10), start_step=3)
    full = take(pk_batches(csv_path, root, **options)[0], 3)
    shards = [take(pk_batches(csv_path, root, num_shards=2, shard_index=i, **options)[0], 3)
              for i in range(2)]
    pieces = take(pk_batches(csv_path, root, splits=2, **options)[0], 6)
    for step in range(3):
        for part in range(4):  # images, fids, pids, labels
            np.testing.assert_array_equal(
                full[step][part], np.concatenate([shards[0][step][part], shards[1][step][part]]))
            np.testing.assert_array_equal(
                full[step][part], np.concatenate([pieces[2 * step][part],
                                                  pieces[2 * step + 1][part]]))
    with pytest.raises(cli.UserError, match='cannot be split evenly into 3 replicas'):
        pk_batches(csv_path, root, batch_p=4, num_shards=3)


@pytest.mark.parametrize('size, output', [((105, 105), (64, 64)), ((300, 150), (72, 64)),
                                          ((100, 37), (128, 64)), ((5, 3), (8, 4))])
def test_resize_by_matmul_equals_antialiased_resize(size, output):
    images = np.random.default_rng(0).uniform(0, 255, (2,) + size + (3,)).astype(np.float32)
    expected = tf.image.resize(images, output, antialias=True).numpy()
    np.testing.assert_allclose(resize_by_matmul(images, output), expected, atol=0.01)
    traced = tf.function(lambda x: resize_by_matmul(x, output), input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_allclose(traced(images), expected, atol=0.01)
    # Shrinking without antialiasing skips pixels; with it, a one-pixel line survives.
    if size[0] > output[0]:
        lines = np.zeros((1,) + size + (3,), np.float32)
        lines[:, ::4] = 255
        assert np.ptp(resize(lines, output, antialias=True)) < \
            np.ptp(resize(lines, output, antialias=False))


def test_accurate_jpeg_decoding_equals_pil(tmp_path):
    from PIL import Image
    path = str(tmp_path / 'a.jpg')
    rng = np.random.default_rng(2)
    Image.fromarray(rng.uniform(0, 255, (40, 24, 3)).astype(np.uint8)).save(path, quality=75)
    pil = np.asarray(Image.open(path).convert('RGB'))
    contents = tf.io.read_file(path)
    np.testing.assert_array_equal(decode(contents).numpy(), pil)
    inside = next(iter(tf.data.Dataset.from_tensors(contents).map(decode)))
    np.testing.assert_array_equal(inside.numpy(), pil)
    assert np.abs(decode(contents, accurate_jpeg=False).numpy() - pil.astype(int)).max() > 0
    # Other formats decode as before.
    png = str(tmp_path / 'b.png')
    Image.fromarray(pil).save(png)
    np.testing.assert_array_equal(decode(tf.io.read_file(png)).numpy(), pil)


# Random erasing and pad-and-crop.

def erased_boxes(images, fill):
    """Per image of a zero batch (N, H, W, 3): None, or the erased box's
    (area share, height / width) when exactly one filled rectangle is there."""
    boxes = []
    for image in images:
        changed = np.any(np.abs(image - fill) < 1e-3, axis=-1) if fill is not None else \
            np.any(image != 0, axis=-1)
        if not changed.any():
            boxes.append(None)
            continue
        rows, cols = np.where(changed.any(1))[0], np.where(changed.any(0))[0]
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert changed.sum() == h * w, 'not one rectangle'
        boxes.append((h * w / changed.size, h / w, h, w))
    return boxes


def check_erasing_statistics(images, probability, fill):
    boxes = erased_boxes(images, fill)
    height, width = images.shape[1:3]
    erased = [b for b in boxes if b is not None]
    share = len(erased) / len(boxes)
    # Binomial standard deviation at these counts is below 0.025.
    assert abs(share - probability) < 0.08, share
    pixels = height * width
    for area, aspect, h, w in erased:
        # h and w are the rounded √(A·r) and √(A/r) of the drawn area A and
        # aspect r, so A and r lie within half a pixel's reach of them.
        assert (h - 0.5) * (w - 0.5) <= 0.4 * pixels and (h + 0.5) * (w + 0.5) >= 0.02 * pixels
        assert (h - 0.5) / (w + 0.5) <= 1 / 0.3 and (h + 0.5) / (w - 0.5) >= 0.3
        assert h < height and w < width
    areas = np.array([b[0] for b in erased])
    # Uniform in [0.02, 0.4]: the mean is near 0.21 and both ends are reached.
    assert 0.17 < areas.mean() < 0.25 and areas.min() < 0.06 and areas.max() > 0.33


@pytest.mark.parametrize('probability', [0.0, 0.5, 1.0])
def test_random_erasing_statistics_eagerly_and_in_dataset_map(probability):
    image = tf.zeros((64, 32, 3))
    seeds = [sampler.stream_seed(3, 5, i) for i in range(300)]
    eager = np.stack([sampler.random_erasing(image, probability, s).numpy() for s in seeds])
    mapped = np.stack(list(tf.data.Dataset.range(300).map(
        lambda i: sampler.random_erasing(image, probability, sampler.stream_seed(3, 5, i)))
        .as_numpy_iterator()))
    np.testing.assert_array_equal(eager, mapped)
    if probability == 0:
        assert not eager.any()
        return
    mean = np.array(sampler.IMAGENET_MEAN, np.float32)
    assert all(b is None or np.allclose(im[np.any(im != 0, -1)], mean)
               for im, b in zip(eager, erased_boxes(eager, None)))
    check_erasing_statistics(eager, probability, None)


def test_random_erasing_with_noise_and_where_nothing_fits():
    noise = sampler.random_erasing(tf.fill((64, 32, 3), -1.0), 1.0,
                                   sampler.stream_seed(0, 5, 1), 'noise').numpy()
    inside = noise[noise[..., 0] != -1]
    assert inside.size and inside.min() >= 0 and inside.max() <= 255 and inside.std() > 30
    # A 1×1 image has room for no rectangle smaller than itself.
    tiny = tf.zeros((1, 1, 3))
    assert not sampler.random_erasing(tiny, 1.0, sampler.stream_seed(0, 5, 0)).numpy().any()


def test_pk_dataset_erases_and_pad_crops_reproducibly(tiny_dataset):
    csv_path, root = tiny_dataset
    options = dict(batch_p=4, batch_k=4, net_input_size=(32, 16), pad_crop=4, erasing=0.5)
    first = take(pk_batches(csv_path, root, **options)[0], 3)
    again = take(pk_batches(csv_path, root, **options)[0], 3)
    resumed = take(pk_batches(csv_path, root, start_step=1, **options)[0], 2)
    plain = take(pk_batches(csv_path, root, batch_p=4, batch_k=4, net_input_size=(32, 16))[0], 3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(first[1:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
    images, originals = np.concatenate([b[0] for b in first]), np.concatenate(
        [b[0] for b in plain])
    assert images.shape == originals.shape == (48, 32, 16, 3)
    # Padding shows as black rows or columns at the border of some crops.
    black_border = [np.all(im[0] == 0) or np.all(im[-1] == 0) or np.all(im[:, 0] == 0) or
                    np.all(im[:, -1] == 0) for im in images]
    assert any(black_border)
    mean = np.array(sampler.IMAGENET_MEAN, np.float32)
    erased = [np.any(np.all(np.abs(im - mean) < 1e-3, -1)) for im in images]
    assert 0.25 < np.mean(erased) < 0.75


def test_pad_and_crop_keeps_the_picture():
    image = tf.reshape(tf.range(4 * 3 * 3, dtype=tf.float32) + 1, (4, 3, 3))
    crops = [sampler.pad_and_crop(image, 1, (4, 3), sampler.stream_seed(0, 6, i)).numpy()
             for i in range(40)]
    padded = np.pad(image.numpy(), ((1, 1), (1, 1), (0, 0)))
    windows = {(y, x) for y in range(3) for x in range(3)}
    found = set()
    for crop in crops:
        match = [(y, x) for y, x in windows if np.array_equal(padded[y:y + 4, x:x + 3], crop)]
        assert len(match) == 1
        found |= set(match)
    assert len(found) > 4
