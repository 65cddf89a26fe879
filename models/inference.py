"""Embedding images with a trained experiment: the compiled forward pass, the
batches of test-time augmented images, and the embedder for Python users.

embed.py, search.py, export.py, validation and `load_embedder` share these,
so that every way of embedding resizes, crops and aggregates alike.
"""

import os

import numpy as np
import tensorflow as tf

from inputs.images import Preprocessing, augmentation_names, image_batches, load_image, resize
from aggregators import AGGREGATORS
from cli import UserError
from cli.checkpoints import find_checkpoint
from cli.experiment import Experiment, read_args
from models.build import build_experiment, check_architecture, restore


def load_experiment(experiment_root, checkpoint=None):
    """Builds the experiment's model and restores a checkpoint.

    Args:
        experiment_root (str): A folder with `args.json` and checkpoints.
        checkpoint (str or None): A checkpoint name inside the root, or None for
            the latest.

    Returns:
        (model, train_args, checkpoint_path).
    """
    train_args = read_args(experiment_root)
    if train_args is None:
        raise UserError('`args.json` could not be found in `{}`; is it an experiment '
                        'root written by train.py?'.format(experiment_root))
    check_architecture(train_args, os.path.join(experiment_root, 'args.json'))
    found = find_checkpoint(experiment_root, checkpoint)
    model, body = build_experiment(Experiment.of(train_args))
    restore(found, tf.train.Checkpoint(model=model), model, body,
            what='the model of `{}`'.format(os.path.join(experiment_root, 'args.json')))
    return model, train_args, found.path


def inference_function(model):
    """The compiled forward pass: images (B, H, W, 3) -> embeddings (B, D).

    Without AutoGraph: the nets have no Python control flow on tensors, and
    converting Keras' code cost a second of each embed.py run."""
    return tf.function(lambda images: model(images, training=False)['emb'], autograph=False,
                       reduce_retracing=True)


def embed_files(model, train_args, fids, image_root, flip=False, crop=None, aggregator=None,
                batch_size=256, loading_threads=8, progress=None):
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
    for images in dataset:
        embs[done:done + len(images)] = forward(images).numpy()
        done += len(images)
        if progress is not None:
            progress(done, total)
    if len(names) == 1:
        return embs, None, names
    # (N*A, D) -> (A, N, D): one slice per augmentation, as the original.
    emb_aug = embs.reshape(len(fids), len(names), -1).transpose(1, 0, 2)
    return AGGREGATORS[aggregator](emb_aug), emb_aug, names


def load_embedder(experiment_root, checkpoint=None, batch_size=256):
    """A function that embeds images with a trained experiment.

    The returned `embed(images)` takes a list of image file paths, or a uint8
    or float array (N, H, W, 3) with values in [0, 255], resizes them to the
    network's input size and returns their embeddings as an (N, D) float32
    array.
    """
    model, train_args, _ = load_experiment(experiment_root, checkpoint)
    experiment = Experiment.of(train_args)
    preprocessing = Preprocessing.of(experiment)
    size, antialias = preprocessing.net_input_size, preprocessing.antialias
    forward = inference_function(model)

    def embed(images):
        if isinstance(images, (list, tuple)) and images and isinstance(images[0], str):
            images = tf.stack([load_image(path, size, antialias, preprocessing.accurate_jpeg)
                               for path in images])
        images = resize(tf.cast(images, tf.float32), size, antialias)
        return np.concatenate([forward(images[i:i + batch_size]).numpy()
                               for i in range(0, len(images), batch_size)] or
                              [np.zeros((0, experiment.embedding_dim), np.float32)])
    return embed
