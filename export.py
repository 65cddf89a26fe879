#!/usr/bin/env python3
"""Export a trained experiment to a SavedModel, and optionally to ONNX.

The successor of the original `freeze.py`. The SavedModel has two serving
signatures that take a batch of images of any size, resize them to the
network's input size inside the graph and return `{'emb': (B, D)}`:

    serving_default   float32 images (B, H, W, 3), RGB values in [0, 255]
    serving_uint8     uint8 images (B, H, W, 3)

It loads with `tf.saved_model.load` and serves with TF Serving as it is.
"""

import argparse
import os
import shutil
import sys

import common
import startup

# Before anything imports TensorFlow: see startup.quiet_tensorflow.
startup.quiet_tensorflow()

import tensorflow as tf

from images import resize, resize_by_matmul
from inference import load_experiment

parser = argparse.ArgumentParser(description='Export a trained experiment to a SavedModel.')

parser.add_argument(
    '--experiment_root', required=True,
    help='Location of the trained experiment (args.json and checkpoints).')

parser.add_argument(
    '--checkpoint', default=None,
    help='Name of the checkpoint within the experiment root; the latest by default.')

parser.add_argument(
    '--output', default=None,
    help='Folder to write the SavedModel to; `saved_model` in the experiment root by '
         'default. It must not exist yet.')

parser.add_argument(
    '--onnx', default=None,
    help='Also write an ONNX model (float32 input, as serving_default) to this file. '
         'Needs tf2onnx.')

parser.add_argument(
    '--quiet', action='store_true', default=False,
    help='Don\'t be so verbose.')


class EmbeddingModule(tf.Module):
    """The exported object: an embedding model behind resizing signatures."""

    def __init__(self, model, net_input_size, antialias):
        super().__init__()
        self.model = model
        self.net_input_size = tuple(net_input_size)
        self.antialias = antialias

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name='images')])
    def embed_float(self, images):
        # The matrix form converts to ONNX, where TensorFlow's antialiased op does not.
        resized = resize_by_matmul(images, self.net_input_size) if self.antialias \
            else resize(images, self.net_input_size, antialias=False)
        return {'emb': self.model(resized, training=False)['emb']}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                name='images')])
    def embed_uint8(self, images):
        return self.embed_float(tf.cast(images, tf.float32))


def move_into_place(partial, output):
    """Renames `partial` to `output`, refusing to replace what appeared there meanwhile."""
    if os.path.lexists(output):
        raise common.UserError('`{}` appeared while exporting; nothing was replaced.'.format(
            output))
    os.replace(partial, output)


def export_saved_model(module, output):
    """Writes the SavedModel next to `output` and renames it into place, so an
    interrupted export leaves no half-written model."""
    partial = common.temporary_beside(output, directory=True)
    try:
        tf.saved_model.save(module, partial, signatures={
            'serving_default': module.embed_float, 'serving_uint8': module.embed_uint8})
        move_into_place(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def export_onnx(module, path):
    """Converts the float32 signature to ONNX with tf2onnx."""
    import tf2onnx
    partial = common.temporary_beside(path, directory=False)
    try:
        tf2onnx.convert.from_function(module.embed_float, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name='images')],
            opset=17, output_path=partial)
        move_into_place(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def check_output(path, flag):
    """Refuses an output that exists (a link to nothing too) or whose folder
    cannot be written, before any work."""
    if os.path.lexists(path):
        raise common.UserError('`{}` exists already{}; remove it or choose another {}.'.format(
            path, ' (a link to nothing)' if not os.path.exists(path) else '', flag))
    common.check_writable(path, flag)


def main(argv=None):
    args = parser.parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    output = args.output or os.path.join(args.experiment_root, 'saved_model')
    check_output(output, '--output')
    if args.onnx:
        check_output(args.onnx, '--onnx')
        if os.path.abspath(args.onnx) == os.path.abspath(output):
            raise common.UserError('--onnx and --output name the same path `{}`.'.format(output))
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise common.UserError('--onnx needs tf2onnx: `.venv/bin/pip install tf2onnx '
                                   'onnxruntime`. Nothing was exported.')

    model, train_args, checkpoint = load_experiment(args.experiment_root, args.checkpoint)
    module = EmbeddingModule(model, (train_args['net_input_height'],
                                     train_args['net_input_width']), train_args['antialias'])
    log('Tracing and writing the SavedModel of {} (some seconds)…'.format(checkpoint))
    export_saved_model(module, output)
    log('Exported {} to the SavedModel {}.'.format(checkpoint, output))
    if args.onnx:
        log('Converting to ONNX with tf2onnx (half a minute or more)…')
        export_onnx(module, args.onnx)
        log('Exported {} to the ONNX model {}.'.format(checkpoint, args.onnx))
    return 0


if __name__ == '__main__':
    common.run(main)
