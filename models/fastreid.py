"""Trained models of fast-reid (JDAI-CV/fast-reid) as experiments of this project.

fast-reid publishes BoT, AGW and SBS models (ResNet-50 and -101, with and
without IBN-a and non-local blocks) as checkpoints that hold the weights
under `model`, beside a YAML config that says what they are (with `_BASE_`
files it inherits from). `import_fastreid` reads the config as data (YAML's
safe loader: no tag of it builds an object), checks every setting the
network depends on, maps the weights (read through `torch_weights`, which
never runs what the file holds) onto the Keras ResNet of `nets/_fastreid.py`
with the `bnneck` head, and writes an experiment root as `models.zoo` does
for torchreid's.

Its MGN models (META_ARCHITECTURE MGN, ResNet-50 with or without IBN-a)
import onto `fastreid_mgn_r50[_ibn]`: the trunk (`backbone.0`…`backbone.6`,
up to stage 3's first block), the three branches (`b1`, `b2`, `b3`: stage 3's
other blocks, then stage 4) and the eight heads (`b1_head`…`b33_head`), whose
batch norms join as the model's one `bnneck` (a batch norm is per channel).

What fast-reid embeds at test time, and so what the imported model embeds:
the pooled features through BNNeck's batch norm (and its 1×1 reduction when
EMBEDDING_DIM is set), whatever NECK_FEAT says (NECK_FEAT chooses only the
feature that fast-reid's triplet loss trains); the images resized to
INPUT.SIZE_TEST; distances as TEST.METRIC says (cosine by default).
"""

import ast
import dataclasses
import os
import re
import reprlib

import numpy as np

from triplet_reid.cli import UserError
from triplet_reid.storage import files
from triplet_reid.experiment import Experiment
from triplet_reid.models import torch_weights, zoo
from triplet_reid.nets import MGN_HEADS, MGN_REDUCTION, check_stripes

# The most a config file may hold, and the most `_BASE_` files it may chain.
MAX_CONFIG_BYTES = 1 << 20
MAX_BASES = 8

# The most values and the deepest nesting that a config, and its chain of
# `_BASE_` files merged, may hold once YAML's aliases are written out (fast-reid's
# own configs hold a few hundred values, four deep). Aliases let a file of a
# few hundred bytes stand for billions of values, which merging two such
# files, or checking one, would write out.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 32

# fast-reid's defaults (fastreid/config/defaults.py) of the settings read here.
DEFAULTS = {
    'MODEL.META_ARCHITECTURE': 'Baseline', 'MODEL.BACKBONE.NAME': 'build_resnet_backbone',
    'MODEL.BACKBONE.DEPTH': '50x', 'MODEL.BACKBONE.LAST_STRIDE': 1,
    'MODEL.BACKBONE.NORM': 'BN', 'MODEL.BACKBONE.FEAT_DIM': 2048,
    'MODEL.BACKBONE.WITH_IBN': False, 'MODEL.BACKBONE.WITH_SE': False,
    'MODEL.BACKBONE.WITH_NL': False, 'MODEL.HEADS.NAME': 'EmbeddingHead',
    'MODEL.HEADS.NORM': 'BN', 'MODEL.HEADS.EMBEDDING_DIM': 0, 'MODEL.HEADS.WITH_BNNECK': False,
    'MODEL.HEADS.POOL_LAYER': 'GlobalAvgPool',
    'MODEL.PIXEL_MEAN': [0.485 * 255, 0.456 * 255, 0.406 * 255],
    'MODEL.PIXEL_STD': [0.229 * 255, 0.224 * 255, 0.225 * 255],
    'INPUT.SIZE_TEST': [256, 128], 'TEST.METRIC': 'cosine',
}

# fast-reid's backbones that import: its ResNets and its ResNeSt.
BACKBONES = ('build_resnet_backbone', 'build_resnest_backbone')

# fast-reid's pooling layers, by the name its configs give them.
POOLINGS = {'GlobalAvgPool': 'avg', 'FastGlobalAvgPool': 'avg', 'GlobalMaxPool': 'max',
            'GeneralizedMeanPooling': 'gem', 'GeneralizedMeanPoolingP': 'gem'}

