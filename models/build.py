"""The embedding model: assembly, pretrained weights, and restoring checkpoints.

Builds a network from a `nets/` body and a `heads/` head, initialises bodies
from pretrained weights of every kind (Keras, TF2, TF1 and TF-slim), restores
an experiment's checkpoints (TF2 by object, those of the TF1 original by
variable name). This is the only module that imports `tf1_checkpoint`;
`experiment/checkpoints.py` finds the checkpoints and `models/inference.py` embeds with them.
"""

import logging
import os
import re
from importlib import import_module

import keras
import numpy as np
import tensorflow as tf

from triplet_reid import heads
from triplet_reid import nets
from triplet_reid import temporal
from triplet_reid.models import tf1_checkpoint, vit_weights
from triplet_reid.experiment.checkpoints import CheckpointFile, newest_checkpoint
from triplet_reid.experiment import check_choices
from triplet_reid.cli import UserError
from triplet_reid.cli.flags import TEMPORAL_POSITIONS
from triplet_reid.layers import pooling_layer
from triplet_reid.nets._vit import PartWeights

log = logging.getLogger('model')


def build_model(model_name, head_name, embedding_dim, mixed_precision='off', pooling='avg',
                last_stride=2, padding='torch', nested_head=False, input_size=(256, 128),
                patch_stride=16, drop_path_rate=0.1, jpm=0, sie=0, sie_weight=3.0):
    """Builds the embedding network from a `nets/` body and a `heads/` head.

    `mixed_precision` ('off', 'float16' or 'bfloat16') sets Keras' global
    dtype policy for the layers built here; the embedding layer stays float32.
    `pooling` (one of `flags.POOLINGS`) replaces the body's global
    average pooling (the `nets.POOLING_NETS` pool with it themselves);
    `last_stride` 1 halves the stride of the body's last stage, for the
    nets that take it; `padding` is how the `nets.PADDING_NETS`
    pad their strided layers (`nets.PADDINGS`). With `nested_head`, the head
    is a model of its own named `head`, so that video training can apply it
    to the temporal aggregate of the body's features (see `build_video`).
    A transformer (`nets.TRANSFORMER_NETS`) learns its position embeddings
    for `input_size` (height, width) cut every `patch_stride` pixels, drops
    residual branches in training up to `drop_path_rate`, and with `jpm`
    parts ends in TransReID's jigsaw patch module: its features are the
    global class token and each part's, which the head (`bnneck` or
    `pooled`, of all of them) keeps apart, and `emb` weighs each part
    1 / `jpm`, as TransReID's test features do. With `sie` cameras, it adds
    TransReID's camera embeddings weighted `sie_weight`, and the model takes
    {'images': images, 'cameras': (B,) int32 indices of `sie` cameras, -1
    unknown}.

    Returns:
        (model, body): `model` maps float RGB images (B, H, W, 3) in [0, 255]
        to a dict with `emb` and `emb_raw`, both (B, embedding_dim) (and
        `metric_emb` for heads that give it); `body` is its backbone, the
        part that pretrained weights are loaded into.

    Raises:
        UserError when the net cannot change its last stride.
    """
    model, body, _ = assemble(model_name, head_name, embedding_dim, mixed_precision, pooling,
                              last_stride, padding, nested_head,
                              (input_size, patch_stride, drop_path_rate, jpm, sie, sie_weight))
    return model, body


def assemble(model_name, head_name, embedding_dim, mixed_precision, pooling, last_stride,
             padding, nested_head, patches=((256, 128), 16, 0.1, 0, 0, 3.0)):
    """`build_model`'s (model, body) and the model of the body's pooled
    features (its inputs -> (B, F)); `patches` holds a transformer's input
    size, patch stride, stochastic depth, JPM parts, SIE cameras and SIE
    weight."""
    keras.mixed_precision.set_global_policy(
        'float32' if mixed_precision == 'off' else 'mixed_' + mixed_precision)
    jpm = patches[3]
    nets.check_jpm_head(model_name, head_name, embedding_dim, jpm)
    body = nets.load(model_name, last_stride, padding, *patches, pooling=pooling)
    head = heads.load(head_name)
    images = keras.Input((None, None, 3), name='images')
    if patches[4]:
        images = {'images': images, 'cameras': keras.Input((), dtype='int32', name='cameras')}
    if pooling == 'avg' or model_name in nets.POOLING_NETS:
        features = body(images)
    else:
        # The body's own pooling is its last layer; pool its input instead.
        feature_map = keras.Model(body.input, body.layers[-1].input, name=body.name + '_map')
        features = pooling_layer(pooling)(feature_map(images))
    if nested_head:
        pooled = keras.Input((features.shape[-1],), name='features')
        outputs = keras.Model(pooled, head(pooled, embedding_dim), name='head')(features)
    else:
        outputs = head(features, embedding_dim)
    if jpm:
        outputs = dict(outputs, emb=PartWeights(jpm, name='part_weights')(outputs['emb']))
    return (keras.Model(images, outputs, name='embedding_model'), body,
            keras.Model(images, features, name='frame_features'))


