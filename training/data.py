"""The training data of train.py: the images of --train_set, the tracklets
of video training (--seq_len) or the unlabelled crops of --pseudo_labels,
without the files that cannot be used."""

import logging
from typing import NamedTuple

import numpy as np

from triplet_reid import cli
from triplet_reid import common, nets
from triplet_reid.cli import flags
from triplet_reid.inputs import sampler, tracklets, unlabelled
from triplet_reid.inputs.cameras import training_cameras
from triplet_reid.inputs.images import decodable_mask, load_training_sets
from triplet_reid.training import detailed_logs

# The camera penalty appends a column per camera to every crop's embedding,
# and centring passes over the crops once per camera, so a camera column that
# names something else (a frame, a file) would cost N² memory or time; real
# footage has tens of cameras.
MAX_PENALTY_CAMERAS = 1000

# The training loop's lines keep the logger name users and tests know.
log = logging.getLogger('train')


class TrainingData(NamedTuple):
    """The training images: (N,) identities and (N,) paths relative to
    `image_root`. With --pseudo_labels, `crops` are all the unlabelled crops
    (`unlabelled.Crops`), and the identities and paths those of the current
    round's pseudo-identities (see `adaptation`). With --seq_len, the
    `tracklets.Tracklets` of --train_set, whose (T,) identities `pids` are.
    `labels`, with --camera_proxies, are the (N,) camera proxies of the
    round's crops, which the batches carry instead of their identities.
    `cameras`, with --sie, are the (N,) rows of the images' cameras in the
    camera embedding's table."""
    pids: np.ndarray
    fids: np.ndarray
    image_root: str
    crops: object = None
    tracklets: object = None
    labels: object = None
    cameras: object = None


def load_data(args, chief):
    """The training sets (several are joined by `common.merge_datasets`, with
    their identities kept apart) without the images that cannot be used,
    checked for enough identities (and, with --detailed_logs, for the disk
    space of their logs). With --pseudo_labels, the crops without their
    identities, which `begin_rounds` clusters."""
    if args.pseudo_labels:
        return load_crops(args, chief)
    if args.seq_len:
        return load_tracklets(args, chief)
    parts = load_training_sets(args.train_set, args.image_root, args.skip_corrupt_images,
                               args.loading_threads, log, args.max_image_pixels)
    data = TrainingData(*common.merge_datasets(parts))
    if len(parts) > 1:
        log.info('Training on %d sets, %s, with their identities kept apart (prefixed 1:, '
                 '2:, ...): %d identities and %d images in all.', len(parts),
                 ' + '.join('`{}` ({} ids)'.format(csv, len(np.unique(pids)))
                            for pids, _, _, csv in parts),
                 len(np.unique(data.pids)), len(data.pids))
    sampler.check_enough_identities(data.pids, args.batch_p, ' + '.join(
        '`{}`'.format(csv) for csv in flags.as_list(args.train_set)))
    check_log_space(args, chief, data.fids)
    if args.sie:
        # A new run numbers the cameras it finds; a resumed one keeps its table.
        args.sie_cameras, rows = training_cameras(data.fids, args.camera_regex,
                                                  args.sie_cameras)
        nets.check_transformer(args.model_name, sie=len(args.sie_cameras))
        log.info('Learning a camera embedding (SIE) for the %d cameras %s.',
                 len(args.sie_cameras), ', '.join(args.sie_cameras[:20]))
        data = data._replace(cameras=rows)
    return data


def check_log_space(args, chief, fids):
    """With --detailed_logs, refuses a run whose logs of `fids` would not fit on the disk."""
    if args.detailed_logs and chief:
        detailed_logs.check_space(args.experiment_root, args.train_iterations,
                                  args.batch_p * args.batch_k, args.embedding_dim,
                                  max(len(f.encode('utf-8')) for f in fids))


def load_tracklets(args, chief):
    """The tracklets of --train_set for --seq_len, in a `TrainingData`, without
    the frames that cannot be used (with --skip_corrupt_images)."""
    root = flags.as_list(args.image_root)[0]
    found = tracklets.read_tracklets(flags.as_list(args.train_set)[0], root)
    keep = decodable_mask(found.fids, root, args.skip_corrupt_images, args.loading_threads, log,
                          max_pixels=args.max_image_pixels)
    found = found.subset(keep)
    log.info('Training on %d tracklets (%d frames) of %d identities, %d frames each.',
             len(found.names), len(found.fids), len(np.unique(found.identities)), args.seq_len)
    sampler.check_enough_identities(found.identities, args.batch_p, '`{}`'.format(
        flags.as_list(args.train_set)[0]))
    check_log_space(args, chief, found.fids)
    return TrainingData(found.identities, found.fids, root, tracklets=found)


def load_crops(args, chief):
    """The usable crops of --train_set for --pseudo_labels, in a `TrainingData`."""
    crops = unlabelled.read_crops(args.train_set, args.image_root, args.camera_regex)
    crops = crops.subset(decodable_mask(crops.fids, crops.image_root, args.skip_corrupt_images,
                                        args.loading_threads, log,
                                        max_pixels=args.max_image_pixels))
    for flag in ('camera_centering', 'camera_proxies', 'cluster_camera_penalty'):
        if getattr(args, flag) and crops.cameras is None:
            raise cli.UserError('--{} needs the crops\' cameras: give --train_set a `camera` '
                                'column or --camera_regex (such as `_c(\\d+)`), or leave the '
                                'flag out{}.'.format(flag, ' (--no-camera_proxies)' if flag ==
                                                     'camera_proxies' else ''))
    if args.cluster_camera_penalty or args.camera_centering:
        cameras = len(np.unique(crops.cameras))
        if cameras > MAX_PENALTY_CAMERAS:
            raise cli.UserError(
                '--{} compares the cameras of the crops, but --train_set gives {} different '
                'cameras (at most {}); check its `camera` column or --camera_regex, whose first '
                'group must be the camera alone.'.format(
                    'cluster_camera_penalty' if args.cluster_camera_penalty else
                    'camera_centering', cameras, MAX_PENALTY_CAMERAS))
    check_log_space(args, chief, crops.fids)
    return TrainingData(np.zeros(0, str), crops.fids, crops.image_root, crops)