# Its norms that compute, at test time, what a batch norm computes.
BATCH_NORMS = ('BN', 'syncBN', 'GhostBN', 'FrozenBN')

# What fast-reid offers that this project does not build, and why, by config value.
REFUSED = {
    'build_regnet_backbone': 'RegNet', 'build_effnet_backbone': 'EfficientNet',
    'build_osnet_backbone':
    "fast-reid's OSNet (import torchreid's OSNets instead)",
    'build_mobilenetv2_backbone': 'MobileNet v2', 'build_mobilenetv3_backbone': 'MobileNet v3',
    'build_repvgg_backbone': 'RepVGG', 'build_shufflenetv2_backbone': 'ShuffleNet v2',
    'build_resnext_backbone': 'ResNeXt',
}

# Keys of a checkpoint beside the network's weights: batch norms' counters,
# the identity classifier of the training identities (`heads.weight`; older
# versions' `heads.classifier`), and the pixel statistics that older
# versions saved (the config's are used, as fast-reid does).
IGNORED = re.compile(r'(.*\.num_batches_tracked|heads\.weight|heads\.classifier\.(weight|bias)'
                     r'|b\d+_head\.weight|pixel_mean|pixel_std)$')

# The meta architectures that import: fast-reid's one-branch models, and MGN.
META_ARCHITECTURES = ('Baseline', 'MGN')


@dataclasses.dataclass(frozen=True)
class FastReidModel:
    """What a fast-reid config makes: the net, its pooling and embedding."""
    net: str
    last_stride: int
    pooling: str
    pool_layer: str
    embedding_dim: int
    reduction: bool
    size_test: tuple
    metric: str


def read_yaml(path):
    """The mapping of one YAML file, read as data."""
    import yaml
    files.check_regular(path, 'the config', 'pass the YAML config of the model '
                        "(fast-reid's or TransReID's)")
    try:
        with open(path, 'rb') as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise UserError('`{}` holds more than {} KiB; a model\'s config is a few lines.'
                            .format(path, MAX_CONFIG_BYTES >> 10))
        data = yaml.safe_load(text.decode('utf-8'))
    except OSError as e:
        raise UserError('cannot read `{}`: {}.'.format(path, e.strerror or e))
    except UnicodeDecodeError:
        raise UserError('`{}` is not text; pass the YAML config of the model.'.format(path))
    except RecursionError:
        raise UserError('`{}` nests its settings deeper than any config; pass the YAML config '
                        'of the model.'.format(path))
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        raise UserError('`{}` is not valid YAML{}: {}.'.format(
            path, '' if mark is None else ' (line {})'.format(mark.line + 1),
            getattr(e, 'problem', None) or e))
    if not isinstance(data, dict):
        raise UserError('`{}` holds no mapping of settings; pass the YAML config of the model.'
                        .format(path))
    check_size(data, path)
    return data


def written_out(value, memo):
    """(values, depth) of `value` with every alias written out: what merging
    or walking it costs. `memo` maps the id of each mapping or list already
    measured, so that shared values (aliases) are measured once, and the
    sizes of billions come out of a file of bytes without being built."""
    if not isinstance(value, (dict, list)):
        return 1, 0
    if id(value) not in memo:
        memo[id(value)] = (1, 0)  # YAML's safe loader can make a list that holds itself.
        children = value.values() if isinstance(value, dict) else value
        measured = [written_out(child, memo) for child in children]
        memo[id(value)] = (1 + sum(count for count, _ in measured),
                           1 + max((depth for _, depth in measured), default=0))
    return memo[id(value)]


def check_size(settings, path, merged=False):
    """Refuses `settings` (of the config `path`, with its bases when `merged`)
    that hold more than `MAX_CONFIG_VALUES` values or nest deeper than
    `MAX_CONFIG_DEPTH` once YAML's aliases are written out."""
    try:
        count, depth = written_out(settings, {})
    except RecursionError:
        count, depth = 0, MAX_CONFIG_DEPTH + 1
    if count > MAX_CONFIG_VALUES or depth > MAX_CONFIG_DEPTH:
        raise UserError('`{}`{} holds {}; a model\'s config holds a few hundred settings, a few '
                        'levels deep. Pass the YAML config of the model.'.format(
                            path, ' with its `_BASE_` files' if merged else '',
                            'settings nested deeper than {} levels'.format(
                                MAX_CONFIG_DEPTH) if depth > MAX_CONFIG_DEPTH else
                            '{:,} values once its aliases are written out'.format(count)))