def takes_cameras(model):
    """Whether `model` (or body) has a camera embedding (SIE) and so takes
    {'images': images, 'cameras': camera indices}."""
    return any(tensor.name == 'cameras' for tensor in model.inputs)


def with_cameras(model, images, cameras=None):
    """The input of `model` for `images` (B, H, W, 3): the images alone, or
    for a model with a camera embedding {'images': images, 'cameras': (B,)
    int32}, the cameras -1 (unknown: no camera embedding) when None."""
    if not takes_cameras(model):
        return images
    if cameras is None:
        cameras = tf.fill(tf.shape(images)[:1], -1)
    return {'images': images, 'cameras': tf.cast(cameras, tf.int32)}


# Batch norms' variances, by the name PyTorch and Keras give them.
VARIANCE = re.compile(r'.*(running_var|moving_variance)(:0)?$')


def build_experiment(experiment, mixed_precision='off'):
    """`build_model` for an `experiment.Experiment` record: (model, body)."""
    return build_video(experiment, mixed_precision)[:2]


def build_video(experiment, mixed_precision='off'):
    """The model of an `experiment.Experiment` record, with what video
    training and embedding need beside it: (model, body, frame_features,
    temporal). `temporal` is the record's temporal aggregation layer (built,
    so that checkpoints restore into it), None for an image experiment;
    `frame_features` maps images to the body's pooled features, which the
    `head` layer of `model` takes when the aggregation comes before the head."""
    video = experiment.temporal_pooling is not None
    before_head = video and experiment.temporal_position == 'features'
    model, body, frame_features = assemble(
        experiment.model_name, experiment.head_name, experiment.embedding_dim,
        mixed_precision, experiment.pooling, experiment.last_stride, experiment.net_padding,
        before_head, (experiment.net_input_size, experiment.patch_stride,
                      experiment.drop_path_rate, experiment.jpm, experiment.sie_count,
                      experiment.sie_weight))
    layer = None
    if video:
        layer = temporal.load(experiment.temporal_pooling)
        layer.build((None, None, frame_features.output.shape[-1] if before_head
                     else experiment.embedding_dim))
    return model, body, frame_features, layer


def check_architecture(stored, args_file):
    """Refuses stored arguments (a dict read from `args_file`) that name a
    net, head or padding that does not exist.

    Raises:
        UserError naming the file, the argument and its choices.
    """
    check_choices(stored, args_file, (('model_name', nets.NET_CHOICES),
                                      ('head_name', heads.HEAD_CHOICES),
                                      ('net_padding', nets.PADDINGS),
                                      ('temporal_pooling', temporal.TEMPORAL_CHOICES + (None,)),
                                      ('temporal_position', TEMPORAL_POSITIONS)))


def check_weight_values(named, path):
    """Refuses weights that no trained network holds: a value that is NaN or
    infinite, or a batch norm's variance below zero (whose square root is
    NaN). A network holding one embeds images to values that the rest of the
    pipeline cannot tell from a trained model's (a NaN channel is normalised
    away), so it is refused where it enters, naming the tensor.

    Args:
        named: (name, array-like) pairs, such as a state dict's items.
        path (str): The file they come from, for the message.

    Raises:
        UserError naming the first such tensor and what it holds.
    """
    for name, values in named:
        values = np.asarray(values)
        if not np.issubdtype(values.dtype, np.floating):
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            raise UserError('`{}` holds {} NaN or infinite values in `{}`; it is '
                            'damaged or from a diverged training, and would embed every image '
                            'wrongly.'.format(path, int(bad.sum()), name))
        if VARIANCE.match(name) and (values < 0).any():
            raise UserError('`{}` holds {} negative variances in the batch norm `{}`; a '
                            'variance is never below zero, so the file is damaged.'.format(
                                path, int((values < 0).sum()), name))


def load_body_weights(model_name, body, path):
    """Initialises a backbone from pretrained weights (see `assign_body_weights`),
    refusing weights that are NaN, infinite or negative variances, of
    whichever kind of file they came."""
    assign_body_weights(model_name, body, path)
    check_weight_values(((weight.path, weight.numpy()) for weight in body.weights), path)


# The files of timm's and DeiT's ViT weights (`models/vit_weights.py`).
VIT_FILES = ('.pth', '.pt', '.bin', '.safetensors')


