"""Embedding images with a trained experiment: the compiled forward pass, the
batches of test-time augmented images, and the embedder for Python users.

embed.py, search.py, export.py, validation and `load_embedder` share these,
so that every way of embedding resizes, crops and aggregates alike.
"""

import os

import numpy as np
import tensorflow as tf

from triplet_reid.inputs.images import (Preprocessing, augmentation_names, declared_pixels, decode,
                           image_batches, resize)
from triplet_reid.aggregators import AGGREGATORS
from triplet_reid.inputs.cameras import given_cameras
from triplet_reid.cli import UserError
from triplet_reid.storage import files
from triplet_reid.cli.flags import MAX_IMAGE_PIXELS
from triplet_reid.experiment.checkpoints import find_checkpoint
from triplet_reid.experiment import Experiment, trained_args
from triplet_reid.models import video
from triplet_reid.models.build import build_video, check_architecture, restore, with_cameras


def load_experiment(experiment_root, checkpoint=None):
    """Builds the experiment's model and restores a checkpoint.

    Args:
        experiment_root (str): A folder with `args.json` and checkpoints.
        checkpoint (str or None): A checkpoint name inside the root, or None for
            the latest.

    Returns:
        (model, train_args, checkpoint_path).
    """
    parts, train_args, path = load_video_experiment(experiment_root, checkpoint)
    return parts[0], train_args, path


def load_video_experiment(experiment_root, checkpoint=None):
    """`load_experiment` with the parts that embed tracklets: ((model,
    frame_features, temporal layer or None), train_args, checkpoint_path);
    see `models.build.build_video`."""
    train_args = trained_args(experiment_root)
    check_architecture(train_args, os.path.join(experiment_root, 'args.json'))
    found = find_checkpoint(experiment_root, checkpoint)
    model, body, frame_features, layer = build_video(Experiment.of(train_args))
    objects = dict(model=model) if layer is None else dict(model=model, temporal=layer)
    restore(found, tf.train.Checkpoint(**objects), model, body,
            what='the model of `{}`'.format(os.path.join(experiment_root, 'args.json')))
    return (model, frame_features, layer), train_args, found.path


def inference_function(model):
    """The compiled forward pass: images (B, H, W, 3) -> embeddings (B, D),
    called as `forward(images, cameras=None)`; a model with a camera
    embedding (SIE) takes the images' (B,) camera rows, -1 or None for
    unknown.

    Without AutoGraph: the nets have no Python control flow on tensors, and
    converting Keras' code cost a second of each embed.py run."""
    call = tf.function(lambda inputs: model(inputs, training=False)['emb'], autograph=False,
                       reduce_retracing=True)

    def forward(images, cameras=None):
        return call(with_cameras(model, images, cameras))
    return forward


def batch_outputs(forward, batches, cameras=None):
    """The outputs of `forward(images, cameras)` for each batch of images in
    turn, as NumPy arrays; `cameras` (N,) are the rows of all the images,
    sliced for each batch (None: unknown, or a model without SIE, and then
    `forward(images)`)."""
    done = 0
    for images in batches:
        count = len(images)
        # Without cameras, `forward` is called on the images alone, as before SIE.
        yield (forward(images) if cameras is None else
               forward(images, cameras[done:done + count])).numpy()
        done += count


def frame_function(model, frame_features, position):
    """The compiled pass from images (B, H, W, 3) to what a video
    experiment's temporal aggregation takes: the embeddings
    (`inference_function`), or the body's pooled features when it combines
    them before the head (`position` 'features'); called as
    `inference_function`'s is."""
    if position != 'features':
        return inference_function(model)
    call = tf.function(lambda inputs: frame_features(inputs, training=False), autograph=False,
                       reduce_retracing=True)

    def forward(images, cameras=None):
        return call(with_cameras(frame_features, images, cameras))
    return forward


