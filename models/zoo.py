"""Trained re-id models of torchreid as experiments of this project.

torchreid's model zoo publishes OSNet (and its AIN and IBN variants, and
ResNet-50) trained on Market-1501, DukeMTMC-reID, MSMT17 and more as PyTorch
state dicts. `import_torchreid` reads one (through
`torch_weights`, which never runs what the file holds), maps its tensors
onto the Keras OSNet of `nets/_osnet.py` with torchreid's padding and
torchreid's embedding head (`heads/fc_bn_relu.py`), or onto the ResNet-50
of `nets/torchreid_resnet50.py`, and writes an
experiment root (`args.json`, `checkpoint-0`) that embed.py, search.py,
export.py and evaluate.py use as a trained one, and that train.py's
--initial_checkpoint fine-tunes from.
"""

import dataclasses
import hashlib
import os
import re

import numpy as np

from triplet_reid.storage import files
from triplet_reid.models import torch_weights
from triplet_reid.cli import UserError
from triplet_reid.experiment import Experiment

# The net of each variant (None, 'ibn' or 'ain': see nets/_osnet.py) and
# stem width (conv1's output channels). torchreid has OSNet-IBN at x1.0 only.
OSNET_NETS = {
    (None, 64): 'osnet', (None, 48): 'osnet_x0_75', (None, 32): 'osnet_x0_5',
    (None, 16): 'osnet_x0_25', ('ain', 64): 'osnet_ain', ('ain', 48): 'osnet_ain_x0_75',
    ('ain', 32): 'osnet_ain_x0_5', ('ain', 16): 'osnet_ain_x0_25', ('ibn', 64): 'osnet_ibn',
}
VARIANT_OF = {net: variant for (variant, _), net in OSNET_NETS.items()}

# A key that only each variant's state dict holds: OSNet-AIN's streams are
# `LightConvStream`s in a list, OSNet-IBN's first block has an `IN`.
VARIANT_KEYS = (('ain', 'conv2.0.conv2.0.layers.0.conv1.weight'), ('ibn', 'conv2.0.IN.weight'))

# torchreid's test-time input.
INPUT_SIZE = (256, 128)

# The streams of an OSBlock: torchreid's conv2a..conv2d, our stream1..stream4.
STREAMS = {'conv2a': 1, 'conv2b': 2, 'conv2c': 3, 'conv2d': 4}

# Keys a state dict may hold beside the network's weights: batch norms'
# counters, and the identity classifier of the training identities, which
# another training set cannot use.
IGNORED = re.compile(r'(.*\.num_batches_tracked|classifier\.(weight|bias))$')


def module_layers(variant=None):
    """{torchreid module: Keras layer} for every layer with weights of the
    OSNet `variant` (None, 'ibn' or 'ain'), at any width."""
    stem_norm = 'conv1_bn' if variant is None else 'conv1_in'
    pairs = [('conv1.conv', 'conv1_conv'), ('conv1.bn', stem_norm)]
    for stage in (2, 3, 4):
        for block in (0, 1):
            theirs, ours = 'conv{}.{}.'.format(stage, block), 'conv{}_{}_'.format(stage, block + 1)
            for module, layer in (('conv1', 'reduce'), ('conv3', 'expand'),
                                  ('downsample', 'shortcut')):
                pairs += [(theirs + module + '.conv', ours + layer + '_conv'),
                          (theirs + module + '.bn', ours + layer + '_bn')]
            pairs += [(theirs + 'gate.fc1', ours + 'gate_fc1'),
                      (theirs + 'gate.fc2', ours + 'gate_fc2'), (theirs + 'IN', ours + 'in')]
            for depth in range(1, 5):
                for index in range(depth):
                    module = theirs + stream_module(variant, depth, index)
                    for part, kind in (('conv1', 'pointwise'), ('conv2', 'depthwise'),
                                       ('bn', 'bn')):
                        pairs.append((module + '.' + part, '{}stream{}_{}_{}'.format(
                            ours, depth, index + 1, kind)))
        if stage < 4:
            # OSNet-AIN names a stage's closing convolution `pool<stage>`.
            theirs = 'pool{}.0'.format(stage) if variant == 'ain' else 'conv{}.2.0'.format(stage)
            pairs += [(theirs + '.conv', 'conv{}_transition_conv'.format(stage)),
                      (theirs + '.bn', 'conv{}_transition_bn'.format(stage))]
    pairs += [('conv5.conv', 'conv5_conv'), ('conv5.bn', 'conv5_bn'), ('fc.0', 'fc'),
              ('fc.1', 'fc_bn')]
    return dict(pairs)


def stream_module(variant, depth, index):
    """torchreid's name of the `index`th light convolution of the stream of
    `depth` in a block: `conv2a`, `conv2b.0`.. in OSNet and OSNet-IBN,
    `conv2.0.layers.0`, `conv2.1.layers.0`.. in OSNet-AIN."""
    if variant == 'ain':
        return 'conv2.{}.layers.{}'.format(depth - 1, index)
    stream = 'conv2' + 'abcd'[depth - 1]
    return stream if depth == 1 else '{}.{}'.format(stream, index)