def merge(base, changes):
    """`base` with `changes` merged in, mapping by mapping, as fast-reid's
    `_BASE_` inheritance does."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge(merged[key], value)
        merged[key] = value
    return merged


def read_config(path):
    """The settings of the fast-reid config `path`, its `_BASE_` files (paths
    relative to the file naming them) merged under it.

    Raises:
        UserError for a file that cannot be read or is no config, and a chain
        of bases that loops or runs longer than `MAX_BASES`.
    """
    chain, seen = [], set()
    while path is not None:
        if os.path.realpath(path) in seen or len(chain) > MAX_BASES:
            raise UserError('the `_BASE_` files of `{}` {}.'.format(chain and chain[0][0] or path,
                            'loop' if os.path.realpath(path) in seen else
                            'chain more than {} deep'.format(MAX_BASES)))
        seen.add(os.path.realpath(path))
        data = read_yaml(path)
        chain.append((path, data))
        base = data.pop('_BASE_', None)
        if base is not None and (not isinstance(base, str) or '\0' in base):
            raise UserError('`{}` names a `_BASE_` that is not a path.'.format(path))
        path = None if base is None else os.path.join(os.path.dirname(path), base)
    settings = {}
    for _, data in reversed(chain):
        settings = merge(settings, data)
    # Each file is bounded, so merging them cost at most their sum; the
    # merged settings are bounded as one file is.
    check_size(settings, chain[0][0], merged=True)
    return settings


def setting(settings, key, path, defaults=None):
    """The config's value of `key` (dotted, as `MODEL.BACKBONE.DEPTH`), or
    the default of `defaults` (fast-reid's `DEFAULTS` unless given)."""
    defaults = DEFAULTS if defaults is None else defaults
    value = settings
    for part in key.split('.'):
        if not isinstance(value, dict) or part not in value:
            return defaults[key]
        value = value[part]
    expected = type(defaults[key])
    if expected is list and isinstance(literal(value), tuple):
        # The peers' YAML writes tuples as text, `(16, 16)`, which their yacs
        # reads as a Python literal; so does this, as data.
        value = list(literal(value))
    # A number where the import needs a whole one (a dimension, a stride)
    # would reach Keras as a float.
    if isinstance(value, bool) != (expected is bool) or not isinstance(
            value, (int, float) if expected is float else expected):
        raise UserError('`{}` sets {} to `{}`, which is not a {}.'.format(
            path, key, shown(value), {str: 'name', list: 'list', bool: 'boolean',
                                      int: 'whole number'}.get(expected, 'number')))
    return value


def config_readers(settings, path, defaults):
    """(get, refuse) of a peer's config `settings` (read from `path`): `get(key)`
    its value of `key` or the default of `defaults` (see `setting`), and
    `refuse(key, what)`, which raises UserError naming the file, the setting,
    its value and `what` would import."""
    def get(key):
        return setting(settings, key, path, defaults)

    def refuse(key, what):
        raise UserError('`{}` sets {} to `{}`: {}.'.format(path, key, shown(get(key)), what))
    return get, refuse


def literal(value):
    """The Python literal that a config's text `value` writes, as the
    peers' yacs reads it (`(16, 16)`, `('market1501')`), by `ast`'s literal
    reader, which evaluates nothing else; None for other values."""
    if not isinstance(value, str) or len(value) > 1000:
        return None
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def shown(value):
    """A config value as a message shows it: a name as it is, anything else
    through reprlib, which bounds its text (YAML's aliases can make a value
    of billions of elements)."""
    return value if isinstance(value, str) else reprlib.repr(value)


def refuse(path, key, value, supported):
    raise UserError('`{}` sets {} to `{}`{}; what imports is {}.'.format(
        path, key, shown(value),
        ', ' + REFUSED[value] + ', which this project does not build'
        if isinstance(value, str) and value in REFUSED else '', supported))


def model_of_config(settings, path):
    """The `FastReidModel` of a config's `settings` (read from `path`).

    Raises:
        UserError naming the first setting this project cannot build, and what it can.
    """
    def get(key):
        return setting(settings, key, path)

    mgn = get('MODEL.META_ARCHITECTURE') == 'MGN'
    for key, wanted in (('MODEL.META_ARCHITECTURE', META_ARCHITECTURES),
                        ('MODEL.BACKBONE.NAME', BACKBONES[:1] if mgn else BACKBONES),
                        ('MODEL.HEADS.NAME', ('EmbeddingHead',))):
        if get(key) not in wanted:
            refuse(path, key, get(key), ' or '.join(wanted) +
                   " (fast-reid's BoT, AGW, SBS and MGN models{})".format(
                       ', MGN on its ResNet' if mgn else ''))
    resnest = get('MODEL.BACKBONE.NAME') == 'build_resnest_backbone'
    depth = get('MODEL.BACKBONE.DEPTH')
    if depth not in (('50x',) if resnest or mgn else ('50x', '101x')):
        refuse(path, 'MODEL.BACKBONE.DEPTH', depth, '50x' if resnest or mgn else '50x or 101x')
    for key in ('MODEL.BACKBONE.NORM', 'MODEL.HEADS.NORM'):
        if get(key) not in BATCH_NORMS:
            refuse(path, key, get(key), ', '.join(BATCH_NORMS))
    if get('MODEL.BACKBONE.WITH_SE'):
        refuse(path, 'MODEL.BACKBONE.WITH_SE', True, 'False (no squeeze-and-excitation)')
    if not get('MODEL.HEADS.WITH_BNNECK'):
        refuse(path, 'MODEL.HEADS.WITH_BNNECK', False, 'True (the BNNeck of BoT, AGW and SBS)')
    if get('MODEL.BACKBONE.FEAT_DIM') != 2048:
        refuse(path, 'MODEL.BACKBONE.FEAT_DIM', get('MODEL.BACKBONE.FEAT_DIM'),
               "2048 (a ResNet's)")
    if get('MODEL.HEADS.POOL_LAYER') not in POOLINGS:
        refuse(path, 'MODEL.HEADS.POOL_LAYER', get('MODEL.HEADS.POOL_LAYER'),
               ', '.join(POOLINGS))
    if get('MODEL.BACKBONE.LAST_STRIDE') not in (1, 2):
        refuse(path, 'MODEL.BACKBONE.LAST_STRIDE', get('MODEL.BACKBONE.LAST_STRIDE'), '1 or 2')
    if get('TEST.METRIC') not in ('cosine', 'euclidean'):
        refuse(path, 'TEST.METRIC', get('TEST.METRIC'), 'cosine or euclidean')
    for key in ('MODEL.PIXEL_MEAN', 'MODEL.PIXEL_STD'):
        value = get(key)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if len(value) != 3 or not numbers or not np.allclose(value, DEFAULTS[key], atol=1e-3):
            refuse(path, key, value, "ImageNet's, times 255 (fast-reid's default)")
    size = get('INPUT.SIZE_TEST')
    if len(size) != 2 or not all(isinstance(n, int) and 16 <= n <= 4096 for n in size):
        refuse(path, 'INPUT.SIZE_TEST', size, '[height, width], each from 16 to 4096')
    embedding_dim = get('MODEL.HEADS.EMBEDDING_DIM')
    if not 0 <= embedding_dim <= 65536:
        refuse(path, 'MODEL.HEADS.EMBEDDING_DIM', embedding_dim, '0 (none) to 65536')
    ibn = '_ibn' if get('MODEL.BACKBONE.WITH_IBN') else ''
    pool_layer = get('MODEL.HEADS.POOL_LAYER')
    if mgn:
        return mgn_model(get, path, ibn, pool_layer)
    # fast-reid's ResNeSt builder reads neither IBN nor non-local blocks
    # (AGW_S50 inherits WITH_NL), so its models have none.
    net = 'fastreid_s50' if resnest else 'fastreid_r{}{}{}'.format(
        depth[:-1], ibn, '_nl' if get('MODEL.BACKBONE.WITH_NL') else '')
    return FastReidModel(net, get('MODEL.BACKBONE.LAST_STRIDE'), POOLINGS[pool_layer],
                         pool_layer, embedding_dim or 2048,
                         embedding_dim > 0, tuple(size), get('TEST.METRIC'))


def mgn_model(get, path, ibn, pool_layer):
    """The `FastReidModel` of an MGN config (read from `path`, its settings
    by `get`) whose other settings `model_of_config` checked; `ibn` is the
    net name's suffix, `pool_layer` its heads' pooling."""
    if get('MODEL.HEADS.EMBEDDING_DIM') != MGN_REDUCTION:
        refuse(path, 'MODEL.HEADS.EMBEDDING_DIM', get('MODEL.HEADS.EMBEDDING_DIM'),
               "{} (fast-reid's MGN configs)".format(MGN_REDUCTION))
    # MGN's branches are built from the ResNet's stages, which hold no
    # non-local blocks, so fast-reid's MGN has none whatever WITH_NL says.
    net = 'fastreid_mgn_r50' + ibn
    check_stripes(net, get('INPUT.SIZE_TEST'))
    return FastReidModel(net, get('MODEL.BACKBONE.LAST_STRIDE'), POOLINGS[pool_layer],
                         pool_layer, len(MGN_HEADS) * MGN_REDUCTION, True,
                         tuple(get('INPUT.SIZE_TEST')), get('TEST.METRIC'))


def module_layers(body, found):
    """{fast-reid module: Keras layer} for the layers with weights of the
    Keras model of `found` (a `FastReidModel`) whose body is `body`: the
    backbone's by name (`layer1.0.bn1.IN` is `layer1_0_bn1_IN`), the head's
    pooling, reduction and batch norm."""
    if found.net.startswith('fastreid_mgn'):
        return mgn_module_layers(body)
    pairs = {'backbone.' + layer.name.replace('_', '.').replace('NL.', 'NL_'): layer.name
             for layer in body.layers if layer.weights}
    pairs['heads.pool_layer'] = 'gem_pool'
    neck = ['emb'] if not found.reduction else ['reduction', 'emb']
    pairs.update({'heads.bottleneck.{}'.format(i): layer for i, layer in enumerate(neck)})
    return pairs


# fast-reid's MGN numbers the modules of its trunk (an `nn.Sequential` of the
# ResNet's stem and stages) and of each branch (stage 3's other blocks, then
# stage 4): Keras layer name prefix -> module prefix.
MGN_TRUNK = (('conv1', 'backbone.0'), ('bn1', 'backbone.1'), ('layer1.', 'backbone.4.'),
             ('layer2.', 'backbone.5.'), ('layer3.0.', 'backbone.6.'))

# The module whose tensors are the eight heads' batch norms joined, which
# `as_keras_shapes` makes for the model's one batch norm.
MGN_NECK = 'heads.bottleneck.1'


def mgn_module_layers(body):
    """`module_layers` of MGN (`nets/_fastreid.py`): `layer3_0_conv1` is
    `backbone.6.conv1`, `b2_layer3_1_conv1` `b2.0.0.conv1` (stage 3's
    second block, the first of the branch's copy), `b2_layer4_0_conv1`
    `b2.1.0.conv1`, `b21_head_pool` `b21_head.pool_layer` and
    `b21_head_reduction` `b21_head.bottleneck.0`."""
    pairs = {MGN_NECK: 'emb'}
    for layer in (layer for layer in body.layers if layer.weights):
        branch, _, rest = layer.name.partition('_')
        if branch in MGN_HEADS and rest.startswith('head_'):
            part = {'head_pool': 'pool_layer', 'head_reduction': 'bottleneck.0'}[rest]
            pairs['{}_head.{}'.format(branch, part)] = layer.name
        elif branch in MGN_HEADS:
            stage, block, module = rest.split('_', 2)
            pairs['{}.{}.{}.{}'.format(branch, int(stage == 'layer4'),
                                       int(block) - (stage == 'layer3'),
                                       module.replace('_', '.'))] = layer.name
        else:
            dotted = layer.name.replace('_', '.')
            keras_prefix, module = next((k, m) for k, m in MGN_TRUNK if dotted.startswith(k))
            pairs[module + dotted[len(keras_prefix):]] = layer.name
    return pairs


def as_keras_shapes(state, found, path):
    """fast-reid's tensors (of the checkpoint `path`) in the shapes the Keras layers take them: the
    reduction's 1×1 convolution as a dense kernel, GeM's exponent a scalar,
    and the fixed exponent 3 of `GeneralizedMeanPooling` (AGW's), which
    fast-reid keeps as a number rather than a weight; MGN's eight heads'
    batch norms joined in the order of its test feature (`MGN_NECK`)."""
    state = dict(state)
    heads = MGN_HEADS if found.net.startswith('fastreid_mgn') else ('heads',)
    for head in heads:
        module = head if head == 'heads' else head + '_head'
        if found.pool_layer == 'GeneralizedMeanPooling':
            state[module + '.pool_layer.p'] = np.array(3.0, np.float32)
        kernel = state.get(module + '.bottleneck.0.weight', np.zeros(0))
        if kernel.ndim == 4 and kernel.shape[2:] == (1, 1):
            state[module + '.bottleneck.0.weight'] = kernel[:, :, 0, 0]
        if state.get(module + '.pool_layer.p', np.zeros(0)).shape == (1,):
            state[module + '.pool_layer.p'] = state[module + '.pool_layer.p'].reshape(())
    if heads == MGN_HEADS:
        for part in ('weight', 'bias', 'running_mean', 'running_var'):
            keys = ['{}_head.bottleneck.1.{}'.format(head, part) for head in heads]
            for key in keys:
                if state.get(key, np.zeros(0)).shape != (MGN_REDUCTION,):
                    raise UserError('`{}` {} `{}`{}; MGN\'s heads each end in a batch norm of '
                                    '{}.'.format(path, 'holds' if key in state else 'lacks', key,
                                                 ' of shape {}'.format(state[key].shape)
                                                 if key in state else '', MGN_REDUCTION))
            state[MGN_NECK + '.' + part] = np.concatenate([state.pop(key) for key in keys])
    return state


def import_fastreid(path, config, experiment_root):
    """Writes the fast-reid checkpoint `path`, made by the config file
    `config`, as the experiment root `experiment_root`, which must not exist
    yet: it appears whole or not at all.

    Returns:
        The experiment's arguments (as stored in `args.json`).

    Raises:
        UserError for a config this project cannot build, a file that is not
        the checkpoint of that config, or a root that exists.
    """
    from triplet_reid.models.build import build_experiment, check_weight_values

    zoo.check_new_root(experiment_root)
    found = model_of_config(read_config(config), config)
    state = torch_weights.read_state_dict(path)
    if not any(key.startswith('backbone.') for key in state):
        raise UserError('`{}` is not a fast-reid checkpoint: it has no `backbone.` weights{}.'
                        .format(path, '; it looks like a torchreid OSNet, which imports without '
                                '--config' if 'conv1.conv.weight' in state else ''))
    check_weight_values(state.items(), path)
    classifier = next((state[key] for key in ('heads.weight', 'heads.classifier.weight',
                                              'b1_head.weight') if key in state), None)
    height, width = found.size_test
    experiment = Experiment(found.net, 'bnneck', found.embedding_dim, found.pooling,
                            found.last_stride, 'torch', height, width, height, width,
                            antialias=True, accurate_jpeg=True)
    args = zoo.experiment_arguments(experiment, found.metric, path, classifier, config)
    model, body = build_experiment(experiment)
    zoo.assign_state(model, body, as_keras_shapes(state, found, path), path,
                     module_layers(body, found),
                     IGNORED, "fast-reid's {} of `{}`".format(found.net, config))
    zoo.write_experiment(experiment_root, model, body, args)
    return args

