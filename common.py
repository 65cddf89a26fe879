"""Pieces shared by train.py, embed.py and evaluate.py.

Command-line argument types, CSV loading, image decoding, the P×K `tf.data`
sampler, model assembly, logging and the small file helpers that keep an
experiment root consistent. Importing this module has no side effects.
"""

import argparse
import csv
import io
import json
import logging
import logging.handlers
import os
import sys
import tempfile
from importlib import import_module

import numpy as np


class _LazyModule:
    """A module imported on first attribute access."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return getattr(import_module(self._name), attr)


# TensorFlow is imported on first use, so that evaluate.py, which needs only
# the CSV and argument helpers, starts in a fraction of a second.
tf = _LazyModule('tensorflow')

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


class UserError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


# Command-line argument types
###

def _check_directory(arg, access, access_str):
    """Accepts `arg` when it exists with `access`, or its closest existing parent has it."""
    path_head = os.path.abspath(arg)
    while True:
        if os.path.exists(path_head):
            if not os.path.isdir(path_head):
                raise argparse.ArgumentTypeError(
                    '`{}` is not a {} directory: `{}` exists and is not a '
                    'directory.'.format(arg, access_str, path_head))
            if os.access(path_head, access):
                return arg
            raise argparse.ArgumentTypeError(
                '`{}` is not a {} directory: `{}` exists without {} '
                'access.'.format(arg, access_str, path_head, access_str))
        parent = os.path.dirname(path_head)
        if parent == path_head:
            break
        path_head = parent
    raise argparse.ArgumentTypeError('`{}` is not a valid {} path.'.format(arg, access_str))


def writeable_directory(arg):
    """A directory that exists and is writeable, or can be created."""
    return _check_directory(arg, os.W_OK, 'writeable')


def readable_directory(arg):
    """An existing, readable directory."""
    if not os.path.isdir(arg):
        raise argparse.ArgumentTypeError('`{}` is not an existing directory.'.format(arg))
    return _check_directory(arg, os.R_OK, 'readable')


def _number_greater_x(arg, type_, x):
    try:
        value = type_(arg)
    except ValueError:
        raise argparse.ArgumentTypeError('`{}` is not an {}.'.format(arg, type_.__name__))
    if value > x:
        return value
    raise argparse.ArgumentTypeError(
        'found {} where an {} greater than {} was required.'.format(arg, type_.__name__, x))


def positive_int(arg):
    return _number_greater_x(arg, int, 0)


def nonnegative_int(arg):
    return _number_greater_x(arg, int, -1)


def positive_float(arg):
    return _number_greater_x(arg, float, 0)


def unit_float(arg):
    """A float between 0 and 1, both included."""
    try:
        value = float(arg)
    except ValueError:
        raise argparse.ArgumentTypeError('`{}` is not a float.'.format(arg))
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError('found {} where a value in [0, 1] was required.'
                                         .format(arg))
    return value


def float_or_string(arg):
    """Tries to convert the string to float, otherwise returns the string."""
    try:
        return float(arg)
    except (ValueError, TypeError):
        return arg


def margin(arg):
    """The triplet margin: a non-negative float, `soft` or `none`."""
    value = float_or_string(arg)
    if isinstance(value, float):
        if value < 0:
            raise argparse.ArgumentTypeError('a numeric margin must be >= 0, got {}.'.format(arg))
        return value
    if value.lower() in ('soft', 'none'):
        return value.lower()
    raise argparse.ArgumentTypeError(
        'the margin must be a number, `soft` or `none`, got `{}`.'.format(arg))


def given_arguments(parser, argv):
    """Returns the set of destinations the user gave explicitly on the command line.

    Parses `argv` a second time with every default suppressed, so what remains
    in the namespace is exactly what was typed.
    """
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


# Files that must never be half-written.
###

def atomic_write(path, data, mode='w'):
    """Writes `data` to `path` through a temporary file and a rename, so a
    crash leaves either the old or the new content, never a mixture."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.')
    try:
        # mkstemp makes the file private; give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, obj):
    atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + '\n')


# Dataset handling
###

def _has_image_extension(path):
    return path.lower().endswith(IMAGE_EXTENSIONS)