# The axes that turn a PyTorch kernel into a Keras one, by the Keras layer's
# class: (O, I, kh, kw) -> (kh, kw, I, O), depthwise (C, 1, kh, kw) ->
# (kh, kw, C, 1), dense (O, I) -> (I, O); PyTorch's instance norm's scale and
# shift are Keras' group norm's as they are.
def assign(model, body, state, path):
    """Sets the weights of `model` (its `body` included) from the torchreid
    OSNet `state` dict read from `path` (see `assign_state`)."""
    assign_state(model, body, state, path, module_layers(VARIANT_OF[body.name]), IGNORED,
                 "torchreid's " + body.name)


def assign_state(model, body, state, path, layer_of, ignored, source):
    """Sets the weights of `model` (its `body` included) from the PyTorch
    `state` dict read from `path`, each module's tensors into the layer
    `layer_of` names; keys that `ignored` matches are left out. `source`
    names the network in messages.

    Raises:
        UserError naming the first key that is missing, left over, or of
        another shape than the layer takes.
    """
    modules = {}
    for key, array in state.items():
        if ignored.fullmatch(key):
            continue
        module, _, part = key.rpartition('.')
        if module not in layer_of:
            raise UserError('`{}` holds `{}`, which {} has no place for; is it another '
                            'architecture?'.format(path, key, source))
        modules.setdefault(module, {})[part] = array
    module_of = {layer: module for module, layer in layer_of.items()}
    for layer in body.layers + model.layers:
        # The body, and the view of it that pools other than by average
        # (`build_model`), are models whose layers are the body's.
        if not layer.weights or hasattr(layer, 'layers'):
            continue
        module = module_of[layer.name]
        if module not in modules:
            raise UserError('`{}` lacks the weights of `{}`; is it a state dict of {}?'.format(
                path, module, source))
        layer.set_weights([np.asarray(a, np.float32) for a in torch_weights.keras_weights(
            layer, modules.pop(module), path, module, body.name)])
    if modules:
        module, tensors = next(iter(modules.items()))
        raise UserError('`{}` holds `{}.{}`, which {} has no place for.'.format(
            path, module, next(iter(tensors)), body.name))


def choose_net(state, path, model_name=None):
    """(net, embedding size) of the torchreid OSNet in `state`: its variant
    from the keys only it holds, its width from its stem; the net is checked
    against `model_name` when given."""
    stem = state.get('conv1.conv.weight')
    variant = next((variant for variant, key in VARIANT_KEYS if key in state), None)
    if any(key.startswith('backbone.') for key in state):
        raise UserError('`{}` looks like a fast-reid checkpoint (its weights are under '
                        '`backbone.`); pass the YAML config it was trained with as --config.'
                        .format(path))
    if stem is None or stem.ndim != 4 or (variant, stem.shape[0]) not in OSNET_NETS:
        raise UserError('`{}` is not a torchreid OSNet state dict: it has no `conv1.conv.weight` '
                        'of the stem channels of {}.'.format(path, ', '.join(
                            '{} ({})'.format(net, stem) for (_, stem), net in OSNET_NETS.items())))
    found = OSNET_NETS[variant, stem.shape[0]]
    if model_name is not None and model_name != found:
        raise UserError('`{}` holds {} (a stem of {} channels), not {}; leave out --model_name '
                        'or pass {}.'.format(path, found, stem.shape[0], model_name, found))
    fc = state.get('fc.0.weight')
    if fc is None or fc.ndim != 2:
        raise UserError('`{}` has no embedding layer `fc.0.weight`; only torchreid\'s OSNet '
                        'with its 512-d fc layer is read.'.format(path))
    return found, fc.shape[0]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def experiment_arguments(experiment, metric, path, classifier, config=None, **extra):
    """The `args.json` of a model imported from the weights file `path`, an
    `Experiment` record: what embedding needs, with the source's distance
    `metric`, and where it came from: the number of training identities of
    its `classifier` (its weights, a row each; None when the file has none)
    and the YAML `config` it was made with (`extra` adds more). Nothing
    trained it here: no training set and no augmentation."""
    classes = None if classifier is None else int(classifier.shape[0])
    if config is not None:
        extra = dict(extra, imported_config=os.path.abspath(config))
    return dict(dataclasses.asdict(experiment), **{
        'crop_augment': False, 'flip_augment': False, 'metric': metric,
        'mixed_precision': 'off', 'train_set': None, 'image_root': None,
        'imported_from': os.path.abspath(path), 'imported_sha256': sha256(path),
        'imported_classes': classes,
    }, **extra)


