"""Images into tensors: decoding, the P×K training sampler, test-time augmentation.

Every function here works eagerly and inside `Dataset.map`.
"""

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from common import UserError


# Reading images
###

def image_path(image_root, fid):
    """The path of the image `fid` (a string tensor) under `image_root`."""
    return tf.strings.join([image_root, fid], separator='/')


def resize(images, size, antialias):
    """Bilinear resizing of (H, W, C) or (B, H, W, C) float images to `size` (height, width).

    With `antialias`, downscaling widens the bilinear (triangle) filter to the
    scale, as PIL and OpenCV's INTER_AREA do, so that thin structures are
    averaged instead of skipped; upscaling is plain bilinear either way.
    Experiments store the choice (train.py's --antialias), so that training,
    embedding, validation and export resize alike.
    """
    return tf.image.resize(images, size, antialias=antialias)


def triangle_weights(input_size, output_size):
    """The (output_size, input_size) matrix of antialiased bilinear resizing along one axis.

    Row o holds the triangle filter centred on output pixel o's position in the
    input, widened by the downscaling factor and normalised to sum to one:
    exactly the weights of `tf.image.resize(..., antialias=True)` (TensorFlow's
    ScaleAndTranslate with the triangle kernel).

    Args:
        input_size: A scalar int tensor (may be dynamic).
        output_size (int): The static output size.
    """
    inverse_scale = tf.cast(input_size, tf.float32) / output_size
    width = tf.maximum(inverse_scale, 1.0)
    centres = (tf.range(output_size, dtype=tf.float32) + 0.5) * inverse_scale
    positions = tf.range(tf.cast(input_size, tf.float32), dtype=tf.float32) + 0.5
    weights = tf.maximum(0.0, 1.0 - tf.abs(positions[None, :] - centres[:, None]) / width)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def resize_by_matmul(images, size):
    """`resize(images, size, antialias=True)` for (B, H, W, C) images, as two matrix products.

    Exporters such as tf2onnx cannot convert the ScaleAndTranslate op behind
    TensorFlow's antialiased resizing; matrix products they can. export.py
    uses this so that its SavedModel and ONNX model resize alike; the results
    equal `resize`'s up to float rounding.
    """
    shape = tf.shape(images)
    rows = triangle_weights(shape[1], size[0])
    columns = triangle_weights(shape[2], size[1])
    return tf.einsum('oh,bhwc,pw->bopc', rows, images, columns)


def decode(contents, accurate_jpeg=True):
    """Decodes an image file's contents (JPEG, PNG, BMP or GIF) to (H, W, 3) uint8 RGB.

    With `accurate_jpeg`, JPEGs are decoded with the accurate integer DCT, as
    PIL and OpenCV do; TensorFlow's default, the fast DCT, is off by about one
    grey level per pixel. Experiments store the choice (train.py's
    --accurate_jpeg).
    """
    if not accurate_jpeg:
        return tf.io.decode_image(contents, channels=3, expand_animations=False)
    return tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method='INTEGER_ACCURATE'),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False))


def load_image(path, image_size, antialias=True, accurate_jpeg=True):
    """Decodes the image file `path` (a string or scalar string tensor) like `fid_to_image`."""
    decoded = decode(tf.io.read_file(path), accurate_jpeg)
    resized = resize(tf.cast(decoded, tf.float32), image_size, antialias)
    return tf.ensure_shape(resized, (image_size[0], image_size[1], 3))


def fid_to_image(fid, image_root, image_size, antialias=True, accurate_jpeg=True):
    """Loads an image file and resizes it, eagerly or inside `Dataset.map`.

    JPEG, PNG, BMP and GIF files are decoded by their content, not their name;
    grayscale and RGBA images become 3-channel RGB.

    Args:
        fid: A scalar string tensor, the path relative to `image_root`.
        image_root (str): The folder the path is relative to.
        image_size (tuple): The (height, width) to resize to.
        antialias (bool): See `resize`.
        accurate_jpeg (bool): See `decode`.

    Returns:
        A float32 tensor of shape (height, width, 3) with values in [0, 255].
    """
    return load_image(image_path(image_root, fid), image_size, antialias, accurate_jpeg)