def embed_files(model, train_args, fids, image_root, flip=False, crop=None, aggregator=None,
                batch_size=256, loading_threads=8, progress=None, cameras=None):
    """Embeds image files with test-time augmentation, as embed.py does.

    Args:
        model: the experiment's model (`load_experiment`).
        train_args (dict): the experiment's arguments, for the sizes and decoding.
        fids: (N,) image paths relative to `image_root`.
        flip (bool), crop (None, 'center', 'five' or 'avgpool'): embed.py's
            --flip_augment and --crop_augment.
        aggregator: a key of `AGGREGATORS`, combining the versions of an image
            when there are several.
        progress: called with (done, total) forward passes after each batch
            (see cli/progress.py).
        cameras: (N,) int32 rows of the images' cameras in the camera
            embedding's table, for a model with SIE (-1: unknown).

    Returns:
        (embs (N, D) float32, emb_aug (A, N, D) float32 or None with one
        version, names: the A versions' names).
    """
    experiment = Experiment.of(train_args)
    preprocessing = Preprocessing.of(experiment)
    if crop in ('center', 'five') and not experiment.crops_fit():
        raise UserError('--crop_augment {} takes crops of the net input size {}x{} from the '
                        'image resized to the experiment\'s pre-crop size {}x{}, which is '
                        'smaller; this experiment was trained without crops, so embed without '
                        '--crop_augment (or with avgpool).'.format(
                            crop, *experiment.net_input_size, *experiment.pre_crop_size))
    names = augmentation_names(flip, crop)
    dataset = image_batches(fids, image_root, preprocessing, flip, crop, batch_size,
                            loading_threads)
    forward = inference_function(model)
    total = len(fids) * len(names)
    embs = np.zeros((total, experiment.embedding_dim), np.float32)
    done = 0
    # Each image's versions come one after the other, with its camera.
    rows = None if cameras is None else np.repeat(cameras, len(names))
    for batch in batch_outputs(forward, dataset, rows):
        embs[done:done + len(batch)] = batch
        done += len(batch)
        if progress is not None:
            progress(done, total)
    if len(names) == 1:
        return embs, None, names
    # (N*A, D) -> (A, N, D): one slice per augmentation, as the original.
    emb_aug = embs.reshape(len(fids), len(names), -1).transpose(1, 0, 2)
    return AGGREGATORS[aggregator](emb_aug), emb_aug, names


def embed_tracklet_set(parts, train_args, tracklets, image_root, aggregator=None, crop=None,
                       batch_size=256, loading_threads=8, progress=None, cameras=None):
    """Embeds every tracklet of a `tracklets.Tracklets` set from all its
    frames, in batches of frames, as embed.py does for a tracklet CSV.

    A video experiment combines the frames with its own temporal aggregation
    (after its head, or before it); an image experiment with `aggregator`, a
    key of `AGGREGATORS`.

    Args:
        parts: (model, frame_features, temporal layer or None), from
            `load_video_experiment`.
        crop (None, 'center' or 'avgpool'): embed.py's --crop_augment.
        cameras: (N,) int32 rows of the frames' cameras in the camera
            embedding's table, for a model with SIE.

    Returns:
        The (T, D) float32 embeddings of the T tracklets.
    """
    model, frame_features, layer = parts
    experiment = Experiment.of(train_args)
    if layer is None and aggregator is None:
        raise UserError('this experiment was trained on images, so it needs --tracklets, the '
                        'aggregator that combines the frames of a tracklet: one of {}.'.format(
                            ', '.join(AGGREGATORS)))
    if layer is not None and aggregator is not None:
        raise UserError('this experiment was trained on tracklets and combines their frames '
                        'with its own --temporal_pooling {}; leave out --tracklets.'.format(
                            experiment.temporal_pooling))
    batches = image_batches(tracklets.fids, image_root, Preprocessing.of(experiment),
                            crop=crop, batch_size=batch_size, loading_threads=loading_threads)
    if layer is None:
        frames = inference_function(model)

        def combine(rows):
            return AGGREGATORS[aggregator](rows[:, None])[0]
    else:
        frames = frame_function(model, frame_features, experiment.temporal_position)
        combine = video.tracklet_function(model, layer, experiment.temporal_position)
    return video.embed_tracklets(batch_outputs(frames, batches, cameras), tracklets.bounds,
                                 combine, progress)


