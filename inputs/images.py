"""Images into tensors: decoding, (antialiased) resizing, the checks that
refuse undecodable and oversized images before any work, and the test-time
augmentations (flips and crops) of embedding.

Every tensor function here works eagerly and inside `Dataset.map`.
"""

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from triplet_reid import common
from triplet_reid.cli import UserError
from triplet_reid.storage import files
from triplet_reid.cli.flags import MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class Preprocessing:
    """How an experiment turns an image file into the network's input: the
    (height, width) the net is fed, the (height, width) images are resized
    to before they are cropped, antialiased resizing (see `resize`) and the
    accurate JPEG decoder (see `decode`), taken from an experiment's record
    with `of`."""
    net_input_size: tuple
    pre_crop_size: tuple = None
    antialias: bool = True
    accurate_jpeg: bool = True

    @classmethod
    def of(cls, experiment):
        """The preprocessing of an `experiment.Experiment` record."""
        return cls(experiment.net_input_size, experiment.pre_crop_size, experiment.antialias,
                   experiment.accurate_jpeg)

    def load(self, fid, image_root, for_cropping=False):
        """The image `fid` as float32 (h, w, 3): at the pre-crop size when it is
        `for_cropping`, else at the net input size."""
        size = self.pre_crop_size if for_cropping else self.net_input_size
        return fid_to_image(fid, image_root, size, self.antialias, self.accurate_jpeg)


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
    """Decodes an image file's contents (JPEG, PNG, BMP, GIF or WebP) to (H, W, 3) uint8 RGB.

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

    JPEG, PNG, BMP, GIF and WebP files are decoded by their content, not their name;
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


def find_irregular_files(fids, image_root):
    """The fids that name something other than a regular file (a device
    such as /dev/zero, a pipe, a folder, or a link to one), in dataset order:
    reading one may never end, so it is never opened. Missing files are left
    to the decoding check."""
    return [fid for fid in np.asarray(fids).astype(str)
            if files.irregular('{}/{}'.format(image_root, fid))]


# The most bytes a file may hold per pixel allowed: 16-bit RGBA stored raw
# takes 8; more is no image of that size (a sparse file of a terabyte, which
# decoding would read whole first).
MAX_BYTES_PER_PIXEL = 16


def declared_pixels(path, max_pixels):
    """The pixels the image file `path` declares (`header_pixels`), without
    reading a file larger than any image of `max_pixels` pixels could be:
    that one declares infinity. None for a missing or unreadable file, which
    the decoding check then reports."""
    try:
        if os.path.getsize(path) > MAX_BYTES_PER_PIXEL * max_pixels + (1 << 20):
            return math.inf
    except (OSError, ValueError):
        return None
    return header_pixels(path)


def find_oversized_images(fids, image_root, max_pixels, loading_threads=8):
    """The fids of the images that declare more than `max_pixels` pixels
    (`declared_pixels`), in dataset order."""
    paths = ['{}/{}'.format(image_root, fid) for fid in np.asarray(fids).astype(str)]
    with ThreadPoolExecutor(loading_threads) as pool:
        found = list(pool.map(lambda path: declared_pixels(path, max_pixels), paths))
    return [fid for fid, count in zip(fids, found) if count is not None and count > max_pixels]


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
    irregular = find_irregular_files(fids, image_root)
    keep = ~np.isin(fids, irregular)
    huge = find_oversized_images(np.asarray(fids)[keep], image_root, max_pixels, loading_threads)
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
    bad = irregular + find_undecodable_images(np.asarray(fids)[keep], image_root,
                                              loading_threads)
    if not bad:
        return keep
    keep &= ~np.isin(fids, bad)
    examples = ', '.join('`{}`'.format(f) for f in bad[:3])
    if not skip:
        raise UserError('{} of the {} images under `{}` cannot be decoded (corrupt, truncated, '
                        'not an image or not a regular file), for example {}. Replace or '
                        'remove them, {}.'.format(
                            len(bad), len(fids), image_root, examples, remedy))
    log.warning('Skipping %d of the %d images that cannot be decoded, for example %s.',
                len(bad), len(fids), examples)
    return keep


def load_training_sets(train_set, image_root, skip, loading_threads=8, log=None,
                       max_pixels=MAX_IMAGE_PIXELS):
    """The usable images of train.py's --train_set and --image_root (one
    path or lists, see `common.training_sets`), each set checked by
    `decodable_mask`: a list of (pids, fids, image_root, csv_file), one per
    set, for `common.merge_datasets`."""
    parts = []
    for csv_file, root in common.training_sets(train_set, image_root):
        pids, fids = common.load_dataset(csv_file, root)
        keep = decodable_mask(fids, root, skip, loading_threads, log, max_pixels=max_pixels)
        parts.append((pids[keep], fids[keep], root, csv_file))
    return parts


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


def image_batches(fids, image_root, preprocessing, flip=False, crop=None, batch_size=256,
                  loading_threads=8):
    """Batches of every image of `fids` with all its augmented versions, in order:
    a tf.data.Dataset of (B, H, W, 3) float32 batches. `preprocessing` is the
    experiment's `Preprocessing`."""
    dataset = tf.data.Dataset.from_tensor_slices(fids).map(
        lambda fid: augment(preprocessing.load(fid, image_root, bool(crop)), flip, crop,
                            preprocessing.net_input_size),
        num_parallel_calls=loading_threads)
    return dataset.unbatch().batch(batch_size).prefetch(tf.data.AUTOTUNE)
