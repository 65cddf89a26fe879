#!/usr/bin/env python3
"""Embed a dataset with a trained network into an HDF5 file.

Also a library: `load_embedder(experiment_root)` returns a function that
embeds images (arrays or files) with a trained experiment.
"""

import argparse
import json
import os
import sys
import time

import h5py
import numpy as np
import tensorflow as tf

import common
import sampler
import tf1_checkpoint
from aggregators import AGGREGATORS

parser = argparse.ArgumentParser(description='Embed a dataset using a trained network.')

# Required.

parser.add_argument(
    '--experiment_root', required=True,
    help='Location used to store checkpoints and dumped data.')

parser.add_argument(
    '--dataset', required=True,
    help='Path to the dataset csv file to be embedded.')

# Optional.

parser.add_argument(
    '--image_root', type=common.readable_directory,
    help='Path that will be pre-pended to the filenames in the dataset csv; the '
         'training image root by default.')

parser.add_argument(
    '--checkpoint', default=None,
    help='Name of checkpoint file of the trained network within the experiment '
         'root (such as `checkpoint-1000`). Uses the last checkpoint if not provided. '
         '`best` names the best checkpoint of validation during training.')

parser.add_argument(
    '--loading_threads', default=8, type=common.positive_int,
    help='Number of threads used for parallel data loading.')

parser.add_argument(
    '--batch_size', default=256, type=common.positive_int,
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
    help='Don\'t be so verbose.')

