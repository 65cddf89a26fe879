#!/usr/bin/env python3
"""Embed a dataset with a trained network into an HDF5 file.

To embed images from Python, use `inference.load_embedder(experiment_root)`.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ''):
    # Run from a checkout (`python embed.py`): its folder is the package triplet_reid.
    import checkout
    checkout.register()

from triplet_reid import cli
from triplet_reid import common
from triplet_reid.storage import files
from triplet_reid.inputs import embeddings_file
from triplet_reid.cli import flags, patterns, progress, startup
from triplet_reid.aggregators import AGGREGATORS

parser = argparse.ArgumentParser(description='Embed a dataset using a trained network.',
                                 allow_abbrev=False)

# Required.

parser.add_argument(
    '--experiment_root', required=True,
    help='Location used to store checkpoints and dumped data.')

inputs = parser.add_mutually_exclusive_group(required=True)

inputs.add_argument(
    '--dataset',
    help='Path to the dataset csv file to be embedded. A tracklet CSV (a first line naming '
         'the columns path, identity, camera, track and optionally frame, as '
         'data/convert_video.py writes) is embedded one tracklet a row, from all its frames, '
         'named `identity/camera/track`; evaluate it with --excluder tracklets.')

inputs.add_argument(
    '--images', nargs='+', metavar='PATH',
    help='Embed these image files and folders (searched recursively, in sorted order) '
         'instead of a CSV; their paths are stored beside the embeddings as `fids`. '
         '--filename defaults to `images_embeddings.h5`.')

inputs.add_argument(
    '--frames', type=flags.readable_path, metavar='DIR_OR_VIDEO',
    help='Embed the boxes of --detections in these camera frames (numbered image files, such '
         'as MOT-Challenge\'s img1/000001.jpg, or a video file such as an .mp4, whose frames '
         'count from 1 as MOT\'s do and are decoded one at a time): each box is cropped out of '
         'its frame and embedded, and its camera, frame, track and box are stored beside its '
         'embedding. --filename defaults to `CAMERA_embeddings.h5` (`CAMERA_tracklets.h5`).')

footage_flags = parser.add_argument_group(
    'footage', 'With --frames: the boxes to embed, and how (see docs/search.md).')

footage_flags.add_argument(
    '--detections', default=None, metavar='FILE',
    help='The boxes, a MOT-Challenge file (det.txt or gt.txt): lines `frame,id,bb_left,bb_top,'
         'bb_width,bb_height,...`, frames from 1, id -1 for a box of no track.')

footage_flags.add_argument(
    '--camera', default=None, type=flags.camera,
    help='The camera\'s name, stored with each box and leading its names (`CAMERA/000001.jpg#7`'
         '); the frames folder\'s name by default (its parent\'s for MOT\'s `img1`).')

footage_flags.add_argument(
    '--box_margin', default=0.0, type=flags.float_between(0, 1),
    help='Grow each box by this share of its width and height on every side before cropping '
         '(then clipped to the frame).')

footage_flags.add_argument(
    '--min_box_size', default=8, type=flags.positive_int,
    help='Leave out boxes narrower or lower than this many pixels (after clipping), with a '
         'warning that counts them.')

footage_flags.add_argument(
    '--tracklets', choices=AGGREGATORS.keys(), default=None,
    help='Store one embedding per track instead of one per box: its boxes\' embeddings '
         'combined by this aggregator, named `CAMERA/trackID`, with its first and last frame '
         'and its number of boxes. Boxes of no track (id -1) are left out. Also how an '
         'experiment trained on images combines the frames of a tracklet CSV\'s tracklets '
         '(one trained on tracklets uses its own --temporal_pooling).')

# Optional.

parser.add_argument(
    '--image_root', type=flags.readable_directory,
    help='Path that will be pre-pended to the filenames in the dataset csv; the '
         'training image root by default (the first one, when it trained on several).')

parser.add_argument(
    '--checkpoint', default=None,
    help='Name of checkpoint file of the trained network within the experiment '
         'root (such as `checkpoint-1000`). Uses the last checkpoint if not provided. '
         '`best` names the best checkpoint of validation during training.')

parser.add_argument(
    '--loading_threads', default=8, type=flags.positive_int,
    help='Number of threads used for parallel data loading.')

parser.add_argument(
    '--batch_size', default=256, type=flags.positive_int,
    help='Batch size used during evaluation, adapt based on available memory.')

parser.add_argument(
    '--filename', default=None,
    help='Name of the HDF5 file in which to store the embeddings, relative to'
         ' the `experiment_root` location. If omitted, appends `_embeddings.h5`'
         ' to the dataset name.')

parser.add_argument(
    '--flip_augment', action='store_true', default=False,
    help='When this flag is provided, flip augmentation is performed.')

parser.add_argument(
    '--crop_augment', choices=['center', 'avgpool', 'five'], default=None,
    help='When this flag is provided, crop augmentation is performed. '
         '`avgpool` means the full image at the precrop size is used and '
         'the augmentation is performed by the average pooling. `center` means '
         'only the center crop is used and `five` means the four corner and '
         'center crops are used. When not provided, by default the image is '
         'resized to network input size.')

parser.add_argument(
    '--camera_regex', default=None, type=patterns.argument(
        '--camera_regex', groups=1, remedy='put the camera in parentheses, as `_c(\\d+)`.'),
    help='For an experiment with a camera embedding (train.py --sie, or an imported TransReID '
         'or CLIP-ReID model with SIE): the regular expression whose first group, searched in '
         'each image\'s path, is its camera; the one it trained with by default. Footage\'s '
         'camera is --camera, a tracklet CSV\'s its `camera` column.')

parser.add_argument(
    '--aggregator', choices=AGGREGATORS.keys(), default=None,
    help='The type of aggregation used to combine the different embeddings '
         'after augmentation.')

parser.add_argument(
    '--quiet', action='store_true', default=False,
    help='Don\'t be so verbose: no progress bar (drawn only on a terminal anyway) and no '
         'summary lines.')

parser.add_argument(
    '--max_image_pixels', default=flags.MAX_IMAGE_PIXELS, type=flags.positive_int,
    help='Refuse images whose headers declare more pixels than this, before decoding them.')

def check_augmentation(args, train_args):
    """Refuses an aggregator without augmentation to aggregate, and vice versa;
    warns (even with --quiet) when crop augmentation differs from training."""
    if bool(train_args.get('crop_augment')) != (args.crop_augment is not None):
        # Without the crop the net sees the whole pre-crop image squeezed into
        # its input, a scale it never saw in training: on the demo set this
        # alone costs 20 points of mAP.
        advice = ('embed with --crop_augment center (or five with --aggregator mean) to show '
                  'the net its training scale' if train_args.get('crop_augment') else
                  'the net was trained on whole images; embed without --crop_augment')
        print('WARNING: crop augmentation differs between training ({}) and embedding ({}): {}.'
              .format('on' if train_args.get('crop_augment') else 'off',
                      args.crop_augment or 'off', advice), file=sys.stderr)
    needs_aggregator = args.flip_augment or args.crop_augment == 'five'
    if needs_aggregator and args.aggregator is None:
        raise cli.UserError('test-time augmentation produces several embeddings per image '
                            'but no --aggregator was given; choose one of {}.'.format(
                                   ', '.join(AGGREGATORS)))
    if not needs_aggregator and args.aggregator is not None:
        raise cli.UserError('--aggregator {} was given but no test-time augmentation that '
                            'needs aggregating (--flip_augment or --crop_augment five) is '
                            'performed.'.format(args.aggregator))


def check_footage_arguments(args):
    """Refuses the footage flags without --frames, and --frames without
    --detections."""
    if args.frames is None:
        # --tracklets also combines the frames of a tracklet CSV's tracklets.
        given = [flag for flag in ('detections', 'camera', 'tracklets')
                 if getattr(args, flag) is not None and (flag != 'tracklets' or not args.dataset)]
        if given:
            parser.error('--{} applies to --frames'.format(given[0]))
    elif args.detections is None:
        parser.error('--frames needs --detections, the boxes to embed')
    elif args.image_root:
        parser.error('--image_root applies to --dataset')


def camera_name(args):
    """--camera, or the frames folder's name (its parent's for MOT's `img1`),
    or the video's name without its extension."""
    if os.path.isfile(args.frames):
        return args.camera or os.path.splitext(os.path.basename(args.frames))[0]
    folder = os.path.abspath(args.frames)
    return args.camera or os.path.basename(
        os.path.dirname(folder) if os.path.basename(folder) == 'img1' else folder)


