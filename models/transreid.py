"""Trained models of TransReID (damo-cv/TransReID) as experiments of this project.

TransReID saves its model's state dict: the ViT backbone under `base.`, its
BNNeck `bottleneck` and classifier, and with its jigsaw patch module (JPM)
the branches `b1` (global) and `b2` (local) and one BNNeck and classifier a
part. Its YAML config says what was built: the backbone
(MODEL.TRANSFORMER_TYPE), the patch stride (MODEL.STRIDE_SIZE), JPM
(MODEL.JPM, with MODEL.DEVIDE_LENGTH parts), the test size and which
features it tests with (TEST.NECK_FEAT: `before` or `after` the BNNeck,
each part weighted 1 / parts; TEST.FEAT_NORM: cosine distance). The import
builds the same model (`vit_small_16` or `vit_base_16`, JPM as --jpm, head
`bnneck` or `pooled`), maps the weights by name and writes an experiment
root; the file is read as data, the config by YAML's safe loader.

What does not import yet is refused by name: the camera and view embedding
(SIE), TransReID's own ViT-Small (768 wide, 8 blocks, a scale of its own),
its ResNet-50, and statistics or JPM settings other than its defaults.
"""

import dataclasses

import numpy as np

from triplet_reid import nets
from triplet_reid.cli import UserError
from triplet_reid.experiment import Experiment
from triplet_reid.models import fastreid, torch_weights, vit_weights, zoo

# TransReID's defaults (config/defaults.py) of the settings read here.
DEFAULTS = {
    'MODEL.NAME': 'resnet50',
    'MODEL.TRANSFORMER_TYPE': 'None',
    'MODEL.STRIDE_SIZE': [16, 16],
    'MODEL.DROP_PATH': 0.1,
    'MODEL.JPM': False,
    'MODEL.RE_ARRANGE': True,
    'MODEL.SHIFT_NUM': 5,
    'MODEL.SHUFFLE_GROUP': 2,
    'MODEL.DEVIDE_LENGTH': 4,
    'MODEL.SIE_CAMERA': False,
    'MODEL.SIE_VIEW': False,
    'MODEL.SIE_COE': 3.0,
    'DATASETS.NAMES': 'market1501',
    'MODEL.NECK': 'bnneck',
    'INPUT.SIZE_TRAIN': [384, 128],
    'INPUT.SIZE_TEST': [384, 128],
    'INPUT.PIXEL_MEAN': [0.485, 0.456, 0.406],
    'INPUT.PIXEL_STD': [0.229, 0.224, 0.225],
    'TEST.NECK_FEAT': 'after',
    'TEST.FEAT_NORM': 'yes',
}

# TransReID's backbones by the name its configs give them.
NETS = {'vit_base_patch16_224_TransReID': 'vit_base_16',
        'deit_base_patch16_224_TransReID': 'vit_base_16',
        'deit_small_patch16_224_TransReID': 'vit_small_16'}

# The blocks of every backbone that imports (ViT-B/16, DeiT-S/16).
DEPTH = 12

# What a TransReID state dict holds that the embedding does not use: the
# classifiers, the backbone's own, the batch norms' step counts.
IGNORED = ('classifier', 'base.fc.')


def is_transreid_config(settings):
    """Whether the settings of a YAML config are TransReID's (a
    `MODEL.TRANSFORMER_TYPE`, or its `transformer` model) rather than fast-reid's."""
    model = settings.get('MODEL')
    return isinstance(model, dict) and ('TRANSFORMER_TYPE' in model or
                                        model.get('NAME') == 'transformer')