def load_experiment(experiment_root, checkpoint=None):
    """Builds the experiment's model and restores a checkpoint.

    Args:
        experiment_root (str): A folder with `args.json` and checkpoints.
        checkpoint (str or None): A checkpoint name inside the root, or None for
            the latest.

    Returns:
        (model, train_args, checkpoint_path).
    """
    args_file = os.path.join(experiment_root, 'args.json')
    if not os.path.isfile(args_file):
        raise common.UserError('`args.json` could not be found in `{}`; is it an experiment '
                               'root written by train.py?'.format(experiment_root))
    try:
        with open(args_file) as f:
            train_args = json.load(f)
    except ValueError as e:
        raise common.UserError('`{}` is corrupt: {}.'.format(args_file, e))
    if checkpoint is None:
        path = tf.train.latest_checkpoint(experiment_root)
        if path is None:
            raise common.UserError('`{}` holds no checkpoint yet.'.format(experiment_root))
    else:
        path = os.path.join(experiment_root, checkpoint)
        if os.path.isdir(path):
            # A folder of checkpoints, such as `best`: its newest.
            path = tf.train.latest_checkpoint(path) or path
        if not tf.io.gfile.exists(path + '.index'):
            raise common.UserError('there is no checkpoint `{}` in `{}`.'.format(
                checkpoint, experiment_root))
    model, body = common.build_model(train_args['model_name'], train_args['head_name'],
                                     train_args['embedding_dim'])
    if tf1_checkpoint.is_tf1_checkpoint(path):
        # A checkpoint of the TF1 original, loaded by variable name.
        tf1_checkpoint.restore_experiment(path, model, body)
        return model, train_args, path
    try:
        status = tf.train.Checkpoint(model=model).read(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise common.UserError('the checkpoint `{}` does not fit the model of `{}`: {}'.format(
            path, args_file, str(e).splitlines()[0]))
    return model, train_args, path


def inference_function(model):
    """The compiled forward pass: images (B, H, W, 3) -> embeddings (B, D)."""
    return tf.function(lambda images: model(images, training=False)['emb'],
                       reduce_retracing=True)


def load_embedder(experiment_root, checkpoint=None, batch_size=256):
    """A function that embeds images with a trained experiment.

    The returned `embed(images)` takes a list of image file paths, or a uint8
    or float array (N, H, W, 3) with values in [0, 255], resizes them to the
    network's input size and returns their embeddings as an (N, D) float32
    array.
    """
    model, train_args, _ = load_experiment(experiment_root, checkpoint)
    size = (train_args['net_input_height'], train_args['net_input_width'])
    forward = inference_function(model)

    def embed(images):
        if isinstance(images, (list, tuple)) and images and isinstance(images[0], str):
            images = tf.stack([sampler.load_image(path, size) for path in images])
        images = tf.image.resize(tf.cast(images, tf.float32), size)
        return np.concatenate([forward(images[i:i + batch_size]).numpy()
                               for i in range(0, len(images), batch_size)] or
                              [np.zeros((0, train_args['embedding_dim']), np.float32)])
    return embed


def check_augmentation(args, train_args):
    """Refuses an aggregator without augmentation to aggregate, and vice versa;
    warns (even with --quiet) when crop augmentation differs from training."""
    if bool(train_args.get('crop_augment')) != (args.crop_augment is not None):
        print('WARNING: crop augmentation differs between training ({}) and embedding ({}).'
              .format('on' if train_args.get('crop_augment') else 'off',
                      args.crop_augment or 'off'), file=sys.stderr)
    needs_aggregator = args.flip_augment or args.crop_augment == 'five'
    if needs_aggregator and args.aggregator is None:
        raise common.UserError('test-time augmentation produces several embeddings per image '
                               'but no --aggregator was given; choose one of {}.'.format(
                                   ', '.join(AGGREGATORS)))
    if not needs_aggregator and args.aggregator is not None:
        raise common.UserError('--aggregator {} was given but no test-time augmentation that '
                               'needs aggregating (--flip_augment or --crop_augment five) is '
                               'performed.'.format(args.aggregator))


def write_embeddings(filename, emb, emb_aug, names):
    """Writes the HDF5 file through a temporary file, so a failure leaves none behind."""
    partial = filename + '.partial'
    try:
        with h5py.File(partial, 'w') as f:
            f.create_dataset('emb', data=emb)
            if emb_aug is not None:
                f.create_dataset('emb_aug', data=emb_aug)
            f.create_dataset('augmentation_types', data=np.asarray(names, dtype='S'))
        os.replace(partial, filename)
    except OSError as e:
        raise common.UserError('cannot write the embeddings `{}` ({}); is the disk full? '
                               'Nothing was written.'.format(filename, e))
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def main(argv=None):
    args = parser.parse_args(argv)
    log = (lambda *a, **k: None) if args.quiet else (
        lambda *a, **k: print(*a, file=sys.stderr, flush=True, **k))

    # Arguments and the experiment's own settings.
    model, train_args, checkpoint = load_experiment(args.experiment_root, args.checkpoint)
    check_augmentation(args, train_args)
    if args.filename is None:
        args.filename = os.path.splitext(os.path.basename(args.dataset))[0] + '_embeddings.h5'
    filename = os.path.join(args.experiment_root, args.filename)
    image_root = args.image_root or train_args['image_root']
    net_input_size = (train_args['net_input_height'], train_args['net_input_width'])
    pre_crop_size = (train_args['pre_crop_height'], train_args['pre_crop_width'])
    log('Embedding {} with checkpoint {}.'.format(args.dataset, checkpoint))

    # Data: every image with all its augmented versions, in CSV order.
    _, fids = common.load_dataset(args.dataset, image_root)
    sampler.decodable_mask(fids, image_root, False, args.loading_threads,
                            remedy='or drop their rows from the CSV')
    names = sampler.augmentation_names(args.flip_augment, args.crop_augment)
    dataset = sampler.image_batches(fids, image_root, net_input_size, pre_crop_size,
                                    args.flip_augment, args.crop_augment, args.batch_size,
                                    args.loading_threads)

    # Loop.
    forward = inference_function(model)
    total = len(fids) * len(names)
    embs = np.zeros((total, train_args['embedding_dim']), np.float32)
    start, done = time.time(), 0
    for images in dataset:
        embs[done:done + len(images)] = forward(images).numpy()
        done += len(images)
        log('\rEmbedded {}/{}'.format(done, total), end='')
    seconds = time.time() - start
    log('\nEmbedded {} images ({} forward passes) in {:.1f}s: {:.1f} images/s.'.format(
        len(fids), total, seconds, len(fids) / max(seconds, 1e-9)))

    emb_aug = None
    if len(names) > 1:
        # (N*A, D) -> (A, N, D): one slice per augmentation, as the original.
        emb_aug = embs.reshape(len(fids), len(names), -1).transpose(1, 0, 2)
        embs = AGGREGATORS[args.aggregator](emb_aug)
    write_embeddings(filename, embs, emb_aug, names)
    log('Wrote {}.'.format(filename))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except common.UserError as e:
        print('error: {}'.format(e), file=sys.stderr)
        sys.exit(1)