def crop_footage(args, folder):
    """Crops the --detections boxes out of the --frames into `folder`:
    (folder, (N,) crop files, (N,) their names, their `embeddings_file.FIELDS`)."""
    from triplet_reid.inputs import footage
    detections = footage.read_detections(args.detections)
    frames = footage.frame_source(args.frames)
    with progress.bar('Cropping', 'frame', args.quiet) as report:
        crops, skipped = footage.crop_detections(
            detections, frames, folder, args.box_margin, args.min_box_size,
            args.max_image_pixels, args.detections, report)
    if skipped:
        print('WARNING: left out {} of {} boxes narrower or lower than --min_box_size {} '
              'pixels.'.format(skipped, len(detections), args.min_box_size), file=sys.stderr)
    if not crops:
        raise cli.UserError('every box of `{}` is smaller than --min_box_size {}; lower '
                            'it.'.format(args.detections, args.min_box_size))
    camera = camera_name(args)
    return (folder, [name for name, _, _ in crops], footage.detection_names(crops, frames, camera),
            footage.detection_fields(crops, camera))


def dataset_image_root(args, train_args):
    """The folder --dataset's paths are relative to: --image_root, or the
    experiment's stored one (the first, when it trained on several)."""
    if not args.image_root and train_args.get('image_root') is None:
        raise cli.UserError('`{}` stores no image root (its model was imported, not '
                            'trained here); pass --image_root.'.format(
                                os.path.join(args.experiment_root, 'args.json')))
    image_root = args.image_root or flags.as_list(train_args['image_root'])[0]
    if not args.image_root and not os.path.isdir(image_root):
        raise cli.UserError(
            'the image root `{}` that `{}` stores is not a folder{}; pass --image_root.'
            .format(image_root, os.path.join(args.experiment_root, 'args.json'),
                    '' if os.path.isabs(image_root) else ' from here (`{}`): it is '
                    'relative to the folder train.py ran in'.format(os.getcwd())))
    return image_root