def experiment_of_config(settings, path):
    """(Experiment, metric) of a TransReID config's `settings`.

    Raises:
        UserError naming the setting that this project does not build.
    """
    get, refuse = fastreid.config_readers(settings, path, DEFAULTS)

    if get('MODEL.NAME') != 'transformer':
        refuse('MODEL.NAME', "TransReID's ResNet-50 does not import; its transformers do")
    if get('MODEL.TRANSFORMER_TYPE') not in NETS:
        refuse('MODEL.TRANSFORMER_TYPE', 'what imports is {}{}'.format(
            ', '.join(NETS), " (TransReID's own vit_small is 768 wide and 8 blocks deep, a "
                             "shape of its own, which this project does not build)"
            if get('MODEL.TRANSFORMER_TYPE') == 'vit_small_patch16_224_TransReID' else ''))
    camera_regex = sie_settings(get, refuse)
    for key, wanted in (('MODEL.SHIFT_NUM', 5), ('MODEL.SHUFFLE_GROUP', 2),
                        ('MODEL.RE_ARRANGE', True), ('MODEL.NECK', 'bnneck'),
                        ('TEST.NECK_FEAT', ('before', 'after')),
                        ('TEST.FEAT_NORM', ('yes', 'no'))):
        if get(key) not in (wanted if isinstance(wanted, tuple) else (wanted,)):
            refuse(key, 'what imports is {}'.format(wanted))
    size, stride = input_settings(get, refuse, 'TransReID')
    if not 0 <= get('MODEL.DROP_PATH') <= 0.9:
        refuse('MODEL.DROP_PATH', 'what imports is a probability from 0 to 0.9, as '
                                  '--drop_path_rate takes it')
    net = NETS[get('MODEL.TRANSFORMER_TYPE')]
    parts = get('MODEL.DEVIDE_LENGTH') if get('MODEL.JPM') else 0
    width = nets.TRANSFORMER_WIDTHS[net] * (1 + parts)
    head = 'bnneck' if get('TEST.NECK_FEAT') == 'after' else 'pooled'
    experiment = Experiment(net, head, width, 'avg', 2, 'torch', size[0], size[1], size[0],
                            size[1], antialias=True, accurate_jpeg=True,
                            patch_stride=stride, drop_path_rate=float(get('MODEL.DROP_PATH')),
                            jpm=parts, sie_weight=float(get('MODEL.SIE_COE')))
    nets.check_transformer(net, 'avg', tuple(size), stride, parts)
    return experiment, 'cosine' if get('TEST.FEAT_NORM') == 'yes' else 'euclidean', camera_regex


# The cameras' regular expressions of the datasets that TransReID's and
# CLIP-ReID's configs name (DATASETS.NAMES): both number camera k of these
# as k - 1, the row of its embedding (SIE).
DATASET_CAMERAS = {'market1501': r'_c(\d+)', 'dukemtmc': r'_c(\d+)', 'occ_duke': r'_c(\d+)',
                   'msmt17': r'(?:^|/)\d+_\d+_(\d+)_[^/]*$'}


def sie_settings(get, refuse):
    """With the camera embedding (SIE) of a TransReID or CLIP-ReID config:
    the cameras' regular expression of its dataset ('' for a dataset of
    other names, None without SIE).

    Raises:
        UserError (from `refuse`) for the view embedding, which needs views
        that person re-id has none of, and a weight that is not finite.
    """
    if get('MODEL.SIE_VIEW'):
        refuse('MODEL.SIE_VIEW', 'the view embedding needs each image\'s view (the vehicle '
                                 'datasets\' front or back), which this project does not read; '
                                 'the camera embedding (SIE_CAMERA) imports')
    if not get('MODEL.SIE_CAMERA'):
        return None
    if not abs(get('MODEL.SIE_COE')) < 1e4:
        refuse('MODEL.SIE_COE', 'what imports is a finite weight, as --sie_weight takes it')
    return DATASET_CAMERAS.get(dataset_name(get('DATASETS.NAMES')), '')


def dataset_name(names):
    """The dataset a config's DATASETS.NAMES names, lower case: the configs
    write it as a name, as text of a Python literal (`('market1501')`,
    which yacs reads as a literal), or as a tuple of one; '' for anything
    else."""
    if fastreid.literal(names) is not None:
        names = fastreid.literal(names)
    if isinstance(names, (tuple, list)) and len(names) == 1:
        names = names[0]
    return names.lower() if isinstance(names, str) else ''


def with_cameras(experiment, table, path, name):
    """`experiment` with the camera embedding of the state dict's `table`
    (cameras × D, TransReID's with a middle axis of 1), whose row k is camera
    k + 1 (see `DATASET_CAMERAS`).

    Raises:
        UserError for a missing table or one of another width.
    """
    if table is None:
        raise UserError('`{}` lacks `{}`, the camera embedding that its config turns on '
                        '(SIE_CAMERA); is it the checkpoint of this config?'.format(path, name))
    table = np.asarray(table)
    width = nets.TRANSFORMER_WIDTHS[experiment.model_name]
    if table.ndim not in (2, 3) or table.shape[-1] != width or table.size // width != \
            table.shape[0] or not 0 < table.shape[0] <= nets.MAX_SIE_CAMERAS:
        raise UserError('`{}` holds `{}` of shape {}, where a camera embedding of at most {} '
                        'cameras of width {} was expected; is it the checkpoint of this '
                        'config?'.format(path, name, table.shape, nets.MAX_SIE_CAMERAS, width))
    return dataclasses.replace(experiment, sie_cameras=[str(k + 1) for k in range(len(table))])