def check_new_root(experiment_root):
    """Refuses an experiment root that exists or cannot be made."""
    if os.path.lexists(experiment_root):
        raise UserError('`{}` exists already; import into a new --experiment_root (nothing '
                        'was written).'.format(experiment_root))
    files.check_writable(experiment_root, '--experiment_root', folder=True)


def write_experiment(experiment_root, model, body, args):
    """Writes `checkpoint-0` of `model` (and `body`) and `args.json` into a
    folder beside `experiment_root`, then renames it into place, refusing a
    root that another process made meanwhile.

    Raises:
        UserError when it cannot be written; nothing is left behind then.
    """
    import tensorflow as tf
    try:
        with files.output(experiment_root, directory=True, replace=False) as partial:
            checkpoint = tf.train.Checkpoint(model=model, body=body,
                                             step=tf.Variable(0, dtype=tf.int64))
            tf.train.CheckpointManager(checkpoint, partial, max_to_keep=None,
                                       checkpoint_name='checkpoint').save(checkpoint_number=0)
            files.write_json(os.path.join(partial, 'args.json'), args)
    except (OSError, tf.errors.OpError) as e:
        raise UserError('cannot write the experiment root `{}`: {}; nothing was written.'.format(
            experiment_root, getattr(e, 'strerror', None) or getattr(e, 'message', None) or e))


def resnet_experiment(state, path, model_name=None):
    """The `Experiment` of torchreid's ResNet-50 in `state`: `resnet50_fc512`
    (last stride 1, its fc layer as the `fc_bn_relu` head) when the file has
    the fc layer, `resnet50` (last stride 2, the pooled features as they are)
    when not."""
    if model_name not in (None, 'torchreid_resnet50'):
        raise UserError('`{}` holds torchreid\'s ResNet-50, not {}; leave out --model_name or '
                        'pass torchreid_resnet50.'.format(path, model_name))
    blocks = {key.split('.')[1] for key in state if key.startswith('layer3.')}
    if len(blocks) != 6:
        raise UserError('`{}` holds a torchreid ResNet of {} blocks in its third stage; only '
                        'ResNet-50 (6) imports.'.format(path, len(blocks)))
    fc = state.get('fc.0.weight')
    height, width = INPUT_SIZE
    if fc is None:
        return Experiment('torchreid_resnet50', 'pooled', 2048, 'avg', 2, 'torch', height,
                          width, height, width, antialias=True, accurate_jpeg=True)
    return Experiment('torchreid_resnet50', 'fc_bn_relu', int(fc.shape[0]), 'avg', 1, 'torch',
                      height, width, height, width, antialias=True, accurate_jpeg=True)


def resnet_layers(body):
    """{torchreid module: Keras layer} of torchreid's ResNet-50, named alike
    (`layer1.0.bn1` is `layer1_0_bn1`), and its fc layer."""
    pairs = {layer.name.replace('_', '.'): layer.name for layer in body.layers if layer.weights}
    return dict(pairs, **{'fc.0': 'fc', 'fc.1': 'fc_bn'})


def import_torchreid(path, experiment_root, model_name=None):
    """Writes the torchreid state dict `path` (an OSNet of any width or
    variant, or ResNet-50 with or without its 512-d fc layer) as the
    experiment root `experiment_root`, which must not exist yet: it appears
    whole or not at all, with torchreid's test-time preprocessing (the whole
    image resized to 256×128, ImageNet's mean and deviation inside the net)
    and the distances its model zoo evaluates with (cosine for OSNet-AIN,
    Euclidean otherwise).

    Returns:
        The experiment's arguments (as stored in `args.json`).

    Raises:
        UserError for a file that is not such a state dict, or a root that exists.
    """
    from triplet_reid.models.build import build_experiment, check_weight_values

    check_new_root(experiment_root)
    state = torch_weights.read_state_dict(path)
    check_weight_values(state.items(), path)
    classifier = state.get('classifier.weight')
    if 'layer1.0.conv1.weight' in state and 'conv1.weight' in state:
        experiment = resnet_experiment(state, path, model_name)
        model, body = build_experiment(experiment)
        layer_of, metric = resnet_layers(body), 'euclidean'
    else:
        model_name, embedding_dim = choose_net(state, path, model_name)
        height, width = INPUT_SIZE
        experiment = Experiment(model_name, 'fc_bn_relu', embedding_dim, 'avg', 2, 'torch',
                                height, width, height, width, antialias=True,
                                accurate_jpeg=True)
        model, body = build_experiment(experiment)
        layer_of = module_layers(VARIANT_OF[model_name])
        # torchreid's model zoo evaluates OSNet-AIN with cosine distances, the
        # others with Euclidean ones.
        metric = 'cosine' if VARIANT_OF[model_name] == 'ain' else 'euclidean'
    args = experiment_arguments(experiment, metric, path, classifier)
    assign_state(model, body, state, path, layer_of, IGNORED, "torchreid's " + body.name)
    write_experiment(experiment_root, model, body, args)
    return args