def images_to_embed(args, train_args):
    """What to embed: (image root, (N,) paths relative to it, (N,) paths as the
    user gave them), from --images, or from --dataset under --image_root or
    the experiment's stored image root."""
    if args.images:
        if args.image_root:
            raise cli.UserError('--image_root applies to --dataset; --images takes paths '
                                'as they are.')
        shown = common.find_images(args.images)
        image_root, fids = common.common_root(shown)
        return image_root, fids, shown
    image_root = dataset_image_root(args, train_args)
    _, fids = common.load_dataset(args.dataset, image_root)
    return image_root, fids, fids


def default_filename(args):
    """--filename's default: after the CSV, the camera, or `images`."""
    if args.dataset:
        return os.path.splitext(os.path.basename(args.dataset))[0] + '_embeddings.h5'
    if args.frames:
        return '{}_{}.h5'.format(camera_name(args), 'tracklets' if args.tracklets
                                 else 'embeddings')
    return 'images_embeddings.h5'


def sie_cameras(args, train_args, fids, source, log, fields=None, names=None):
    """The (N,) rows of the images' cameras in the camera embedding's table
    of an experiment with SIE, None for one without: found by --camera_regex
    (the experiment's by default) in the paths `fids`, or given as `names`
    (a tracklet CSV's column), or footage's --camera (`fields` are its
    boxes')."""
    from triplet_reid.inputs.cameras import embedding_cameras
    table = train_args.get('sie_cameras')
    if not table:
        if args.camera_regex is not None:
            raise cli.UserError('--camera_regex is for experiments with a camera embedding '
                                '(train.py --sie); `{}` has none.'.format(args.experiment_root))
        return None

    def warn(message):
        log('Warning: ' + message)
    if fields is not None:
        names = [camera_name(args)] * len(fids)
    regex = args.camera_regex or train_args.get('camera_regex')
    if names is None and regex is None:
        raise cli.UserError('`{}` adds a learnt embedding per camera (SIE: cameras {}), so each '
                            'image\'s camera is needed; give --camera_regex, whose first group '
                            'is the camera in each path (Market-1501: `_c(\\d+)`).'.format(
                                args.experiment_root, ', '.join(table[:20])))
    return embedding_cameras(fids, regex, table, warn, source, names)


