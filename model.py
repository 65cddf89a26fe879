"""The embedding model: assembly, pretrained weights, and restoring checkpoints.

Builds a network from a `nets/` body and a `heads/` head, initialises bodies
from pretrained weights of every kind (Keras, TF2, TF1 and TF-slim), restores
an experiment's checkpoints (TF2 by object, those of the TF1 original by
variable name), and gives the compiled inference function that embed.py,
validation and export use. This is the only module that imports
`tf1_checkpoint`; `experiment.py` finds the checkpoints.
"""

import inspect
import logging
import os
import re
from importlib import import_module

import keras
import numpy as np
import tensorflow as tf

import sampler
import tf1_checkpoint
from experiment import find_checkpoint, newest_checkpoint, read_args
from aggregators import AGGREGATORS
from common import UserError
from nets import LAST_STRIDE_NETS
from nets._layers import pooling_layer

log = logging.getLogger('model')


def build_model(model_name, head_name, embedding_dim, mixed_precision='off', pooling='avg',
                last_stride=2):
    """Builds the embedding network from a `nets/` body and a `heads/` head.

    `mixed_precision` ('off', 'float16' or 'bfloat16') sets Keras' global
    dtype policy for the layers built here; the embedding layer stays float32.
    `pooling` (one of `nets._layers.POOLINGS`) replaces the body's global
    average pooling; `last_stride` 1 halves the stride of the body's last
    stage, for the nets that take it.

    Returns:
        (model, body): `model` maps float RGB images (B, H, W, 3) in [0, 255]
        to a dict with `emb` and `emb_raw`, both (B, embedding_dim) (and
        `metric_emb` for heads that give it); `body` is its backbone, the
        part that pretrained weights are loaded into.

    Raises:
        UserError when the net cannot change its last stride.
    """
    keras.mixed_precision.set_global_policy(
        'float32' if mixed_precision == 'off' else 'mixed_' + mixed_precision)
    net = import_module('nets.' + model_name)
    if last_stride != 2:
        if 'last_stride' not in inspect.signature(net.body).parameters:
            raise UserError('--last_stride {} works with the nets {}, not with `{}`.'.format(
                last_stride, ', '.join(LAST_STRIDE_NETS), model_name))
        body = net.body(last_stride=last_stride)
    else:
        body = net.body()
    head = import_module('heads.' + head_name).head
    images = keras.Input((None, None, 3), name='images')
    if pooling == 'avg':
        features = body(images)
    else:
        # The body's own pooling is its last layer; pool its input instead.
        feature_map = keras.Model(body.input, body.layers[-1].input, name=body.name + '_map')
        features = pooling_layer(pooling)(feature_map(images))
    outputs = head(features, embedding_dim)
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
    # Users pass a checkpoint's files or its folder as often as its prefix.
    if tf.io.gfile.isdir(path):
        folder, path = path, newest_checkpoint(path)
        if path is None:
            raise UserError('the folder `{}` holds no checkpoint to initialise the body from; '
                            'pass a checkpoint prefix or a Keras weights file.'.format(folder))
    path = re.sub(r'\.(index|data-\d+-of-\d+)$', '', path)
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


def restore(path, checkpoint, model, body, optimizer=None, step=None, what='the model'):
    """Restores an experiment's checkpoint `path` into the objects of `checkpoint`.

    A checkpoint of the TF1 original is read by variable name into `model`
    and `body`, and, when given, the Adam slots of `optimizer` and `step`.
    A TF2 checkpoint is restored by object; without an optimizer only the
    model is wanted and the rest of the checkpoint is left unread. Says in
    the log which of the two it is.

    Args:
        path (str): The checkpoint prefix.
        checkpoint (tf.train.Checkpoint): The objects to restore.
        what (str): Names the model in error messages.

    Raises:
        UserError when the checkpoint does not fit the model.
    """
    try:
        tf1 = tf1_checkpoint.is_tf1_checkpoint(path)
    except tf.errors.OpError as e:
        raise UserError('the checkpoint `{}` is damaged ({}); move it away to use the one '
                        'before it.'.format(path, str(e).splitlines()[0]))
    if tf1:
        log.info('Continuing the TF1 experiment from its checkpoint %s (%s, by variable name).',
                 path, 'model' if optimizer is None else 'model, Adam slots and global step')
        tf1_checkpoint.restore_experiment(path, model, body, optimizer, step)
        return
    log.info('Restoring from checkpoint: %s', path)
    try:
        status = checkpoint.restore(path)
        if optimizer is None:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise UserError('the checkpoint `{}` does not fit {}: {}'.format(
            path, what, str(e).splitlines()[0]))
    except (tf.errors.OpError, IndexError) as e:
        raise UserError('the checkpoint `{}` is damaged ({}); move it away to use the one '
                        'before it.'.format(path, str(e).splitlines()[0]))


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
    path = find_checkpoint(experiment_root, checkpoint)
    model, body = build_model(train_args['model_name'], train_args['head_name'],
                              train_args['embedding_dim'], pooling=train_args['pooling'],
                              last_stride=train_args['last_stride'])
    restore(path, tf.train.Checkpoint(model=model), model, body,
            what='the model of `{}`'.format(os.path.join(experiment_root, 'args.json')))
    return model, train_args, path


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
        progress: called with (done, total) forward passes after each batch.

    Returns:
        (embs (N, D) float32, emb_aug (A, N, D) float32 or None with one
        version, names: the A versions' names).
    """
    net_input_size = (train_args['net_input_height'], train_args['net_input_width'])
    pre_crop_size = (train_args['pre_crop_height'], train_args['pre_crop_width'])
    if crop in ('center', 'five') and (pre_crop_size[0] < net_input_size[0] or
                                       pre_crop_size[1] < net_input_size[1]):
        raise UserError('--crop_augment {} takes crops of the net input size {}x{} from the '
                        'image resized to the experiment\'s pre-crop size {}x{}, which is '
                        'smaller; this experiment was trained without crops, so embed without '
                        '--crop_augment (or with avgpool).'.format(crop, *net_input_size,
                                                                    *pre_crop_size))
    names = sampler.augmentation_names(flip, crop)
    dataset = sampler.image_batches(fids, image_root, net_input_size, pre_crop_size, flip, crop,
                                    batch_size, loading_threads, train_args['antialias'],
                                    train_args['accurate_jpeg'])
    forward = inference_function(model)
    total = len(fids) * len(names)
    embs = np.zeros((total, train_args['embedding_dim']), np.float32)
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
    size = (train_args['net_input_height'], train_args['net_input_width'])
    antialias = train_args['antialias']
    forward = inference_function(model)

    def embed(images):
        if isinstance(images, (list, tuple)) and images and isinstance(images[0], str):
            images = tf.stack([sampler.load_image(path, size, antialias,
                                                  train_args['accurate_jpeg'])
                               for path in images])
        images = sampler.resize(tf.cast(images, tf.float32), size, antialias)
        return np.concatenate([forward(images[i:i + batch_size]).numpy()
                               for i in range(0, len(images), batch_size)] or
                              [np.zeros((0, train_args['embedding_dim']), np.float32)])
    return embed
