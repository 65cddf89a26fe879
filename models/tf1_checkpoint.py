"""Read checkpoints of the TF1 original and TF-slim into the Keras models here.

Three kinds of TF1 checkpoint exist on users' disks: TF-slim ImageNet
checkpoints (`resnet_v1_50.ckpt`, `mobilenet_v1_1.0_224.ckpt`, …), and full
experiment checkpoints of the original `train.py` (body, head, Adam slots and
`global_step`). Both are name-based: this module maps each Keras weight onto
its slim variable name, reads it with `tf.train.load_checkpoint` (plain TF2
API, no TF1 graph), checks its shape and reports by name what is missing or
left unused.

The Keras layers of `nets/` and `heads/` are named after slim's scopes, with
`/` written as `_` (Keras forbids it in names):

    conv1, conv1_bn               -> <net>/conv1/weights, <net>/conv1/BatchNorm/…
    block1_unit_1_conv2           -> <net>/block1/unit_1/bottleneck_v1/conv2/weights
    Conv2d_1_depthwise            -> MobilenetV1/Conv2d_1_depthwise/depthwise_weights
    fully_connected, emb (heads)  -> fully_connected/…, emb/weights, emb/biases
"""

import re

import numpy as np
import tensorflow as tf
import keras

from triplet_reid import cli

_WEIGHT_NAMES = {'bias': 'biases', 'gamma': 'gamma', 'beta': 'beta',
                 'moving_mean': 'moving_mean', 'moving_variance': 'moving_variance'}


def slim_scope(layer_name):
    """The slim variable scope of a Keras layer name, without the net's prefix."""
    scope = layer_name
    batch_norm = scope.endswith('_bn')
    if batch_norm:
        scope = scope[:-len('_bn')]
    scope = re.sub(r'^block(\d+)_unit_(\d+)_', r'block\1/unit_\2/bottleneck_v1/', scope)
    return scope + '/BatchNorm' if batch_norm else scope


def variable_map(model, prefix):
    """Maps slim variable names to the Keras variables of `model`.

    Args:
        model: A Keras model; its weighted layers are mapped by name.
        prefix (str or None): The slim scope of the model's layers, such as
            `resnet_v1_50`, or None for top-level scopes (the head).

    Returns:
        A dict {slim variable name: Keras variable}.
    """
    mapping = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model) or not layer.weights:
            continue
        scope = slim_scope(layer.name)
        if prefix:
            scope = prefix + '/' + scope
        for weight in layer.weights:
            if weight.name == 'kernel':
                name = 'depthwise_weights' if isinstance(
                    layer, keras.layers.DepthwiseConv2D) else 'weights'
            else:
                name = _WEIGHT_NAMES[weight.name]
            mapping[scope + '/' + name] = weight
    return mapping


def full_model_map(model, body):
    """The variable map of a whole embedding model: the body under its slim
    scope (its Keras name), the head's layers at the top level."""
    mapping = variable_map(body, body.name)
    mapping.update(variable_map(model, None))
    return mapping


def restore(path, mapping, strict=True, what='the model'):
    """Assigns the checkpoint's values to the mapped variables.

    Args:
        path (str): A TF1 checkpoint prefix.
        mapping (dict): {slim variable name: Keras or TF variable}.
        strict (bool): Also refuse checkpoint variables that nothing uses
            (apart from optimizer slots and counters when those are not mapped).
        what (str): Names the target in error messages.

    Returns:
        The sorted list of checkpoint variables that were not used.

    Raises:
        cli.UserError naming missing variables, shape mismatches and, when
        strict, unused variables.
    """
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    missing = sorted(name for name in mapping if name not in shapes)
    wrong = ['{} (checkpoint {}, model {})'.format(name, shapes[name], list(var.shape))
             for name, var in sorted(mapping.items())
             if name in shapes and list(shapes[name]) != list(var.shape)]
    if missing or wrong:
        problems = []
        if missing:
            problems.append('{} variables are missing from the checkpoint, e.g. {}'.format(
                len(missing), ', '.join(missing[:5])))
        if wrong:
            problems.append('{} have other shapes: {}'.format(len(wrong), '; '.join(wrong[:5])))
        raise cli.UserError('the TF1 checkpoint `{}` does not fit {}: {}.'.format(
            path, what, '; '.join(problems)))
    unused = sorted(set(shapes) - set(mapping))
    if strict:
        relevant = [name for name in unused if not _is_training_state(name)]
        if relevant:
            raise cli.UserError(
                'the TF1 checkpoint `{}` holds {} variables that {} has no place for, e.g. {}; '
                'is it a checkpoint of another net or head?'.format(
                    path, len(relevant), what, ', '.join(relevant[:5])))
    for name, var in mapping.items():
        var.assign(reader.get_tensor(name).astype(np.dtype(var.dtype)))
    return unused


def _is_training_state(name):
    return (name.endswith(('/Adam', '/Adam_1')) or name in ('global_step', 'beta1_power',
                                                            'beta2_power'))


def optimizer_map(model_map, optimizer):
    """Maps the TF1 Adam slots `<var>/Adam` and `<var>/Adam_1` onto a built
    Keras Adam optimizer's momentums and velocities."""
    # Keras 3's slot attributes are private (docs/private_apis.md).
    optimizer = getattr(optimizer, 'inner_optimizer', optimizer)  # Loss scaling wraps Adam.
    mapping = {}
    for name, var in model_map.items():
        if not var.trainable:
            continue
        index = optimizer._get_variable_index(var)
        mapping[name + '/Adam'] = optimizer._momentums[index]
        mapping[name + '/Adam_1'] = optimizer._velocities[index]
    return mapping


def restore_experiment(path, model, body, optimizer=None, step=None):
    """Loads a full checkpoint of the original train.py, strictly.

    With an optimizer and a step variable, also the Adam slots and the
    global step, so that training continues where the original stopped.

    Returns:
        The checkpoint's global step.
    """
    mapping = full_model_map(model, body)
    if optimizer is not None:
        mapping.update(optimizer_map(mapping, optimizer))
    restore(path, mapping, strict=True, what='the model {}'.format(body.name))
    reader = tf.train.load_checkpoint(path)
    global_step = int(reader.get_tensor('global_step')) if reader.has_tensor(
        'global_step') else 0
    if optimizer is not None:
        optimizer.iterations.assign(global_step)
    if step is not None:
        step.assign(global_step)
    return global_step