def assign_body_weights(model_name, body, path):
    """Initialises a backbone from pretrained weights.

    `path` is one of: a TF-slim or TF1 checkpoint prefix (such as the ImageNet
    `resnet_v1_50.ckpt`, or a checkpoint of the original triplet-reid), whose
    body variables are used and the rest ignored; a Keras weights file
    (`.weights.h5`, `.h5`); a TF2 checkpoint holding `body` (such as another
    experiment's checkpoint); `imagenet` for nets that can download
    ImageNet weights; or, for a vision transformer, a timm or DeiT state
    dict (`VIT_FILES`).

    Raises:
        UserError when the file is missing or holds no matching weights.
    """
    if model_name in nets.TRANSFORMER_NETS and path.endswith(VIT_FILES):
        if model_name in nets.CLIP_NETS:
            vit_weights.load_clip_weights(body, path)
        else:
            vit_weights.load_timm_weights(body, path)
        return
    if path == 'imagenet' or path.endswith(('.h5', '.keras')):
        net = import_module('triplet_reid.nets.' + model_name)
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
    path, source = initial_checkpoint_file(path)
    if source.tf1:
        tf1_checkpoint.restore(path, tf1_checkpoint.variable_map(body, body.name), strict=False,
                               what='the body of `{}`'.format(body.name))
        return
    if not any(name.startswith('body/') for name in source.shapes):
        raise UserError('the checkpoint `{}` holds no weights saved as `body`; it is not a '
                        'checkpoint of this project.'.format(path))
    problem = read_objects(path, body=body)
    if problem:
        raise UserError('the checkpoint `{}` does not fit the net `{}`: {}'.format(
            path, body.name, problem))


def read_objects(path, **objects):
    """Reads the `objects` (keyword: trackable, as `tf.train.Checkpoint`
    takes them) from the TF2 checkpoint `path`, leaving the rest of it unread.

    Returns:
        None, or the first line of why they do not fit.
    """
    try:
        status = tf.train.Checkpoint(**objects).read(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        return str(e).splitlines()[0]
    return None


def initial_checkpoint_file(path):
    """(prefix, `CheckpointFile`) of a checkpoint given as its prefix, one of
    its files, or its folder (its newest checkpoint), as users pass them."""
    if tf.io.gfile.isdir(path):
        folder, path = path, newest_checkpoint(path)
        if path is None:
            raise UserError('the folder `{}` holds no checkpoint to initialise the body from; '
                            'pass a checkpoint prefix or a Keras weights file.'.format(folder))
    path = re.sub(r'\.(index|data-\d+-of-\d+)$', '', path)
    try:
        return path, CheckpointFile(
            path, tf.train.load_checkpoint(path).get_variable_to_shape_map())
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError):
        raise UserError('`{}` is neither a Keras weights file nor a checkpoint '
                        'prefix.'.format(path))


def load_head_weights(model, path):
    """Initialises the whole `model`, head and body, from a TF2 checkpoint of
    this project (`path` as `initial_checkpoint_file` takes it) with the same
    net, head and embedding size, refusing weights that are not finite.

    Raises:
        UserError for another kind of file, or a model of another shape.
    """
    remedy = ('--initial_head needs a checkpoint of this project with the same --model_name, '
              '--head_name and --embedding_dim (such as an experiment, or a model imported '
              'with import_model.py); leave it out (--no-initial_head) to train a fresh head')
    if path == 'imagenet' or path.endswith(('.h5', '.keras')):
        raise UserError('`{}` holds a body only; {}.'.format(path, remedy))
    path, source = initial_checkpoint_file(path)
    if source.tf1 or not any(name.startswith('model/') for name in source.shapes):
        raise UserError('`{}` holds no model of this project; {}.'.format(path, remedy))
    problem = read_objects(path, model=model)
    if problem:
        raise UserError('the model of `{}` does not fit this one ({}); {}.'.format(
            path, problem[:300], remedy))
    check_weight_values(((weight.path, weight.numpy()) for weight in model.weights), path)


def restore(source, checkpoint, model, body, optimizer=None, step=None, what='the model'):
    """Restores an experiment's checkpoint `source` into the objects of `checkpoint`.

    A checkpoint of the TF1 original is read by variable name into `model`
    and `body`, and, when given, the Adam slots of `optimizer` and `step`.
    A TF2 checkpoint is restored by object; without an optimizer only the
    model is wanted and the rest of the checkpoint is left unread. Says in
    the log which of the two it is.

    Args:
        source (checkpoints.CheckpointFile): The checkpoint, read once by
            `checkpoints.read_checkpoint`, which tells its format.
        checkpoint (tf.train.Checkpoint): The objects to restore.
        what (str): Names the model in error messages.

    Raises:
        UserError when the checkpoint does not fit the model.
    """
    path = source.path
    if source.tf1:
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