def find_undecodable_images(fids, image_root, loading_threads=8):
    """Decodes every image once and returns the fids that fail.

    Catches corrupt, truncated and non-image files before training or
    embedding starts, where a failure could still name the file. Decoding
    without resizing is fast: about a second for Market-1501 on two cores.

    Returns:
        A list of the fids that cannot be decoded, in dataset order.
    """
    def decode(index, fid):
        contents = tf.io.read_file(image_path(image_root, fid))
        return index, tf.shape(tf.io.decode_image(contents, channels=3,
                                                  expand_animations=False))
    decoded = (tf.data.Dataset.from_tensor_slices(fids).enumerate()
               .map(decode, num_parallel_calls=loading_threads).ignore_errors())
    good = np.zeros(len(fids), bool)
    for index, _ in decoded.as_numpy_iterator():
        good[index] = True
    return list(np.asarray(fids)[~good])


# Images with more pixels than this are refused before they are decoded: a
# small file can hold a huge single-colour picture (20000×20000 PNGs take 1.2
# MB on disk and 13 GB in training). Person crops have a few thousand pixels.
MAX_IMAGE_PIXELS = 25_000_000


def header_pixels(path):
    """The number of pixels an image file declares in its header, read
    without decoding it (PIL reads only the header); infinity when PIL itself
    refuses the size as a decompression bomb; None when the header is
    unreadable, which the decoding check then reports."""
    from PIL import Image
    try:
        with tf.io.gfile.GFile(path, 'rb') as f:
            width, height = Image.open(f).size
        return width * height
    except Image.DecompressionBombError:
        # PIL refuses headers above twice its own limit before it tells the
        # size; such an image is far over any limit of ours, and TensorFlow
        # would decode it all the same.
        return math.inf
    except Exception:  # Any failure here is a damaged file, reported by decoding it.
        return None


def find_oversized_images(fids, image_root, max_pixels, loading_threads=8):
    """The fids whose headers declare more than `max_pixels` pixels, in dataset order."""
    paths = ['{}/{}'.format(image_root, fid) for fid in np.asarray(fids).astype(str)]
    with ThreadPoolExecutor(loading_threads) as pool:
        pixels = list(pool.map(header_pixels, paths))
    return [fid for fid, count in zip(fids, pixels) if count is not None and count > max_pixels]


def decodable_mask(fids, image_root, skip, loading_threads=8, log=None,
                   remedy='or pass --skip_corrupt_images to train without them',
                   max_pixels=MAX_IMAGE_PIXELS):
    """Refuses undecodable images and images of more than `max_pixels`
    pixels, or, when `skip`, leaves them out with a warning.

    `remedy` ends the error message, after "Replace or remove them, ".

    Returns:
        A boolean mask over `fids`: True for the images to use.

    Raises:
        UserError naming the first few such files, unless `skip`.
    """
    log = log or logging.getLogger(__name__)
    keep = np.ones(len(fids), bool)
    huge = find_oversized_images(fids, image_root, max_pixels, loading_threads)
    if huge:
        examples = ', '.join('`{}`'.format(f) for f in huge[:3])
        if not skip:
            raise UserError('{} of the {} images under `{}` have more than {} pixels, for '
                            'example {}; decoding them would take a lot of memory. Shrink or '
                            'remove them, raise the limit with --max_image_pixels, {}.'.format(
                                len(huge), len(fids), image_root, max_pixels, examples,
                                remedy))
        log.warning('Skipping %d of the %d images with more than %d pixels, for example %s.',
                    len(huge), len(fids), max_pixels, examples)
        keep &= ~np.isin(fids, huge)
    bad = find_undecodable_images(np.asarray(fids)[keep], image_root, loading_threads)
    if not bad:
        return keep
    keep &= ~np.isin(fids, bad)
    examples = ', '.join('`{}`'.format(f) for f in bad[:3])
    if not skip:
        raise UserError('{} of the {} images under `{}` cannot be decoded (corrupt, truncated '
                        'or not an image), for example {}. Replace or remove them, {}.'.format(
                            len(bad), len(fids), image_root, examples, remedy))
    log.warning('Skipping %d of the %d images that cannot be decoded, for example %s.',
                len(bad), len(fids), examples)
    return keep