def read_csv_rows(csv_file):
    """Reads `identity,relative/path` rows from a CSV file without header.

    Returns:
        A list of (pid, fid) string pairs, in file order.

    Raises:
        UserError naming the file and line for an unreadable, empty or
        malformed file, or one that starts with a header line.
    """
    try:
        with open(csv_file, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise UserError('cannot read the dataset CSV `{}`: {}.'.format(csv_file, e.strerror))
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b'\n') + 1
        raise UserError('`{}` line {}: the file is not valid UTF-8 text. Save it as UTF-8 '
                        'with rows `identity,relative/path`.'.format(csv_file, line))

    rows = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # Blank lines carry nothing, the original ignored them too.
        if len(row) != 2:
            raise UserError(
                '`{}` line {}: expected 2 columns `identity,relative/path`, found {}: '
                '`{}`.'.format(csv_file, line_no, len(row), ','.join(row)))
        pid, fid = row[0].strip(), row[1].strip()
        if not pid or not fid:
            raise UserError('`{}` line {}: the identity and the path must both be non-empty, '
                            'found `{}`.'.format(csv_file, line_no, ','.join(row)))
        rows.append((line_no, pid, fid))

    if not rows:
        raise UserError('the dataset CSV `{}` is empty; it needs rows '
                        '`identity,relative/path`.'.format(csv_file))
    first_line, pid0, fid0 = rows[0]
    others_are_images = any(_has_image_extension(f) for _, _, f in rows[1:])
    if not _has_image_extension(fid0) and (others_are_images or len(rows) == 1):
        raise UserError(
            '`{}` line {}: `{},{}` looks like a header line. The CSV has no header: '
            'remove that line so every row is `identity,relative/path`.'.format(
                csv_file, first_line, pid0, fid0))
    return [(pid, fid) for _, pid, fid in rows]


def load_dataset(csv_file, image_root, fail_on_missing=True):
    """Loads a dataset CSV file, returning PIDs and FIDs.

    PIDs are the "person IDs", i.e. class names/labels, kept as strings because
    leading zeros matter (`0002` and `2` are different people).
    FIDs are the "file IDs", the image paths relative to `image_root`.

    Args:
        csv_file (str): The CSV file to load, rows `identity,relative/path`.
        image_root (str or None): The folder the paths are relative to. When
            None, the existence of the files is not checked.
        fail_on_missing (bool): When files are missing, raise (True) or drop
            them with a warning (False).

    Returns:
        (pids, fids), two numpy unicode arrays of equal length.

    Raises:
        UserError for malformed files and, with `fail_on_missing`, missing images.
    """
    rows = read_csv_rows(csv_file)
    pids = np.array([pid for pid, _ in rows])
    fids = np.array([fid for _, fid in rows])

    if image_root is not None:
        if not os.path.isdir(image_root):
            raise UserError('the image root `{}` is not a folder.'.format(image_root))
        missing = np.array([not os.path.isfile(os.path.join(image_root, f)) for f in fids],
                           dtype=bool)
        if missing.any():
            examples = ', '.join('`{}`'.format(f) for f in fids[missing][:3])
            if fail_on_missing:
                raise UserError(
                    '{} of the {} images listed in `{}` are missing under the image root '
                    '`{}`, for example {}. Check `--image_root`.'.format(
                        missing.sum(), len(fids), csv_file, image_root, examples))
            logging.getLogger(__name__).warning(
                'Removing %d missing file(s) from the dataset `%s`, for example %s.',
                missing.sum(), csv_file, examples)
            pids, fids = pids[~missing], fids[~missing]
    return pids, fids


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


def decodable_images(fids, image_root, skip, loading_threads=8, log=None,
                     remedy='or pass --skip_corrupt_images to train without them'):
    """Refuses undecodable images, or, when `skip`, leaves them out with a warning.

    `remedy` ends the error message, after "Replace or remove them, ".

    Returns:
        A boolean mask over `fids`: True for the images to use.

    Raises:
        UserError naming the first few undecodable files, unless `skip`.
    """
    bad = find_undecodable_images(fids, image_root, loading_threads)
    keep = ~np.isin(fids, bad)
    if not bad:
        return keep
    examples = ', '.join('`{}`'.format(f) for f in bad[:3])
    if not skip:
        raise UserError('{} of the {} images under `{}` cannot be decoded (corrupt, truncated '
                        'or not an image), for example {}. Replace or remove them, {}.'.format(
                            len(bad), len(fids), image_root, examples, remedy))
    (log or logging.getLogger(__name__)).warning(
        'Skipping %d of the %d images that cannot be decoded, for example %s.',
        len(bad), len(fids), examples)
    return keep


