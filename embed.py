#!/usr/bin/env python3
"""Embed a dataset with a trained network into an HDF5 file.

To embed images from Python, use `inference.load_embedder(experiment_root)`.
"""

import argparse
import os
import sys
import time

import cli
import common
import files
import embeddings_file
import flags
import progress
import startup
from aggregators import AGGREGATORS

parser = argparse.ArgumentParser(description='Embed a dataset using a trained network.')

# Required.

parser.add_argument(
    '--experiment_root', required=True,
    help='Location used to store checkpoints and dumped data.')

inputs = parser.add_mutually_exclusive_group(required=True)

inputs.add_argument(
    '--dataset',
    help='Path to the dataset csv file to be embedded.')

inputs.add_argument(
    '--images', nargs='+', metavar='PATH',
    help='Embed these image files and folders (searched recursively, in sorted order) '
         'instead of a CSV; their paths are stored beside the embeddings as `fids`. '
         '--filename defaults to `images_embeddings.h5`.')

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
    if not args.image_root and train_args.get('image_root') is None:
        raise cli.UserError('`{}` stores no image root (its model was imported, not '
                            'trained here); pass --image_root.'.format(
                                os.path.join(args.experiment_root, 'args.json')))
    # Of an experiment that trained on several sets, the first set's root.
    image_root = args.image_root or flags.as_list(train_args['image_root'])[0]
    if not args.image_root and not os.path.isdir(image_root):
        raise cli.UserError(
            'the image root `{}` that `{}` stores is not a folder{}; pass --image_root.'
            .format(image_root, os.path.join(args.experiment_root, 'args.json'),
                    '' if os.path.isabs(image_root) else ' from here (`{}`): it is '
                    'relative to the folder train.py ran in'.format(os.getcwd())))
    _, fids = common.load_dataset(args.dataset, image_root)
    return image_root, fids, fids


def main(argv=None):
    args = parser.parse_args(argv)
    # TensorFlow comes only after the arguments parse, so that --help and a
    # mistyped flag answer at once (see startup.quiet_tensorflow).
    startup.quiet_tensorflow()
    import images
    from inference import embed_files, load_experiment

    log = (lambda *a: None) if args.quiet else (
        lambda *a: print(*a, file=sys.stderr, flush=True))

    # Arguments and the experiment's own settings.
    model, train_args, checkpoint = load_experiment(args.experiment_root, args.checkpoint)
    check_augmentation(args, train_args)
    if args.filename is None:
        args.filename = os.path.splitext(os.path.basename(args.dataset))[0] + \
            '_embeddings.h5' if args.dataset else 'images_embeddings.h5'
    filename = os.path.join(args.experiment_root, args.filename)
    files.check_output(filename, '--filename', 'hdf5', [('--dataset', args.dataset)])
    image_root, fids, shown = images_to_embed(args, train_args)
    source = args.dataset or '{} images'.format(len(fids))
    log('Embedding {} with checkpoint {}.'.format(source, checkpoint))

    # Data: every image with all its augmented versions, in CSV order.
    images.decodable_mask(fids, image_root, False, args.loading_threads,
                          remedy='or drop their rows from the CSV' if args.dataset else
                          'or leave them out of --images',
                          max_pixels=args.max_image_pixels)

    # Loop.
    start = time.time()
    with progress.bar('Embedding', 'pass', args.quiet) as report:
        embs, emb_aug, names = embed_files(
            model, train_args, fids, image_root, args.flip_augment, args.crop_augment,
            args.aggregator, args.batch_size, args.loading_threads, progress=report)
    seconds = time.time() - start
    log('Embedded {} images ({} forward passes) in {:.1f}s: {:.1f} images/s.'.format(
        len(fids), len(fids) * len(names), seconds, len(fids) / max(seconds, 1e-9)))

    embeddings_file.check_finite(
        embs, 'the embeddings of `{}` by {}'.format(source, checkpoint),
        'nothing was written; the network\'s weights are broken (did training diverge?), so '
        'embed with an earlier checkpoint (--checkpoint)', shown)
    embeddings_file.write(filename, embs, emb_aug, names, shown, args.aggregator,
                          embeddings_file.embedding_origin(args.experiment_root, checkpoint))
    log('Wrote {}.'.format(filename))
    return 0


if __name__ == '__main__':
    cli.run(main)
