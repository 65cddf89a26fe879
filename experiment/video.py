"""Training on tracklets (video re-id): train.py's flags. TensorFlow-free,
so that --help answers at once.

With --seq_len T, --train_set is a tracklet CSV (see inputs/tracklets.py)
and every batch holds P identities × K tracklets × T frames of each
(`inputs.sampler.pkt_dataset`); the frames' embeddings or features are
combined by the --temporal_pooling plug-in (`models.video`), and the losses
compare tracklets.
"""

from triplet_reid.cli import UserError, flags
from triplet_reid.experiment import Experiment


def add_flags(parser):
    """Adds the video flags to train.py's `parser`."""
    group = parser.add_argument_group(
        'video', 'Training on the tracklets of a tracklet CSV (video re-id).')
    group.add_argument(
        '--seq_len', default=0, type=flags.nonnegative_int,
        help='Train on tracklets: --train_set is a tracklet CSV (one row a frame, with the '
             'columns path, identity, camera, track and optionally frame, as '
             'data/convert_video.py writes), and each batch holds --batch_p identities × '
             '--batch_k tracklets × this many frames of each (torchreid: 4 or 8). 0: train on '
             'images, as the original.')
    group.add_argument(
        '--frame_sampling', default='evenly', choices=flags.FRAME_SAMPLINGS,
        help='Which --seq_len frames of a training tracklet: `evenly` spaced over it (the '
             'centres of equal stretches), a random consecutive `chunk`, or `random` frames in '
             'temporal order. A shorter tracklet repeats frames. Embedding uses all frames.')
    group.add_argument(
        '--temporal_pooling', default=Experiment.temporal_pooling,
        choices=flags.TEMPORAL_POOLINGS,
        help='How the frames of a tracklet are combined, in training and in embed.py: their '
             'average (`avg`, the default with --seq_len), `max` over time, or a learnt '
             'softmax `attention` over the frames. Stored with the experiment.')
    group.add_argument(
        '--temporal_position', default=Experiment.temporal_position,
        choices=flags.TEMPORAL_POSITIONS,
        help='Combine the frames\' `embedding`s (after the head), or the body\'s pooled '
             '`features`, which the head then embeds (before the head). Stored with the '
             'experiment.')


def check_arguments(args, given=()):
    """Refuses the video flags without --seq_len (`given`: the destinations
    typed on the command line, as --temporal_position has a default), and
    what video training does not take; gives --seq_len its default
    --temporal_pooling."""
    if not args.seq_len:
        if args.temporal_pooling is not None:
            raise UserError('--temporal_pooling combines the frames of tracklets; train on '
                            'tracklets with --seq_len.')
        if 'temporal_position' in given:
            raise UserError('--temporal_position says where the frames of tracklets are '
                            'combined; train on tracklets with --seq_len.')
        return
    if args.temporal_pooling is None:
        args.temporal_pooling = 'avg'
    refused = [flag for flag, given in (
        ('--pseudo_labels', args.pseudo_labels),
        ('several --train_set', len(flags.as_list(args.train_set)) > 1)) if given]
    if refused:
        raise UserError('--seq_len trains on the tracklets of one tracklet CSV and does not '
                        'take {}.'.format(refused[0]))