def check_enough_identities(pids, batch_p, source='the training set'):
    """Refuses a dataset with fewer identities than a P×K batch needs."""
    num_pids = len(np.unique(pids))
    if num_pids < batch_p:
        raise UserError('{} has {} identities but --batch_p is {}; lower --batch_p to at most '
                        '{}.'.format(source, num_pids, batch_p, num_pids))


def fid_to_image(fid, image_root, image_size):
    """Loads an image file and resizes it, eagerly or inside `Dataset.map`.

    JPEG, PNG, BMP and GIF files are decoded by their content, not their name;
    grayscale and RGBA images become 3-channel RGB.

    Args:
        fid: A scalar string tensor, the path relative to `image_root`.
        image_root (str): The folder the path is relative to.
        image_size (tuple): The (height, width) to resize to.

    Returns:
        A float32 tensor of shape (height, width, 3) with values in [0, 255].
    """
    return load_image(image_path(image_root, fid), image_size)


def image_path(image_root, fid):
    """The path of the image `fid` (a string tensor) under `image_root`."""
    return tf.strings.join([image_root, fid], separator='/')


def load_image(path, image_size):
    """Decodes the image file `path` (a string or scalar string tensor) like `fid_to_image`."""
    decoded = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    resized = tf.image.resize(tf.cast(decoded, tf.float32), image_size)
    return tf.ensure_shape(resized, (image_size[0], image_size[1], 3))


def _stream_seed(seed, stream, index):
    """A stateless-RNG seed of shape (2,) for element `index` of the random stream `stream`."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.constant(stream, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def pk_dataset(pids, fids, image_root, batch_p, batch_k, net_input_size,
               pre_crop_size=None, flip_augment=False, crop_augment=False,
               seed=0, loading_threads=8, start_step=0, num_shards=1, shard_index=0,
               splits=1):
    """The P×K sampler: an endless `tf.data.Dataset` of identity-ordered batches.

    Each "epoch" shuffles the unique identities and keeps a multiple of P of
    them. For each identity it draws K images, without replacement when it has
    at least K, otherwise from a padded list in which every image occurs equally
    often. Images are decoded in parallel and optionally flipped and cropped.

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
            tf.range(num_pids, dtype=tf.int64), seed=_stream_seed(seed, 0, epoch))
        return tf.data.Dataset.from_tensor_slices(order[:per_epoch])

    def sample_k_fids(pid, position):
        """K file indices for the identity at global stream position `position`,
        each with its global image position (position * K + j)."""
        start, count = bounds[pid], bounds[pid + 1] - bounds[pid]
        padded_count = (batch_k + count - 1) // count * count
        padded = tf.math.floormod(tf.range(padded_count, dtype=tf.int64), count)
        chosen = tf.random.experimental.stateless_shuffle(
            padded, seed=_stream_seed(seed, 1, position))[:batch_k]
        return tf.data.Dataset.from_tensor_slices((
            tf.gather(by_pid, start + chosen),
            position * batch_k + tf.range(batch_k, dtype=tf.int64)))

    image_size = pre_crop_size if crop_augment else net_input_size

    def load(file_index, image_position):
        fid = tf.gather(fids_t, file_index)
        image = fid_to_image(fid, image_root, image_size)
        if flip_augment:
            image = tf.image.stateless_random_flip_left_right(
                image, seed=_stream_seed(seed, 2, image_position))
        if crop_augment:
            image = tf.image.stateless_random_crop(
                image, tuple(net_input_size) + (3,), seed=_stream_seed(seed, 3, image_position))
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


# Model assembly
###

