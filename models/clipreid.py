"""Trained models of CLIP-ReID (Syliz517/CLIP-ReID) as experiments of this
project.

CLIP-ReID fine-tunes CLIP's image encoder for re-id. Its model's state dict
holds that encoder under `image_encoder.` (OpenAI's names, the position
embeddings already at the grid of its input size), two BNNecks
(`bottleneck`, 768 wide, on the class token after the last norm;
`bottleneck_proj`, 512 wide, on that token projected to the text space),
their classifiers, and for its prompt learning the text encoder and the
prompts, which the embedding does not use. Its YAML config says what was
built: the encoder (MODEL.NAME `ViT-B-16`), the patch stride
(MODEL.STRIDE_SIZE), the test size, and which features it tests with:
TEST.NECK_FEAT `before` (the published configs) concatenates the two
features, `after` the two BNNecks' outputs; TEST.FEAT_NORM gives cosine
distance. The import builds `clipreid_vit_base_16`, whose feature is that
concatenation (1280 values), with head `pooled` or `bnneck` (one batch norm
over both BNNecks' values, which is the same, a batch norm acting on each
value alone), maps the weights by name and writes an experiment root. Both
of CLIP-ReID's configs import: its baseline (vit_base.yml) and its two-stage
prompt model (vit_clipreid.yml), which build the same image model.

With MODEL.SIE_CAMERA (commented out in its published configs), its camera
embedding `cv_embed` imports too, added to the class token as CLIP-ReID
adds it; embed.py then needs each image's camera (see models/transreid.py).
What does not import is refused by name: the view embedding, CLIP-ReID's
ResNet-50 (`RN50`), and statistics other than its 0.5.
"""


from triplet_reid.cli import UserError
from triplet_reid.experiment import Experiment
from triplet_reid import nets
from triplet_reid.models import fastreid, torch_weights, transreid, vit_weights, zoo

# CLIP-ReID's defaults (config/defaults.py) of the settings read here.
DEFAULTS = {
    'MODEL.NAME': 'resnet50',
    'MODEL.STRIDE_SIZE': [16, 16],
    'MODEL.DROP_PATH': 0.1,
    'MODEL.SIE_CAMERA': False,
    'MODEL.SIE_VIEW': False,
    'MODEL.SIE_COE': 3.0,
    'DATASETS.NAMES': 'market1501',
    'MODEL.NECK': 'bnneck',
    'MODEL.COS_LAYER': False,
    'INPUT.SIZE_TRAIN': [384, 128],
    'INPUT.SIZE_TEST': [384, 128],
    'INPUT.PIXEL_MEAN': [0.485, 0.456, 0.406],
    'INPUT.PIXEL_STD': [0.229, 0.224, 0.225],
    'TEST.NECK_FEAT': 'after',
    'TEST.FEAT_NORM': 'yes',
}

# CLIP-ReID's encoders by the name its configs give them: ViT-B/16 imports,
# ResNet-50 is refused.
MODEL_NAMES = ('ViT-B-16', 'RN50')
NET = 'clipreid_vit_base_16'

# The batch norms of CLIP-ReID's BNNecks by width, in the order of the
# features they follow.
NECKS = {'bottleneck': 768, 'bottleneck_proj': 512}


def is_clipreid_config(settings):
    """Whether the settings of a YAML config are CLIP-ReID's: a MODEL.NAME of
    CLIP's encoders."""
    model = settings.get('MODEL')
    return isinstance(model, dict) and model.get('NAME') in MODEL_NAMES


def experiment_of_config(settings, path):
    """(Experiment, metric) of a CLIP-ReID config's `settings`.

    Raises:
        UserError naming the setting that this project does not build.
    """
    get, refuse = fastreid.config_readers(settings, path, DEFAULTS)

    if get('MODEL.NAME') != 'ViT-B-16':
        refuse('MODEL.NAME', "CLIP-ReID's ResNet-50 (its attention-pooled CLIP RN50) does not "
                             'import; its ViT-B-16 does')
    camera_regex = transreid.sie_settings(get, refuse)
    for key, wanted in (('MODEL.NECK', 'bnneck'), ('MODEL.COS_LAYER', False),
                        ('TEST.NECK_FEAT', ('before', 'after')),
                        ('TEST.FEAT_NORM', ('yes', 'no'))):
        if get(key) not in (wanted if isinstance(wanted, tuple) else (wanted,)):
            refuse(key, 'what imports is {}'.format(wanted))
    size, stride = transreid.input_settings(get, refuse, 'CLIP-ReID')
    if not 0 <= get('MODEL.DROP_PATH') <= 0.9:
        refuse('MODEL.DROP_PATH', 'what imports is a probability from 0 to 0.9, as '
                                  '--drop_path_rate takes it')
    head = 'bnneck' if get('TEST.NECK_FEAT') == 'after' else 'pooled'
    experiment = Experiment(NET, head, sum(NECKS.values()), 'avg', 2, 'torch', size[0], size[1],
                            size[0], size[1], antialias=True, accurate_jpeg=True,
                            patch_stride=stride, drop_path_rate=float(get('MODEL.DROP_PATH')),
                            sie_weight=float(get('MODEL.SIE_COE')))
    nets.check_transformer(NET, 'avg', tuple(size), stride)
    return experiment, 'cosine' if get('TEST.FEAT_NORM') == 'yes' else 'euclidean', camera_regex


def import_clipreid(path, config, experiment_root):
    """Writes the CLIP-ReID checkpoint `path`, made by the config file
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
    # CLIP-ReID's load_param strips DataParallel's `module.`, so its files may hold it.
    state = {key[len('module.'):] if key.startswith('module.') else key: value
             for key, value in state.items()}
    if not any(key.startswith('image_encoder.') for key in state):
        raise UserError('`{}` is not a CLIP-ReID checkpoint: it has no `image_encoder.` '
                        'weights.'.format(path))
    encoder = {key: value for key, value in state.items() if key.startswith('image_encoder.')}
    if camera_regex is not None:
        # CLIP-ReID keeps its camera embedding beside the encoder, which adds it.
        experiment = transreid.with_cameras(experiment, state.get('cv_embed'), path, 'cv_embed')
        encoder['image_encoder.sie_embed'] = state['cv_embed']
    check_weight_values(encoder.items(), path)
    # Everything is checked before the model is built, which takes seconds.
    body_state = vit_weights.clip_state(encoder, path, projection=True)
    vit_weights.check_config_grid(body_state['pos_embed'], experiment, path, config)
    if experiment.head_name == 'bnneck':
        necks = {key: value for key, value in state.items() if key.startswith(tuple(NECKS))}
        check_weight_values(necks.items(), path)
        transreid.neck_state(necks, NECKS, path)
    model, body = build_experiment(experiment)
    source = "CLIP-ReID's ViT-B-16 of `{}`".format(config)
    vit_weights.assign_vit(body, body_state, path, source)
    if experiment.head_name == 'bnneck':
        transreid.assign_neck(model, necks, NECKS, path, source)
    args = zoo.experiment_arguments(experiment, metric, path, state.get('classifier.weight'),
                                    config, **transreid.sie_arguments(camera_regex))
    zoo.write_experiment(experiment_root, model, body, args)
    return args
