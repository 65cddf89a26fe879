"""fast-reid's vision transformer (`build_vit_backbone`, its bagtricks_vit
config) as an experiment of this project.

fast-reid's ViT-Base is TransReID's backbone without its camera embedding
(fast-reid's builder passes no cameras): 16×16 patches every STRIDE_SIZE
pixels, a class token, learnt position embeddings for the grid of
SIZE_TRAIN, 12 blocks of width 768 and the class token after the last norm
as the feature, which its EmbeddingHead passes through (POOL_LAYER Identity)
to its BNNeck; fast-reid tests with the features after the neck, by cosine.
Its pixels are scaled to [-1, 1] (PIXEL_MEAN and PIXEL_STD 127.5), as
`vit_base_16` scales them. The import builds `vit_base_16` with head
`bnneck`, maps `backbone.` onto timm's names and the neck by name, and
writes an experiment root.

Refused by name: its ViT-Small (8 blocks of width 768 with 8 heads, a
shape of its own), a reduction in the head (EMBEDDING_DIM), and statistics
other than 127.5. import_model.py sends fast-reid configs with
`build_vit_backbone` here and the others to `models/fastreid.py`.
"""


from triplet_reid import nets
from triplet_reid.experiment import Experiment
from triplet_reid.models import fastreid, torch_weights, transreid, vit_weights, zoo

BACKBONE = 'build_vit_backbone'
NET = 'vit_base_16'

# fast-reid's defaults (fastreid/config/defaults.py) of the ViT settings read here.
DEFAULTS = dict(fastreid.DEFAULTS, **{
    'MODEL.BACKBONE.DEPTH': 'base', 'MODEL.BACKBONE.FEAT_DIM': 768,
    'MODEL.BACKBONE.STRIDE_SIZE': [16, 16], 'MODEL.BACKBONE.DROP_PATH_RATIO': 0.1,
    'MODEL.HEADS.POOL_LAYER': 'Identity', 'INPUT.SIZE_TRAIN': [256, 128]})

# What a fast-reid ViT checkpoint holds that the embedding does not use.
IGNORED = ('heads.weight', 'heads.classifier.', 'pixel_mean', 'pixel_std')


def is_vit_config(settings):
    """Whether a fast-reid config's settings build its vision transformer."""
    backbone = settings.get('MODEL', {}).get('BACKBONE') if isinstance(
        settings.get('MODEL'), dict) else None
    return isinstance(backbone, dict) and backbone.get('NAME') == BACKBONE


def experiment_of_config(settings, path):
    """(Experiment, metric) of a fast-reid ViT config's `settings`.

    Raises:
        UserError naming the setting that this project does not build.
    """
    get, refuse = fastreid.config_readers(settings, path, DEFAULTS)

    if get('MODEL.META_ARCHITECTURE') != 'Baseline':
        refuse('MODEL.META_ARCHITECTURE', 'what imports with a ViT is Baseline')
    if get('MODEL.BACKBONE.DEPTH') != 'base':
        refuse('MODEL.BACKBONE.DEPTH', "fast-reid's ViT-Small is 768 wide and 8 blocks deep with "
                                       'a scale of its own, a shape this project does not build; '
                                       'its base imports')
    for key, wanted in (('MODEL.HEADS.NAME', 'EmbeddingHead'), ('MODEL.HEADS.WITH_BNNECK', True),
                        ('MODEL.HEADS.POOL_LAYER', 'Identity'), ('MODEL.BACKBONE.FEAT_DIM', 768),
                        ('MODEL.HEADS.EMBEDDING_DIM', 0)):
        if get(key) != wanted:
            refuse(key, 'what imports with a ViT is {}'.format(wanted))
    for key in ('MODEL.BACKBONE.NORM', 'MODEL.HEADS.NORM'):
        if get(key) not in fastreid.BATCH_NORMS:
            refuse(key, 'what imports is one of {}'.format(', '.join(fastreid.BATCH_NORMS)))
    for key in ('MODEL.PIXEL_MEAN', 'MODEL.PIXEL_STD'):
        if list(get(key)) != [127.5, 127.5, 127.5]:
            refuse(key, 'what imports with a ViT is [127.5, 127.5, 127.5], as its config gives')
    if get('TEST.METRIC') not in ('cosine', 'euclidean'):
        refuse('TEST.METRIC', 'what imports is cosine or euclidean')
    stride = get('MODEL.BACKBONE.STRIDE_SIZE')
    if len(stride) != 2 or stride[0] != stride[1] or not isinstance(stride[0], int):
        refuse('MODEL.BACKBONE.STRIDE_SIZE', 'what imports is one whole stride for both axes')
    size = get('INPUT.SIZE_TEST')
    if list(get('INPUT.SIZE_TRAIN')) != list(size) or len(size) != 2 or not all(
            isinstance(side, int) for side in size):
        refuse('INPUT.SIZE_TEST', "fast-reid's ViT takes only its training size "
                                  '(INPUT.SIZE_TRAIN), two whole numbers')
    if not 0 <= get('MODEL.BACKBONE.DROP_PATH_RATIO') <= 0.9:
        refuse('MODEL.BACKBONE.DROP_PATH_RATIO', 'what imports is a probability from 0 to 0.9, '
                                                 'as --drop_path_rate takes it')
    nets.check_transformer(NET, 'avg', tuple(size), stride[0])
    experiment = Experiment(NET, 'bnneck', nets.TRANSFORMER_WIDTHS[NET], 'avg', 2, 'torch',
                            size[0], size[1], size[0], size[1], antialias=True,
                            accurate_jpeg=True, patch_stride=stride[0],
                            drop_path_rate=float(get('MODEL.BACKBONE.DROP_PATH_RATIO')))
    return experiment, get('TEST.METRIC')


def import_fastreid_vit(path, config, experiment_root):
    """Writes the fast-reid ViT checkpoint `path`, made by the config file
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
    experiment, metric = experiment_of_config(fastreid.read_config(config), config)
    state = torch_weights.read_state_dict(path)
    classifier = state.get('heads.weight', state.get('heads.classifier.weight'))
    state = {key: value for key, value in state.items()
             if not key.startswith(IGNORED) and not key.endswith('num_batches_tracked')}
    check_weight_values(state.items(), path)
    body = {key[len('backbone.'):]: value for key, value in state.items()
            if key.startswith('backbone.')}
    vit_weights.check_config_grid(body.get('pos_embed'), experiment, path, config)
    necks = {key[len('heads.'):]: value for key, value in state.items()
             if key.startswith('heads.bottleneck.0.')}
    neck_names = {'bottleneck.0': nets.TRANSFORMER_WIDTHS[NET]}
    transreid.neck_state(necks, neck_names, path)
    model, built = build_experiment(experiment)
    source = "fast-reid's ViT of `{}`".format(config)
    vit_weights.assign_vit(built, body, path, source)
    transreid.assign_neck(model, necks, neck_names, path, source)
    args = zoo.experiment_arguments(experiment, metric, path, classifier, config)
    zoo.write_experiment(experiment_root, model, built, args)
    return args