def input_settings(get, refuse, peer):
    """(size, stride) of the input settings of a config of TransReID's or of
    a peer that shares its settings (`peer`, CLIP-ReID): the test size
    (height, width) and the patch stride; `get` reads a setting, `refuse`
    refuses one.

    Raises:
        UserError (from `refuse`) for statistics other than 0.5, a stride
        that differs between the axes, a test size other than the training
        size (the position embeddings are learnt for its grid).
    """
    for key in ('INPUT.PIXEL_MEAN', 'INPUT.PIXEL_STD'):
        if list(get(key)) != [0.5, 0.5, 0.5]:
            refuse(key, 'what imports is [0.5, 0.5, 0.5], as every {} config gives'.format(peer))
    stride = get('MODEL.STRIDE_SIZE')
    if len(stride) != 2 or stride[0] != stride[1] or not isinstance(stride[0], int):
        refuse('MODEL.STRIDE_SIZE', 'what imports is one whole stride for both axes')
    size = get('INPUT.SIZE_TEST')
    if list(get('INPUT.SIZE_TRAIN')) != list(size) or len(size) != 2 or not all(
            isinstance(side, int) for side in size):
        refuse('INPUT.SIZE_TEST', '{} tests at its training size (INPUT.SIZE_TRAIN), two '
                                  'whole numbers'.format(peer))
    return size, stride[0]


def body_state(state, experiment):
    """The tensors of the backbone and, with JPM, its branches, by timm's
    names: `base.` taken off, the backbone's last block and norm left out
    with JPM (TransReID keeps them in the file, but its JPM model runs its
    branches instead)."""
    last = 'base.blocks.{}.'.format(DEPTH - 1)
    body = {}
    for key, value in state.items():
        if key.startswith(IGNORED) or key.endswith('num_batches_tracked'):
            continue
        if key.startswith('base.'):
            if experiment.jpm and key.startswith((last, 'base.norm.')):
                continue
            body[key[len('base.'):]] = value
        elif key.startswith(('b1.', 'b2.')):
            body[key] = value
    return body


def neck_state(state, names, path):
    """The BNNeck's tensors of the head as one batch norm over the batch
    norms `names`, a dict of each name (TransReID's `bottleneck`, and with
    JPM each part's `bottleneck_k` after it) to its width."""
    neck = {}
    for part in ('weight', 'bias', 'running_mean', 'running_var'):
        for name, width in names.items():
            key = name + '.' + part
            if key not in state:
                raise UserError('`{}` lacks `{}`; is it the checkpoint of this config?'.format(
                    path, key))
            if np.shape(state[key]) != (width,):
                raise UserError('`{}` holds `{}` of shape {}, where the BNNeck of this config '
                                'takes {} values; is it the checkpoint of this config?'.format(
                                    path, key, np.shape(state[key]), width))
        neck[part] = np.concatenate([state[name + '.' + part] for name in names])
    return neck


def assign_neck(model, state, names, path, source):
    """Sets the BNNeck of the head `bnneck` of `model` from the batch norms
    `names` of `state` (see `neck_state`)."""
    layer = model.get_layer('emb')
    layer.set_weights([np.asarray(a, np.float32) for a in torch_weights.keras_weights(
        layer, neck_state(state, names, path), path, next(iter(names)), source)])


def import_transreid(path, config, experiment_root):
    """Writes the TransReID checkpoint `path`, made by the config file
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
    experiment, metric, camera_regex = experiment_of_config(fastreid.read_config(config), config)
    state = torch_weights.read_state_dict(path)
    if not any(key.startswith('base.') for key in state):
        raise UserError('`{}` is not a TransReID checkpoint: it has no `base.` weights.'.format(
            path))
    if camera_regex is not None:
        experiment = with_cameras(experiment, state.get('base.sie_embed'), path,
                                  'base.sie_embed')
    check_weight_values(state.items(), path)
    classifier = state.get('classifier.weight')
    vit_weights.check_config_grid(state.get('base.pos_embed'), experiment, path, config)
    model, body = build_experiment(experiment)
    source = "TransReID's {} of `{}`".format(experiment.model_name, config)
    vit_weights.assign_vit(body, body_state(state, experiment), path, source)
    if experiment.head_name == 'bnneck':
        width = nets.TRANSFORMER_WIDTHS[experiment.model_name]
        names = ['bottleneck'] + ['bottleneck_{}'.format(k) for k in range(1, experiment.jpm + 1)]
        assign_neck(model, state, dict.fromkeys(names, width), path, source)
    args = zoo.experiment_arguments(experiment, metric, path, classifier, config,
                                    **sie_arguments(camera_regex))
    zoo.write_experiment(experiment_root, model, body, args)
    return args


def sie_arguments(camera_regex):
    """What args.json stores beside an imported camera embedding: the
    cameras' regular expression of the config's dataset, which embed.py
    uses unless given another (none for a dataset of other names)."""
    return {} if camera_regex is None else {'camera_regex': camera_regex or None}