def build_model(model_name, head_name, embedding_dim, mixed_precision='off'):
    """Builds the embedding network from a `nets/` body and a `heads/` head.

    `mixed_precision` ('off', 'float16' or 'bfloat16') sets Keras' global
    dtype policy for the layers built here; the embedding layer stays float32.

    Returns:
        (model, body): `model` maps float RGB images (B, H, W, 3) in [0, 255]
        to a dict with `emb` and `emb_raw`, both (B, embedding_dim); `body` is
        its backbone, the part that pretrained weights are loaded into.
    """
    import keras
    keras.mixed_precision.set_global_policy(
        'float32' if mixed_precision == 'off' else 'mixed_' + mixed_precision)
    body = import_module('nets.' + model_name).body()
    head = import_module('heads.' + head_name).head
    images = keras.Input((None, None, 3), name='images')
    outputs = head(body(images), embedding_dim)
    return keras.Model(images, outputs, name='embedding_model'), body


def load_body_weights(model_name, body, path):
    """Initialises a backbone from pretrained weights.

    `path` is one of: a TF-slim or TF1 checkpoint prefix (such as the ImageNet
    `resnet_v1_50.ckpt`, or a checkpoint of the original triplet-reid), whose
    body variables are used and the rest ignored; a Keras weights file
    (`.weights.h5`, `.h5`); a TF2 checkpoint holding `body` (such as another
    experiment's checkpoint); or `imagenet` for nets that can download
    ImageNet weights.

    Raises:
        UserError when the file is missing or holds no matching weights.
    """
    import tf1_checkpoint
    if path == 'imagenet' or path.endswith(('.h5', '.keras')):
        net = import_module('nets.' + model_name)
        if path == 'imagenet' and not hasattr(net, 'load_weights'):
            raise UserError('the net `{}` cannot download ImageNet weights; pass a checkpoint '
                            'file instead.'.format(model_name))
        if path != 'imagenet' and not os.path.isfile(path):
            raise UserError('the initial checkpoint `{}` does not exist.'.format(path))
        try:
            if hasattr(net, 'load_weights'):
                net.load_weights(body, path)
            else:
                body.load_weights(path)
        except (ValueError, OSError) as e:
            raise UserError('cannot load the Keras weights `{}` into `{}`: {}'.format(
                path, model_name, e))
        return
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError):
        raise UserError('`{}` is neither a Keras weights file nor a checkpoint '
                        'prefix.'.format(path))
    if tf1_checkpoint.is_tf1_checkpoint(path):
        tf1_checkpoint.restore(path, tf1_checkpoint.variable_map(body, body.name), strict=False,
                               what='the body of `{}`'.format(body.name))
        return
    if not any(name.startswith('body/') for name in reader.get_variable_to_shape_map()):
        raise UserError('the checkpoint `{}` holds no weights saved as `body`; it is not a '
                        'checkpoint of this project.'.format(path))
    try:
        status = tf.train.Checkpoint(body=body).read(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise UserError('the checkpoint `{}` does not fit the net `{}`: {}'.format(
            path, body.name, str(e).splitlines()[0]))


# Logging
###

def setup_logging(log_file=None, buffer=True):
    """Logs INFO and above to stderr and everything to `log_file` (appended).

    Called first without a file, it buffers every record in memory; called
    again once the experiment root exists, it writes the buffered records to
    the file before the new ones, so warnings about the arguments or the data
    reach the log too. `buffer=False` without a file drops the buffer (for
    processes that never write a log file).
    """
    root = logging.getLogger()
    buffers = [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]
    formatter = logging.Formatter('%(asctime)s [%(levelname)s] %(name)s: %(message)s')
    if log_file is None:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.INFO)
        stream.setFormatter(formatter)
        root.addHandler(stream)
        if buffer:
            root.addHandler(logging.handlers.MemoryHandler(capacity=100000,
                                                           flushLevel=logging.CRITICAL + 1))
    else:
        file_handler = logging.FileHandler(log_file, mode='a')
        file_handler.setFormatter(formatter)
        for memory in buffers:
            memory.setTarget(file_handler)
            memory.flush()
            root.removeHandler(memory)
        root.addHandler(file_handler)
    root.setLevel(logging.DEBUG)
    # TensorFlow's own logger would otherwise print everything twice.
    logging.getLogger('tensorflow').propagate = False
    logging.getLogger('absl').setLevel(logging.WARNING)