def as_images(images, max_pixels=MAX_IMAGE_PIXELS):
    """(images, pixels): the images a user passes, as a list of file paths and
    (H, W, 3) arrays with the pixels of each (a file's as its header declares
    them), or one (N, H, W, 3) array and None; each checked before any is
    embedded.

    Takes a path (str or os.PathLike), an (H, W, 3) or (N, H, W, 3) array or
    tensor (uint8, or float in [0, 255]), or a list or tuple of paths and
    (H, W, 3) arrays of any sizes.

    Raises:
        UserError naming what is not an image: a path that is no regular file
        (a device such as /dev/zero, a pipe, a folder), an image of more than
        `max_pixels` pixels, float pixels that are not finite or far outside
        [0, 255].
    """
    if isinstance(images, tf.Tensor):
        images = images.numpy()
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return check_pixels(images, 'the batch', max_pixels), None
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        named = [(images, 'the image')]
    elif isinstance(images, (list, tuple)):
        named = [(image, 'image {} of the list'.format(i)) for i, image in enumerate(images)]
    else:
        raise UserError('cannot embed a {}: pass file paths, an (H, W, 3) RGB array, a list of '
                        'them, or an (N, H, W, 3) batch.'.format(type(images).__name__))
    checked, pixels = [], []
    for image, what in named:
        if isinstance(image, (str, os.PathLike)):
            checked.append(os.fspath(image))
            pixels.append(check_path(checked[-1], max_pixels))
        else:
            checked.append(check_pixels(image.numpy() if isinstance(image, tf.Tensor) else image,
                                        what, max_pixels))
            pixels.append(checked[-1].shape[0] * checked[-1].shape[1])
    return checked, pixels


def check_path(path, max_pixels):
    """The pixels the image file `path` declares (0 when its header is
    unreadable, which decoding then reports), refused when it is no regular
    file, whose reading may never end, or an image too large to decode (see
    `images.declared_pixels`)."""
    if files.irregular(path):
        raise UserError('cannot embed `{}`: it is not a regular file (a device, a pipe or a '
                        'folder); pass image files.'.format(path))
    count = declared_pixels(path, max_pixels)
    if count is not None and count > max_pixels:
        raise UserError('cannot embed `{}`: it has more than {} pixels (pass max_image_pixels '
                        'to allow more); decoding it would take a lot of memory.'.format(
                            path, max_pixels))
    return count or 0


# How far float pixels may stray from [0, 255], for images resized with
# interpolation that overshoots; further out they are not pixels.
PIXEL_SLACK = 255.0

# How many values are checked at a time, so that checking a batch takes no
# more memory than embedding it.
CHECKED_VALUES = 1 << 24


