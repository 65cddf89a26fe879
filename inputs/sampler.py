"""The P×K training sampler: identities and images drawn per step, and the
training augmentations (crops, flips, padding, random erasing).

Every function here works eagerly and inside `Dataset.map`; the images
themselves are read by `inputs/images.py`.
"""


import numpy as np
import tensorflow as tf

from triplet_reid.cli import UserError


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
    4 the draws of a loss at a training step (training/step.py), 7 the frames
    of a tracklet (here).
    """
    base = tf.stack([tf.constant(seed, tf.int64), tf.constant(stream, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


# The ImageNet mean pixel in [0, 255], which random erasing fills with.
IMAGENET_MEAN = (123.675, 116.28, 103.53)


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
        fill (str): One of `flags.ERASING_FILLS`.

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


def identity_stream(num_pids, batch_p, seed, start_step=0, num_shards=1, shard_index=0):
    """The identities of the training stream from `start_step` on: a dataset
    of (identity index, global stream position). Each "epoch" shuffles the
    identities (from `seed` and the epoch) and keeps a multiple of P of them;
    with `num_shards`, only shard `shard_index`'s slice of every P."""
    per_epoch = (num_pids // batch_p) * batch_p
    first_pid = start_step * batch_p
    start_epoch, start_offset = divmod(first_pid, per_epoch)

    def epoch_identities(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_pids, dtype=tf.int64), seed=stream_seed(seed, 0, epoch))
        return tf.data.Dataset.from_tensor_slices(order[:per_epoch])

    identities = tf.data.Dataset.zip(
        tf.data.Dataset.counter(start=start_epoch).flat_map(epoch_identities).skip(start_offset),
        tf.data.Dataset.counter(start=first_pid))
    if num_shards > 1:
        # This shard's slice of every global batch of P identities.
        shard_p = batch_p // num_shards
        lo = shard_index * shard_p
        identities = identities.batch(batch_p).map(
            lambda pid, position: (pid[lo:lo + shard_p], position[lo:lo + shard_p])).unbatch()
    return identities


def augment_for_training(image, image_position, seed, net_input_size, flip_augment=False,
                         crop_augment=False, pad_crop=0, erasing=0.0, erasing_fill='mean'):
    """One training image (h, w, 3) flipped, cropped (from the pre-crop size,
    or after padding) and erased at random, each choice drawn from `seed` and
    the image's position in the stream; see `pk_dataset`."""
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
    return image


def padded_shuffle(count, size, seed):
    """`size` indices into `count` items (a scalar int64 tensor), drawn from a
    shuffled list in which every item occurs equally often: without
    replacement when `size` <= `count`, else spreading the repeats."""
    padded_count = (size + count - 1) // count * count
    padded = tf.math.floormod(tf.range(padded_count, dtype=tf.int64), count)
    return tf.random.experimental.stateless_shuffle(padded, seed=seed)[:size]


def identity_groups(pids, batch_p, replicas):
    """Checks that `pids` (N,) make P×K batches split into `replicas` pieces,
    and groups them: (number of identities, (N,) identity index of each item,
    by_pid, bounds), where identity i owns the items `by_pid[bounds[i]:bounds[i+1]]`."""
    check_enough_identities(pids, batch_p)
    if batch_p % replicas:
        raise UserError('--batch_p {} cannot be split evenly into {} replicas; use a multiple '
                        'of {}.'.format(batch_p, replicas, replicas))
    unique_pids, pid_index = np.unique(pids, return_inverse=True)
    by_pid = tf.constant(np.argsort(pid_index, kind='stable'), tf.int64)
    bounds = tf.constant(np.concatenate([[0], np.cumsum(np.bincount(pid_index))]), tf.int64)
    return len(unique_pids), pid_index, by_pid, bounds