def tracklet_dataset(args):
    """Whether --dataset is a tracklet CSV; refuses --tracklets with a CSV of images."""
    from triplet_reid.inputs.tracklets import is_tracklet_csv
    if not args.dataset:
        return False
    if is_tracklet_csv(args.dataset):
        return True
    if args.tracklets:
        raise cli.UserError('--tracklets combines the tracklets of footage (--frames) or of a '
                            'tracklet CSV, whose first line names its columns with a `track`; '
                            '`{}` is a CSV of images.'.format(args.dataset))
    return False


def embed_tracklet_csv(args, log):
    """Embeds the tracklets of a tracklet CSV (--dataset with a track column):
    one embedding per tracklet from all its frames, named
    `identity/camera/track` (see inputs/tracklets.py)."""
    from triplet_reid.inputs import images, tracklets
    from triplet_reid.models.inference import embed_tracklet_set, load_video_experiment

    parts, train_args, checkpoint = load_video_experiment(args.experiment_root, args.checkpoint)
    if args.flip_augment or args.crop_augment == 'five' or args.aggregator:
        raise cli.UserError('the frames of a tracklet are embedded once each and combined over '
                            'time; leave out --flip_augment, --crop_augment five and '
                            '--aggregator.')
    check_augmentation(args, train_args)
    filename = os.path.join(args.experiment_root, args.filename or default_filename(args))
    files.check_output(filename, '--filename', 'hdf5', [('--dataset', args.dataset)])
    image_root = dataset_image_root(args, train_args)
    found = tracklets.read_tracklets(args.dataset, image_root)
    log('Embedding {} tracklets ({} frames) of {} with checkpoint {}.'.format(
        len(found.names), len(found.fids), args.dataset, checkpoint))
    images.decodable_mask(found.fids, image_root, False, args.loading_threads,
                          remedy='or drop their rows from the CSV',
                          max_pixels=args.max_image_pixels)
    # Each frame is of its tracklet's camera.
    cameras = sie_cameras(args, train_args, found.fids, args.dataset, log,
                          names=np.repeat(found.cameras, found.lengths))
    start = time.time()
    with progress.bar('Embedding', 'frame', args.quiet) as report:
        embs = embed_tracklet_set(parts, train_args, found, image_root, args.tracklets,
                                  args.crop_augment, args.batch_size, args.loading_threads,
                                  report, cameras)
    seconds = time.time() - start
    log('Embedded {} frames in {:.1f}s: {:.1f} frames/s.'.format(
        len(found.fids), seconds, len(found.fids) / max(seconds, 1e-9)))
    embeddings_file.check_finite(
        embs, 'the embeddings of `{}` by {}'.format(args.dataset, checkpoint),
        'nothing was written; the network\'s weights are broken (did training diverge?), so '
        'embed with an earlier checkpoint (--checkpoint)', found.names)
    embeddings_file.write(filename, embs, None, ['original_' + (args.crop_augment or 'resize')],
                          found.names, None,
                          embeddings_file.embedding_origin(args.experiment_root, checkpoint),
                          {'camera': found.cameras, 'crops': found.lengths})
    log('Wrote {}.'.format(filename))
    return 0


