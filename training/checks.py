"""The arguments of train.py checked together, before anything is written:
the combinations that cannot train, and a checkpoint's identities against
the training set's."""

import re

from triplet_reid import common
from triplet_reid.cli import flags
from triplet_reid.experiment import transformer, video
from triplet_reid import cli
from triplet_reid import nets
from triplet_reid.experiment import Experiment
from triplet_reid.training.memory import check_memory


def check_arguments(args, given=()):
    """Refuses argument combinations that cannot train, before anything is
    written; `given` holds the destinations typed on the command line."""
    if not args.train_set:
        raise cli.UserError('you did not specify the `--train_set` argument.')
    if args.pseudo_labels:
        check_pseudo_labels(args)
    elif not args.image_root:
        raise cli.UserError('you did not specify the `--image_root` argument.')
    else:
        common.training_sets(args.train_set, args.image_root)
    if not (args.triplet_loss_weight or args.id_loss_weight or args.memory_loss_weight):
        raise cli.UserError('--triplet_loss_weight 0 leaves nothing to train; give it a weight, '
                            'or turn on --id_loss_weight or --memory_loss_weight.')
    if args.distribution == 'multi_worker' and args.seed is None:
        raise cli.UserError('--distribution multi_worker needs --seed, so that all workers '
                            'sample the same batches.')
    check_memory_loss(args)
    video.check_arguments(args, given)
    transformer.check_arguments(args, given)
    if args.batch_k < 2:
        raise cli.UserError('--batch_k {} leaves no positive pair in a batch, so the '
                            'triplet loss has nothing to pull together; use --batch_k 2 '
                            'or more.'.format(args.batch_k))
    given = [flag for flag in ('val_query', 'val_gallery', 'val_excluder') if getattr(args, flag)]
    if given and len(given) < 3:
        raise cli.UserError('validation needs --val_query, --val_gallery and --val_excluder '
                            'together; only --{} was given.'.format(', --'.join(given)))
    if args.val_camera_regex is not None and args.val_excluder != 'folders':
        raise cli.UserError('--val_camera_regex is for --val_excluder folders.')
    if args.lr_schedule == 'step' and not args.lr_decay_steps:
        raise cli.UserError('--lr_schedule step needs the iterations to step at, for example '
                            '--lr_decay_steps 8000 14000.')
    nets.check_last_stride(args.model_name, args.last_stride)
    if args.id_loss != 'softmax' and not args.id_loss_weight:
        raise cli.UserError('--id_loss {} is the identity loss of --id_loss_weight, which is '
                            '0 (off); give it a weight, such as --id_loss_weight 1.'.format(
                                   args.id_loss))
    if args.crop_augment and args.pad_crop:
        raise cli.UserError('--crop_augment and --pad_crop are two ways of cropping; choose '
                            'one.')
    check_memory(args)
    if args.crop_augment and not Experiment.of(args).crops_fit():
        raise cli.UserError('with --crop_augment the pre-crop size {}x{} must be at least '
                            'the net input size {}x{}.'.format(
                                   args.pre_crop_height, args.pre_crop_width,
                                   args.net_input_height, args.net_input_width))


def check_pseudo_labels(args):
    """Refuses what cannot train on pseudo-identities (--pseudo_labels)."""
    if args.id_loss_weight or args.center_loss_weight:
        raise cli.UserError(
            '--pseudo_labels cannot train the identity or center loss: their weights have one '
            'row per identity, and the pseudo-identities change every round. Use the '
            'cluster-memory loss instead (--memory_loss_weight 1).')
    if args.distribution != 'none':
        raise cli.UserError('--pseudo_labels trains on one device for now (--distribution '
                            'none): each round clusters on the machine that trains.')


def check_memory_loss(args):
    """Refuses the cluster-memory loss without pseudo-identities to keep centroids of."""
    if args.memory_loss_weight and not args.pseudo_labels:
        raise cli.UserError('--memory_loss_weight keeps one centroid per pseudo-identity; it '
                            'needs --pseudo_labels.')
    if args.camera_proxies and not (args.pseudo_labels and args.memory_loss_weight):
        raise cli.UserError('--camera_proxies are centroids of the cluster memory; they need '
                            '--pseudo_labels and --memory_loss_weight above 0.')


def check_identity_count(source, num_ids, train_set):
    """Refuses to resume the identity or center loss of the checkpoint
    `source` (a `checkpoints.CheckpointFile`) on a training set with another
    number of identities, which their (C, ...) weights cannot take."""
    path = source.path
    for name, shape in source.shapes.items():
        stored = shape[-1] if re.match(r'classifier/_?kernel/', name) else \
            shape[0] if name.startswith('centers/') else None
        if stored is not None and stored != num_ids:
            raise cli.UserError(
                'the checkpoint `{}` learned {} training identities for its identity or center '
                'loss, but `{}` now has {}; those losses tie an experiment to its identities. '
                'Start a new experiment root, with --initial_checkpoint `{}` to reuse its '
                'body.'.format(path, stored, ' + '.join(flags.as_list(train_set)), num_ids,
                               path))