# The P×K sampler
###

def check_enough_identities(pids, batch_p, source='the training set'):
    """Refuses a dataset with fewer identities than a P×K batch needs."""
    num_pids = len(np.unique(pids))
    if num_pids < batch_p:
        raise UserError('{} has {} identities but --batch_p is {}; lower --batch_p to at most '
                        '{}.'.format(source, num_pids, batch_p, num_pids))


def stream_seed(seed, stream, index):
    """A stateless-RNG seed of shape (2,) for element `index` of the random stream `stream`.

    The streams are numbered once for the whole project, so that no two random
    choices share one: 0 the epochs' identity order, 1 the K images of an
    identity, 2 flips, 3 crops, 5 random erasing, 6 pad-and-crop (all here),
    4 the draws of a loss at a training step (train.py).
    """
    base = tf.stack([tf.constant(seed, tf.int64), tf.constant(stream, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


# The ImageNet mean pixel in [0, 255], which random erasing fills with.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
ERASING_FILLS = ('mean', 'noise')


def random_erasing(image, probability, seed, fill='mean', area=(0.02, 0.4),
                   aspect=(0.3, 1 / 0.3), attempts=100):
    """Random erasing (Zhong et al., AAAI 2020), as a stateless function of `seed`.

    With `probability`, one rectangle whose area is a uniform share in `area`
    of the image's and whose aspect (height / width) is uniform in `aspect` is
    filled with the ImageNet mean or with uniform noise in [0, 255]. As in the
    authors' code, up to `attempts` sizes are drawn and the first that fits
    inside the image is used; the image stays as it is when none fits.

    Args:
        image: (H, W, C) float32 image with values in [0, 255].
        probability (float): In [0, 1].
        seed: (2,) stateless seed.
        fill (str): One of `ERASING_FILLS`.

    Returns:
        The (H, W, C) image.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    seeds = tf.random.experimental.stateless_split(seed, 5)
    areas = tf.random.stateless_uniform([attempts], seeds[1], *area) * tf.cast(
        height * width, tf.float32)
    aspects = tf.random.stateless_uniform([attempts], seeds[2], *aspect)
    heights = tf.cast(tf.round(tf.sqrt(areas * aspects)), tf.int32)
    widths = tf.cast(tf.round(tf.sqrt(areas / aspects)), tf.int32)
    fits = (heights < height) & (widths < width) & (heights > 0) & (widths > 0)
    first = tf.argmax(tf.cast(fits, tf.int32))
    h, w = heights[first], widths[first]
    corner = tf.random.stateless_uniform([2], seeds[3])
    top = tf.minimum(tf.cast(corner[0] * tf.cast(height - h + 1, tf.float32), tf.int32),
                     height - h)
    left = tf.minimum(tf.cast(corner[1] * tf.cast(width - w + 1, tf.float32), tf.int32),
                      width - w)
    rows, cols = tf.range(height), tf.range(width)
    inside = (((rows >= top) & (rows < top + h))[:, None] &
              ((cols >= left) & (cols < left + w))[None, :])
    erase = (tf.random.stateless_uniform([], seeds[0]) < probability) & fits[first]
    if fill == 'noise':
        filler = tf.random.stateless_uniform(tf.shape(image), seeds[4], 0, 255)
    else:
        filler = tf.broadcast_to(tf.constant(IMAGENET_MEAN, image.dtype), tf.shape(image))
    return tf.where((inside & erase)[:, :, None], filler, image)


def pad_and_crop(image, padding, size, seed):
    """BoT's crop augmentation: pads `padding` black pixels on every side of
    the (H, W, C) `image` and takes a random crop of `size` (height, width)."""
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, tuple(size) + (3,), seed=seed)


def pk_dataset(pids, fids, image_root, *, batch_p, batch_k, net_input_size,
               pre_crop_size=None, flip_augment=False, crop_augment=False,
               seed=0, loading_threads=8, start_step=0, num_shards=1, shard_index=0,
               splits=1, antialias=True, accurate_jpeg=True, pad_crop=0,
               erasing=0.0, erasing_fill='mean'):
    """The P×K sampler: an endless `tf.data.Dataset` of identity-ordered batches.

    Each "epoch" shuffles the unique identities and keeps a multiple of P of
    them. For each identity it draws K images, without replacement when it has
    at least K, otherwise from a padded list in which every image occurs equally
    often. Images are decoded in parallel and optionally flipped, cropped
    (after a resize to the pre-crop size, or after padding), and erased.

    Every random choice is a stateless function of `seed` and the position in
    the stream, so two runs with the same seed see the same batches, whatever
    the parallelism, and `start_step` resumes the stream exactly where a run
    that did `start_step` steps left it.

    For several workers, shard `shard_index` of `num_shards` loads only its
    P / num_shards identities of every global batch, and yields them in
    `splits` consecutive pieces (one per local replica); each piece holds
    whole identity groups, and all shards together see exactly the batches of
    a single worker.

    Args:
        pids, fids: Numpy string arrays from `load_dataset`.
        image_root (str): The folder the fids are relative to.
        batch_p, batch_k (int): Identities per global batch and images per identity.
        net_input_size (tuple): The (height, width) the network is fed.
        pre_crop_size (tuple): The (height, width) images are resized to before
            random cropping, used only with `crop_augment`.
        flip_augment, crop_augment (bool): Random horizontal flips and crops.
        seed (int): Seed of every random choice.
        loading_threads (int): Images decoded in parallel.
        start_step (int): Number of batches to skip, computed without loading.
        num_shards, shard_index, splits (int): See above; P must be a multiple
            of num_shards * splits.
        antialias (bool): See `resize`.
        accurate_jpeg (bool): See `decode`.
        pad_crop (int): When positive, `pad_and_crop` by this many pixels
            after the other augmentations.
        erasing (float): The probability of `random_erasing`, applied last.
        erasing_fill (str): Its fill, one of `ERASING_FILLS`.

    Returns:
        A dataset of (images (b, H, W, 3) float32, fids (b,), pids (b,),
        labels (b,) int32) with b = P * K / (num_shards * splits); `labels`
        number the identities 0, 1, … in sorted order of their pids.
    """
    check_enough_identities(pids, batch_p)
    if batch_p % (num_shards * splits):
        raise UserError('--batch_p {} cannot be split evenly into {} replicas; use a multiple '
                        'of {}.'.format(batch_p, num_shards * splits, num_shards * splits))
    unique_pids, pid_index = np.unique(pids, return_inverse=True)
    num_pids = len(unique_pids)
    # Files grouped by identity: identity i owns `by_pid[bounds[i]:bounds[i+1]]`.
    by_pid = tf.constant(np.argsort(pid_index, kind='stable'), tf.int64)
    bounds = tf.constant(np.concatenate([[0], np.cumsum(np.bincount(pid_index))]), tf.int64)
    fids_t, pids_t = tf.constant(fids), tf.constant(pids)
    labels_t = tf.constant(pid_index, tf.int32)
    per_epoch = (num_pids // batch_p) * batch_p
    first_pid = start_step * batch_p
    start_epoch, start_offset = divmod(first_pid, per_epoch)
    shard_p = batch_p // num_shards

    def epoch_identities(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_pids, dtype=tf.int64), seed=stream_seed(seed, 0, epoch))
        return tf.data.Dataset.from_tensor_slices(order[:per_epoch])

    def sample_k_fids(pid, position):
        """K file indices for the identity at global stream position `position`,
        each with its global image position (position * K + j)."""
        start, count = bounds[pid], bounds[pid + 1] - bounds[pid]
        padded_count = (batch_k + count - 1) // count * count
        padded = tf.math.floormod(tf.range(padded_count, dtype=tf.int64), count)
        chosen = tf.random.experimental.stateless_shuffle(
            padded, seed=stream_seed(seed, 1, position))[:batch_k]
        return tf.data.Dataset.from_tensor_slices((
            tf.gather(by_pid, start + chosen),
            position * batch_k + tf.range(batch_k, dtype=tf.int64)))

    image_size = pre_crop_size if crop_augment else net_input_size

    def load(file_index, image_position):
        fid = tf.gather(fids_t, file_index)
        image = fid_to_image(fid, image_root, image_size, antialias, accurate_jpeg)
        if flip_augment:
            image = tf.image.stateless_random_flip_left_right(
                image, seed=stream_seed(seed, 2, image_position))
        if crop_augment:
            image = tf.image.stateless_random_crop(
                image, tuple(net_input_size) + (3,), seed=stream_seed(seed, 3, image_position))
        if pad_crop:
            image = pad_and_crop(image, pad_crop, net_input_size,
                                 stream_seed(seed, 6, image_position))
        if erasing:
            image = random_erasing(image, erasing, stream_seed(seed, 5, image_position),
                                   erasing_fill)
        return image, fid, tf.gather(pids_t, file_index), tf.gather(labels_t, file_index)

    identities = tf.data.Dataset.zip(
        tf.data.Dataset.counter(start=start_epoch).flat_map(epoch_identities).skip(start_offset),
        tf.data.Dataset.counter(start=first_pid))
    if num_shards > 1:
        # This shard's slice of every global batch of P identities.
        lo = shard_index * shard_p
        identities = identities.batch(batch_p).map(
            lambda pid, position: (pid[lo:lo + shard_p], position[lo:lo + shard_p])).unbatch()
    images = identities.flat_map(sample_k_fids)
    images = images.map(load, num_parallel_calls=loading_threads, deterministic=True)
    return images.batch(shard_p // splits * batch_k, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)


# Test-time augmentation (embed.py)
###

CROPS = ('center', 'top_left', 'top_right', 'bottom_left', 'bottom_right')


def five_crops(image, crop_size):
    """The central and four corner crops of `crop_size` from `image` (H, W, C)."""
    margin = tf.shape(image)[:2] - tf.constant(crop_size)
    tf.debugging.assert_non_negative(
        margin, message='Crop size must be smaller or equal to the image size.')
    h, w = crop_size
    top, left = margin[0] // 2, margin[1] // 2
    return (image[top:top + h, left:left + w],
            image[:h, :w], image[:h, -w:], image[-h:, :w], image[-h:, -w:])


def augmentation_names(flip, crop):
    """The names of the augmented versions, in the order `augment` stacks them."""
    names = ['original'] + (['original_flip'] if flip else [])
    if crop == 'five':
        return [n + '_' + c for n in names for c in CROPS]
    return [n + '_' + (crop or 'resize') for n in names]


def augment(image, flip, crop, net_input_size):
    """All augmented versions of one image, stacked: (A, h, w, 3).

    `image` has the pre-crop size when `crop` is given, else the net input size.
    """
    versions = [image] + ([tf.reverse(image, [1])] if flip else [])
    if crop == 'five':
        versions = [c for v in versions for c in five_crops(v, net_input_size)]
    elif crop == 'center':
        versions = [five_crops(v, net_input_size)[0] for v in versions]
    return tf.stack(versions)


def image_batches(fids, image_root, net_input_size, pre_crop_size=None, flip=False,
                  crop=False, batch_size=256, loading_threads=8, antialias=True,
                  accurate_jpeg=True):
    """Batches of every image of `fids` with all its augmented versions, in order:
    a tf.data.Dataset of (B, H, W, 3) float32 batches."""
    image_size = pre_crop_size if crop else net_input_size
    dataset = tf.data.Dataset.from_tensor_slices(fids).map(
        lambda fid: augment(fid_to_image(fid, image_root, image_size, antialias, accurate_jpeg),
                            flip, crop,
                            net_input_size),
        num_parallel_calls=loading_threads)
    return dataset.unbatch().batch(batch_size).prefetch(tf.data.AUTOTUNE)
