"""Training a vision transformer (`nets.TRANSFORMER_NETS`): train.py's
flags for its patches, its stochastic depth and TransReID's jigsaw patch
module. TensorFlow-free, so that --help answers at once.
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


def check_arguments(args, given=()):
    """Refuses the transformer flags typed for a net that is no transformer
    (`given`: the destinations typed on the command line), and what the
    transformer cannot take."""
    typed = [flag for flag in ('patch_stride', 'drop_path_rate') if flag in given]
    nets.check_jpm_head(args.model_name, args.head_name, args.embedding_dim, args.jpm)
    if typed and args.model_name not in nets.TRANSFORMER_NETS:
        raise UserError('--{} is for the vision transformers ({}), not for `{}`.'.format(
            typed[0], ', '.join(nets.TRANSFORMER_NETS), args.model_name))
    nets.check_transformer(args.model_name, args.pooling,
                           (args.net_input_height, args.net_input_width), args.patch_stride,
                           args.jpm)