def check_pixels(array, what, max_pixels=MAX_IMAGE_PIXELS):
    """`array` when it holds RGB images (..., H, W, 3) of at most
    `max_pixels` pixels each, uint8 or finite float pixels in [0, 255] (give
    or take `PIXEL_SLACK`); converted to float32 as it is embedded."""
    array = np.asarray(array)
    if array.ndim not in (3, 4) or array.shape[-1] != 3 or 0 in array.shape:
        raise UserError('{} has shape {}; an image is (H, W, 3) RGB, a batch (N, H, W, 3) (a '
                        'grayscale or RGBA image: convert it to RGB first).'.format(
                            what, array.shape))
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise UserError('{} holds {} values; pass uint8, or float in [0, 255].'.format(
            what, array.dtype))
    if array.shape[-3] * array.shape[-2] > max_pixels:
        raise UserError('{} has shape {}: images of more than {} pixels (pass max_image_pixels '
                        'to allow more) would take a lot of memory.'.format(
                            what, array.shape, max_pixels))
    if array.dtype != np.uint8:
        flat = array.reshape(-1, *array.shape[-3:]) if array.ndim == 4 else array[None]
        step = max(1, CHECKED_VALUES // (flat[0].size))
        for start in range(0, len(flat), step):
            part = flat[start:start + step]
            low, high = np.min(part), np.max(part)
            if not (np.isfinite(low) and np.isfinite(high)) or low < -PIXEL_SLACK or \
                    high > 255 + PIXEL_SLACK:
                bad = np.argmax(np.any(~np.isfinite(part) | (part < -PIXEL_SLACK) |
                                       (part > 255 + PIXEL_SLACK), axis=(1, 2, 3)))
                raise UserError('{}{} holds pixels from {} to {}; pass finite values in '
                                '[0, 255].'.format(what, ' (image {})'.format(start + bad)
                                                   if array.ndim == 4 else '', low, high))
    return array


# The most pixels embedded together (805 MB as float32 RGB): a SavedModel
# takes images at their own size, and `batch_size` photographs of 25
# megapixels would take 77 GB at once.
CHUNK_PIXELS = 1 << 26


def chunk_bounds(images, pixels, batch_size):
    """(start, end) of consecutive chunks of `images` with at most
    `batch_size` images and, beyond their first, `CHUNK_PIXELS` pixels;
    `images` and `pixels` as `as_images` returns them."""
    if pixels is None:
        rows = max(1, min(batch_size, CHUNK_PIXELS // (images.shape[1] * images.shape[2])))
        return [(start, min(start + rows, len(images))) for start in range(0, len(images), rows)]
    bounds, start, total = [], 0, 0
    for index, count in enumerate(pixels):
        if index > start and (index - start == batch_size or total + count > CHUNK_PIXELS):
            bounds.append((start, index))
            start, total = index, 0
        total += count
    return bounds + ([(start, len(images))] if len(images) > start else [])


class Embedder:
    """Embeds images with a trained, imported or exported model, as torchreid's
    `FeatureExtractor` does for PyTorch: `embedder(images)` is an (N, D)
    float32 array (see `as_images` for what `images` may be).

    `source` is an experiment root (trained by train.py or written by
    import_model.py), whose own preprocessing (its input size and resizing,
    its JPEG decoding) is applied, or a SavedModel folder of export.py, which
    resizes inside. Images are embedded `batch_size` at a time, on `device`
    (such as '/CPU:0' or '/GPU:0'; TensorFlow's choice by default); `flip`
    averages each image's embedding with its mirror image's, as embed.py's
    --flip_augment with the mean aggregator. Images of more than
    `max_image_pixels` pixels are refused, as embed.py's --max_image_pixels
    does. `metric` is the distance the model was trained for (None for a
    SavedModel), `embedding_dim` the D. A model with a camera embedding
    (SIE) takes each image's camera too, `embedder(images, cameras)`, as
    the names its table holds (`sie_cameras`; None for an image of another
    camera, and no cameras at all, embed without one).

    Everything it refuses, from the source to the pixels, raises
    `cli.UserError` naming the input, before any image is embedded.
    """

    def __init__(self, source, checkpoint=None, batch_size=256, device=None, flip=False,
                 max_image_pixels=MAX_IMAGE_PIXELS):
        for name, value in (('batch_size', batch_size), ('max_image_pixels', max_image_pixels)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UserError('{} must be a whole number of at least 1, not {!r}.'.format(
                    name, value))
        self.batch_size, self.max_pixels, self.flip = int(batch_size), int(max_image_pixels), \
            bool(flip)
        self.device = check_device(device)
        if not isinstance(source, (str, os.PathLike)):
            raise UserError('cannot load a model from a {}: pass the path of an experiment root '
                            'or of a SavedModel folder.'.format(type(source).__name__))
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise UserError('checkpoint must be the name of a checkpoint in the experiment root '
                            '(such as \'checkpoint-25000\' or \'best\'), or None for the newest; '
                            'not a {}.'.format(type(checkpoint).__name__))
        source = os.fspath(source)
        if not isinstance(source, str) or not os.path.isdir(source):
            raise UserError('`{}` is not a folder; pass an experiment root (of train.py or '
                            'import_model.py) or a SavedModel folder of export.py.'.format(
                                source))
        if os.path.lexists(os.path.join(source, 'saved_model.pb')):
            self.forward, self.embedding_dim, self.sie_cameras = load_saved_model(source)
            self.preprocessing, self.metric = None, None
            return
        model, train_args, _ = load_experiment(source, checkpoint)
        self.sie_cameras = train_args.get('sie_cameras')
        self.preprocessing = Preprocessing.of(Experiment.of(train_args))
        self.forward = inference_function(model)
        self.metric = train_args.get('metric', 'euclidean')
        self.embedding_dim = Experiment.of(train_args).embedding_dim

    def __call__(self, images, cameras=None):
        images, pixels = as_images(images, self.max_pixels)
        rows = None if cameras is None else given_cameras(cameras, self.sie_cameras, len(images))
        chunks = [self.embed_chunk(images[start:end], None if rows is None else rows[start:end])
                  for start, end in chunk_bounds(images, pixels, self.batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embedding_dim),
                                                              np.float32)

    def embed_chunk(self, images, cameras=None):
        """Embeddings (n, D) of up to `batch_size` images (with their (n,)
        camera rows): at the net's input size together, or, for a
        SavedModel, each size of image together."""
        with tf.device(self.device):
            if isinstance(images, np.ndarray) and self.preprocessing is None:
                return self.embed_batch(tf.constant(images, tf.float32), cameras)
            pixels = [self.pixels(image) for image in images]
            if self.preprocessing is not None:
                return self.embed_batch(tf.stack(pixels), cameras)
            embs = np.zeros((len(pixels), self.embedding_dim), np.float32)
            for shape in {tuple(p.shape) for p in pixels}:
                same = [i for i, p in enumerate(pixels) if tuple(p.shape) == shape]
                embs[same] = self.embed_batch(tf.stack([pixels[i] for i in same]),
                                              None if cameras is None else cameras[same])
            return embs

    def pixels(self, image):
        """One image, at the net's input size for an experiment root."""
        if isinstance(image, str):
            try:
                image = tf.cast(decode(tf.io.read_file(image), self.preprocessing is None or
                                       self.preprocessing.accurate_jpeg), tf.float32)
            except (tf.errors.OpError, ValueError) as e:
                raise UserError('cannot embed `{}`: {}'.format(
                    image, str(e).splitlines()[0][:200]))
        else:
            image = tf.constant(image, tf.float32)
        if self.preprocessing is None:
            return image
        return resize(image, self.preprocessing.net_input_size, self.preprocessing.antialias)

    def embed_batch(self, images, cameras=None):
        embs = self.forward(images, cameras).numpy()
        if self.flip:
            embs = (embs + self.forward(images[:, :, ::-1], cameras).numpy()) / 2
        return embs


def check_device(device):
    """`device` (such as '/CPU:0', or None for TensorFlow's choice), refused
    when TensorFlow cannot parse it."""
    if device is None:
        return None
    try:
        with tf.device(device):
            tf.constant(0.0).numpy()
    except (ValueError, TypeError, tf.errors.OpError) as e:
        raise UserError('device {!r} is not a device TensorFlow knows ({}); pass one such as '
                        '\'/CPU:0\' or \'/GPU:0\', or None.'.format(device, e))
    return device


# The largest saved_model.pb read: Protocol Buffers' own limit.
MAX_SAVED_MODEL_BYTES = 2 ** 31 - 1


def load_saved_model(folder):
    """(forward function (images, cameras=None) -> embeddings, embedding
    dimension, names of the table of cameras or None) of the SavedModel that
    export.py wrote to `folder`; without cameras, a model with a camera
    embedding embeds without one.

    Raises:
        UserError for a folder that is not such a SavedModel: a
        saved_model.pb that is no regular file, too large, or damaged; no
        variables; no `serving_default` signature of images to `emb`.
    """
    graph = os.path.join(folder, 'saved_model.pb')
    remedy = 'export it again with export.py'
    files.check_regular(graph, 'the SavedModel graph', remedy)
    if os.path.getsize(graph) > MAX_SAVED_MODEL_BYTES:
        raise UserError('`{}` holds more than 2 GiB, more than a SavedModel graph can; {}.'
                        .format(graph, remedy))
    if not os.path.isdir(os.path.join(folder, 'variables')):
        raise UserError('the SavedModel `{}` has no `variables` folder, so it holds no weights; '
                        '{}.'.format(folder, remedy))
    try:
        loaded = tf.saved_model.load(folder)
        signature = loaded.signatures['serving_default']
        dimension = signature.structured_outputs['emb'].shape[-1]
        if 'images' not in signature.structured_input_signature[1] or dimension is None:
            raise KeyError('images' if dimension is not None else 'the size of `emb`')
    except KeyError as e:
        raise UserError('the SavedModel `{}` has no serving signature from `images` to `emb` '
                        '(missing {}); pass a SavedModel of export.py.'.format(folder, e))
    except Exception as e:  # TensorFlow and Protocol Buffers raise many kinds for damage.
        raise UserError('cannot load the SavedModel `{}` ({}: {}); {}.'.format(
            folder, type(e).__name__, str(e).strip().splitlines()[0][:200] if str(e).strip()
            else 'damaged', remedy))
    if 'cameras' not in signature.structured_input_signature[1]:
        return (lambda images, cameras=None: signature(images=images)['emb']), int(dimension), \
            None

    def forward(images, cameras=None):
        if cameras is None:
            cameras = tf.fill(tf.shape(images)[:1], -1)
        return signature(images=images, cameras=tf.cast(cameras, tf.int32))['emb']
    table = getattr(loaded, 'sie_cameras', None)
    return forward, int(dimension), None if table is None else [
        name.decode('utf-8') for name in table.numpy()]


def load_embedder(source, checkpoint=None, batch_size=256, device=None, flip=False,
                  max_image_pixels=MAX_IMAGE_PIXELS):
    """The `Embedder` of a trained, imported or exported model (see there)."""
    return Embedder(source, checkpoint, batch_size, device, flip, max_image_pixels)