def draw_members(by_pid, bounds, batch_k, seed, pid, position):
    """A dataset of K (item index, global position) of the identity `pid` at
    global stream position `position`: its images, or its tracklets (see
    `identity_groups`), each with the position * K + j of the draws that
    follow from it."""
    start, count = bounds[pid], bounds[pid + 1] - bounds[pid]
    chosen = padded_shuffle(count, batch_k, stream_seed(seed, 1, position))
    return tf.data.Dataset.from_tensor_slices((
        tf.gather(by_pid, start + chosen),
        position * batch_k + tf.range(batch_k, dtype=tf.int64)))


def pk_dataset(pids, fids, image_root, preprocessing, *, batch_p, batch_k,
               flip_augment=False, crop_augment=False, seed=0, loading_threads=8,
               start_step=0, num_shards=1, shard_index=0, splits=1, pad_crop=0,
               erasing=0.0, erasing_fill='mean', labels=None, cameras=None):
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
        preprocessing (images.Preprocessing): The sizes (the pre-crop size
            only with `crop_augment`), resizing and JPEG decoding.
        flip_augment, crop_augment (bool): Random horizontal flips and crops.
        seed (int): Seed of every random choice.
        loading_threads (int): Images decoded in parallel.
        start_step (int): Number of batches to skip, computed without loading.
        num_shards, shard_index, splits (int): See above; P must be a multiple
            of num_shards * splits.
        pad_crop (int): When positive, `pad_and_crop` by this many pixels
            after the other augmentations.
        erasing (float): The probability of `random_erasing`, applied last.
        erasing_fill (str): Its fill, one of `flags.ERASING_FILLS`.
        labels: (N,) int labels of the images to yield instead of their
            identities' numbers (the camera proxies of --pseudo_labels).
        cameras: (N,) int rows of the images' cameras in the camera
            embedding's table (--sie), yielded with the images.

    Returns:
        A dataset of (images (b, H, W, 3) float32, fids (b,), pids (b,),
        labels (b,) int32) with b = P * K / (num_shards * splits); `labels`
        number the identities 0, 1, … in sorted order of their pids. With
        `cameras`, the images come as the model with a camera embedding takes
        them: {'images': (b, H, W, 3), 'cameras': (b,) int32}.
    """
    num_pids, pid_index, by_pid, bounds = identity_groups(pids, batch_p, num_shards * splits)
    fids_t, pids_t = tf.constant(fids), tf.constant(pids)
    labels_t = tf.constant(pid_index if labels is None else labels, tf.int32)
    cameras_t = None if cameras is None else tf.constant(cameras, tf.int32)
    shard_p = batch_p // num_shards

    def sample_k_fids(pid, position):
        return draw_members(by_pid, bounds, batch_k, seed, pid, position)

    def load(file_index, image_position):
        fid = tf.gather(fids_t, file_index)
        image = augment_for_training(
            preprocessing.load(fid, image_root, crop_augment), image_position, seed,
            preprocessing.net_input_size, flip_augment, crop_augment, pad_crop, erasing,
            erasing_fill)
        if cameras_t is not None:
            image = {'images': image, 'cameras': tf.gather(cameras_t, file_index)}
        return image, fid, tf.gather(pids_t, file_index), tf.gather(labels_t, file_index)

    identities = identity_stream(num_pids, batch_p, seed, start_step, num_shards, shard_index)
    samples = identities.flat_map(sample_k_fids)
    samples = samples.map(load, num_parallel_calls=loading_threads, deterministic=True)
    return samples.batch(shard_p // splits * batch_k, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)




# The P×K×T sampler of video re-id
###

def choose_frames(count, seq_len, sampling, seed):
    """T frame indices (T,) int64 into a tracklet of `count` frames.

    `evenly`: the centres of T equal stretches of the tracklet (fixed);
    `chunk`: T consecutive frames from a random start; `random`: T frames
    drawn at random, in temporal order. A tracklet of fewer than T frames
    repeats frames: `evenly` and `random` spread the repeats, `chunk`
    repeats its last frame, as torchreid pads.

    Args:
        count: Scalar int64 tensor, at least 1.
        seq_len (int): T.
        sampling (str): One of `flags.FRAME_SAMPLINGS`.
        seed: (2,) stateless seed.
    """
    steps = tf.range(seq_len, dtype=tf.float64)
    total = tf.cast(count, tf.float64)
    if sampling == 'evenly':
        return tf.cast(tf.floor((steps + 0.5) * total / seq_len), tf.int64)
    if sampling == 'chunk':
        start = tf.random.stateless_uniform([], seed, 0, tf.maximum(count - seq_len, 0) + 1,
                                            dtype=tf.int64)
        return tf.minimum(start + tf.range(seq_len, dtype=tf.int64), count - 1)
    # `random`: T frames of a long tracklet are distinct, and sorted.
    return tf.sort(padded_shuffle(count, seq_len, seed))


def pkt_dataset(tracklets, image_root, preprocessing, *, batch_p, batch_k, seq_len,
                frame_sampling='evenly', flip_augment=False, crop_augment=False, seed=0,
                loading_threads=8, start_step=0, num_shards=1, shard_index=0, splits=1,
                pad_crop=0, erasing=0.0, erasing_fill='mean'):
    """The P×K×T sampler of video re-id: an endless dataset of batches of P
    identities, K tracklets of each and T frames of each tracklet.

    Identities are drawn as `pk_dataset` draws them, and K of each identity's
    tracklets as it draws K images; the T frames of a tracklet are chosen by
    `choose_frames`. The augmentations of a tracklet's frames are drawn once
    for the tracklet, so that its frames stay one consistent clip. Every
    choice is a stateless function of `seed` and the position in the stream,
    so `start_step` resumes exactly, and sharding splits whole identities as
    in `pk_dataset`, whose other arguments these are.

    Args:
        tracklets (tracklets.Tracklets): The training tracklets.
        seq_len (int): T, the frames of each tracklet.
        frame_sampling (str): One of `flags.FRAME_SAMPLINGS`.

    Returns:
        A dataset of (images (b * T, H, W, 3) float32, tracklet-major, fids of
        each tracklet's first chosen frame (b,), pids (b,), labels (b,) int32)
        with b = P * K / (num_shards * splits) tracklets.
    """
    pids = tracklets.identities
    num_pids, pid_index, by_pid, pid_bounds = identity_groups(pids, batch_p,
                                                              num_shards * splits)
    frame_bounds = tf.constant(tracklets.bounds, tf.int64)
    fids_t, pids_t = tf.constant(tracklets.fids), tf.constant(pids)
    labels_t = tf.constant(pid_index, tf.int32)

    def sample_k_tracklets(pid, position):
        return draw_members(by_pid, pid_bounds, batch_k, seed, pid, position)

    def sample_t_frames(tracklet, position):
        first = frame_bounds[tracklet]
        frames = first + choose_frames(frame_bounds[tracklet + 1] - first, seq_len,
                                       frame_sampling, stream_seed(seed, 7, position))
        return tf.data.Dataset.from_tensor_slices((
            frames, tf.fill([seq_len], tracklet), tf.fill([seq_len], position)))

    def load(frame, tracklet, position):
        # One draw of the augmentations per tracklet: its position, not the frame's.
        image = augment_for_training(
            preprocessing.load(tf.gather(fids_t, frame), image_root, crop_augment), position,
            seed, preprocessing.net_input_size, flip_augment, crop_augment, pad_crop, erasing,
            erasing_fill)
        return (image, tf.gather(fids_t, frame), tf.gather(pids_t, tracklet),
                tf.gather(labels_t, tracklet))

    identities = identity_stream(num_pids, batch_p, seed, start_step, num_shards,
                                 shard_index)
    frames = identities.flat_map(sample_k_tracklets).flat_map(sample_t_frames)
    frames = frames.map(load, num_parallel_calls=loading_threads, deterministic=True)
    per_batch = batch_p // num_shards // splits * batch_k
    return frames.batch(per_batch * seq_len, drop_remainder=True).map(
        lambda images, fids, batch_pids, labels: (
            images, fids[::seq_len], batch_pids[::seq_len], labels[::seq_len])).prefetch(
        tf.data.AUTOTUNE)
