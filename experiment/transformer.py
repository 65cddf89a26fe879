"""Training a vision transformer (`nets.TRANSFORMER_NETS`): train.py's
flags for its patches, its stochastic depth and TransReID's jigsaw patch
module and side information embedding. TensorFlow-free, so that --help
answers at once.
"""

from triplet_reid import nets
from triplet_reid.cli import UserError, flags
from triplet_reid.experiment import Experiment


def add_flags(group):
    """Adds the transformer flags to train.py's model `group`."""
    group.add_argument(
        '--patch_stride', default=Experiment.patch_stride,
        type=flags.int_between(1, nets.PATCH_SIZE),
        help='For the vision transformers ({}): the stride, in pixels, of their 16×16 patches. '
             'Below 16 the patches overlap (TransReID\'s overlapping patch embedding; it uses '
             '12), more tokens at more compute. Stored with the experiment.'.format(
                 ', '.join(nets.TRANSFORMER_NETS)))
    group.add_argument(
        '--drop_path_rate', default=Experiment.drop_path_rate, type=flags.float_between(0, 0.9),
        help='For the vision transformers: stochastic depth, the probability of dropping the '
             'last block\'s residual branches for a sample in training, rising linearly from '
             '0 at the first block (TransReID and timm: 0.1).')
    group.add_argument(
        '--jpm', default=Experiment.jpm, type=flags.int_between(0, 16),
        help='For the vision transformers: TransReID\'s jigsaw patch module with this many '
             'parts (TransReID: 4; 0: none). The last block runs twice: on all tokens (the '
             'global feature) and on the patches, shifted, shuffled and cut into parts that '
             'each follow the class token (a local feature each). Each of them has its own '
             'batch norm (--head_name bnneck, --embedding_dim (1 + parts) × the width), '
             'identity and triplet losses (the global one weighs as much as the parts '
             'together); the embedding is all of them, each part weighted 1 / parts. Stored '
             'with the experiment.')
    group.add_argument(
        '--sie', action='store_true',
        help='For the vision transformers: TransReID\'s side information embedding (SIE), a '
             'learnt embedding per camera of --train_set (its cameras from --camera_regex, '
             'such as `_c(\\d+)`), weighted by --sie_weight and added to every token (to '
             'the class token of the CLIP nets, as CLIP-ReID adds it). The cameras are stored '
             'with the experiment; embed.py finds each image\'s camera with the same regex, '
             'and an image of no camera the embedding learnt is embedded without one.')
    group.add_argument(
        '--sie_weight', default=Experiment.sie_weight, type=flags.float_between(0, 100),
        help='With --sie: the weight of the camera embedding (TransReID\'s SIE_COE: 3.0). '
             'Stored with the experiment.')
    # The cameras of the SIE table, found in the training set (training.data).
    group.set_defaults(sie_cameras=Experiment.sie_cameras)


def check_arguments(args, given=()):
    """Refuses the transformer flags typed for a net that is no transformer
    (`given`: the destinations typed on the command line), and what the
    transformer cannot take."""
    typed = [flag for flag in ('patch_stride', 'drop_path_rate', 'sie_weight') if flag in given]
    nets.check_jpm_head(args.model_name, args.head_name, args.embedding_dim, args.jpm)
    if args.sie:
        check_sie(args)
    if typed and args.model_name not in nets.TRANSFORMER_NETS:
        raise UserError('--{} is for the vision transformers ({}), not for `{}`.'.format(
            typed[0], ', '.join(nets.TRANSFORMER_NETS), args.model_name))
    nets.check_transformer(args.model_name, args.pooling,
                           (args.net_input_height, args.net_input_width), args.patch_stride,
                           args.jpm)


def check_sie(args):
    """Refuses --sie where its cameras cannot come from: a net that is no
    transformer, no --camera_regex, video or pseudo-label training (whose
    pipelines do not carry the cameras to the net yet)."""
    if args.model_name not in nets.TRANSFORMER_NETS:
        raise UserError('--sie adds each camera\'s embedding to a vision transformer\'s '
                        'tokens; `{}` has none: use it with {}.'.format(
                            args.model_name, ', '.join(nets.TRANSFORMER_NETS)))
    if args.camera_regex is None:
        raise UserError('--sie learns an embedding per camera, and needs each image\'s camera: '
                        'give --camera_regex, whose first group is the camera in each path '
                        '(Market-1501 and DukeMTMC-reID: `_c(\\d+)`).')
    for flag in ('seq_len', 'pseudo_labels'):
        if getattr(args, flag, None):
            raise UserError('--sie does not work with --{} yet: its batches do not carry the '
                            'cameras to the net. Leave one of them out.'.format(flag))