def main(argv=None):
    with contextlib.ExitStack() as stack:
        return embed(parser.parse_args(argv), stack)


def embed(args, stack):
    """Embeds what `args` name; temporary crops of footage live as long as `stack`."""
    check_footage_arguments(args)
    # TensorFlow comes only after the arguments parse, so that --help and a
    # mistyped flag answer at once (see startup.quiet_tensorflow).
    startup.quiet_tensorflow()
    from triplet_reid.inputs import images
    from triplet_reid.models.inference import embed_files, load_experiment

    log = (lambda *a: None) if args.quiet else (
        lambda *a: print(*a, file=sys.stderr, flush=True))
    if tracklet_dataset(args):
        return embed_tracklet_csv(args, log)

    # Arguments and the experiment's own settings.
    model, train_args, checkpoint = load_experiment(args.experiment_root, args.checkpoint)
    check_augmentation(args, train_args)
    if args.filename is None:
        args.filename = default_filename(args)
    filename = os.path.join(args.experiment_root, args.filename)
    files.check_output(filename, '--filename', 'hdf5', [('--dataset', args.dataset),
                                                        ('--detections', args.detections)])
    if args.frames:
        image_root, fids, shown, fields = crop_footage(args, stack.enter_context(
            tempfile.TemporaryDirectory(prefix='crops-')))
    else:
        (image_root, fids, shown), fields = images_to_embed(args, train_args), None
    source = args.dataset or args.detections or '{} images'.format(len(fids))
    log('Embedding {} with checkpoint {}.'.format(source, checkpoint))
    # Data: every image with all its augmented versions, in CSV order.
    images.decodable_mask(fids, image_root, False, args.loading_threads,
                          remedy='or drop their rows from the CSV' if args.dataset else
                          'or leave them out of --images',
                          max_pixels=args.max_image_pixels)

    cameras = sie_cameras(args, train_args, fids, source, log, fields)

    # Loop.
    start = time.time()
    with progress.bar('Embedding', 'pass', args.quiet) as report:
        embs, emb_aug, names = embed_files(
            model, train_args, fids, image_root, args.flip_augment, args.crop_augment,
            args.aggregator, args.batch_size, args.loading_threads, report, cameras)
    seconds = time.time() - start
    log('Embedded {} images ({} forward passes) in {:.1f}s: {:.1f} images/s.'.format(
        len(fids), len(fids) * len(names), seconds, len(fids) / max(seconds, 1e-9)))

    embeddings_file.check_finite(
        embs, 'the embeddings of `{}` by {}'.format(source, checkpoint),
        'nothing was written; the network\'s weights are broken (did training diverge?), so '
        'embed with an earlier checkpoint (--checkpoint)', shown)
    if args.tracklets:
        from triplet_reid.inputs import footage
        embs, shown, fields = footage.tracklets(embs, fields, AGGREGATORS[args.tracklets])
        emb_aug = None
        log('Combined them into {} tracklets.'.format(len(embs)))
    embeddings_file.write(filename, embs, emb_aug, names, shown, args.aggregator,
                          embeddings_file.embedding_origin(args.experiment_root, checkpoint),
                          fields)
    log('Wrote {}.'.format(filename))
    return 0


def command():
    """`reid-embed`, the command that `pip install .` installs (pyproject.toml)."""
    cli.run(main)


if __name__ == '__main__':
    command()
