#!/usr/bin/env python3
"""Export a trained experiment to a SavedModel, and optionally to ONNX and TensorFlow Lite.

The successor of the original `freeze.py`. The SavedModel has two serving
signatures that take a batch of images of any size, resize them to the
network's input size inside the graph and return `{'emb': (B, D)}`:

    serving_default   float32 images (B, H, W, 3), RGB values in [0, 255]
    serving_uint8     uint8 images (B, H, W, 3)

It loads with `tf.saved_model.load` and serves with TF Serving as it is.
"""

import argparse
import os
import sys

if __package__ in (None, ''):
    # Run from a checkout (`python export.py`): its folder is the package triplet_reid.
    import checkout
    checkout.register()

from triplet_reid import cli
from triplet_reid.cli import flags, startup
from triplet_reid.storage import files
from triplet_reid.experiment import Experiment

parser = argparse.ArgumentParser(description='Export a trained experiment to a SavedModel.',
                                 allow_abbrev=False)

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
    '--tflite', default=None,
    help='Also write a TensorFlow Lite model to this file: float32 images (B, H, W, 3) in '
         '[0, 255] already at the net input size H×W (it does not resize) to `emb` (B, D).')

parser.add_argument(
    '--tflite_int8', action='store_true', default=False,
    help='Quantise the --tflite model to int8 weights and activations (float input and '
         'output), calibrated on the first --tflite_samples images of the training CSV (or '
         'of --calibration_images).')

parser.add_argument(
    '--tflite_samples', default=100, type=flags.positive_int,
    help='How many images calibrate --tflite_int8.')

parser.add_argument(
    '--calibration_images', nargs='+', metavar='PATH', default=None,
    help='Calibrate --tflite_int8 on these image files and folders (searched recursively, '
         'in sorted order) instead of the training CSV; an imported model (import_model.py) '
         'has no training images and needs them.')

parser.add_argument(
    '--tracker', default=None, metavar='FOLDER',
    help='Also write models for trackers into this folder (made if missing): ONNX and '
         'TensorFlow Lite (see --tracker_formats) with the input convention of BoxMOT and '
         'torchreid, float32 crops (B, 3, H, W) at the net input size, RGB in [0, 1] '
         'normalised with ImageNet\'s mean and std, to the embeddings (B, D); each named '
         'after the BoxMOT architecture nearest to the net (`osnet_x0_25_EXPERIMENT.onnx`), '
         'with BoxMOT\'s metadata sidecar `FILE.metadata.json` beside it (input size, '
         'normalisation, metric, and the threshold of --evaluation).')

parser.add_argument(
    '--tracker_formats', nargs='+', default=['onnx', 'tflite'], choices=('onnx', 'tflite'),
    help='Which --tracker models to write.')

parser.add_argument(
    '--evaluation', default=None, metavar='JSON',
    help='With --tracker: an evaluate.py --filename JSON of this model, whose distance '
         'threshold at a false-positive rate of 0.1%% the sidecars record (a pair of crops '
         'nearer than it is the same person).')

parser.add_argument(
    '--quiet', action='store_true', default=False,
    help='Don\'t be so verbose.')


def check_output(path, flag):
    """Refuses an output that exists (a link to nothing too) or whose folder
    cannot be written, before any work."""
    if os.path.lexists(path):
        raise cli.UserError('`{}` exists already{}; remove it or choose another {}.'.format(
            path, ' (a link to nothing)' if not os.path.exists(path) else '', flag))
    files.check_writable(path, flag)


def check_outputs(args, output):
    """Refuses the outputs of the SavedModel, --onnx and --tflite, and flags
    that need others, before any work."""
    check_output(output, '--output')
    if args.tflite_int8 and not args.tflite:
        raise cli.UserError('--tflite_int8 quantises the --tflite model; give --tflite.')
    if args.calibration_images and not args.tflite_int8:
        raise cli.UserError('--calibration_images calibrate --tflite_int8; give it too.')
    if args.tflite:
        check_output(args.tflite, '--tflite')
        if os.path.abspath(args.tflite) in (os.path.abspath(output),
                                            os.path.abspath(args.onnx or output)):
            raise cli.UserError('--tflite `{}` names another output\'s path.'.format(
                args.tflite))
    if args.onnx:
        check_output(args.onnx, '--onnx')
        if os.path.abspath(args.onnx) == os.path.abspath(output):
            raise cli.UserError('--onnx and --output name the same path `{}`.'.format(output))
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise cli.UserError('--onnx needs tf2onnx: `.venv/bin/pip install tf2onnx '
                                'onnxruntime`. Nothing was exported.')


def main(argv=None):
    args = parser.parse_args(argv)
    # TensorFlow comes only after the arguments parse, so that --help and a
    # mistyped flag answer at once (see startup.quiet_tensorflow).
    startup.quiet_tensorflow()
    from triplet_reid.serving import exported
    from triplet_reid.models.inference import load_experiment

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    output = args.output or os.path.join(args.experiment_root, 'saved_model')
    check_outputs(args, output)
    tracker_outputs = check_tracker_arguments(args, output)

    model, train_args, checkpoint = load_experiment(args.experiment_root, args.checkpoint)
    experiment = Experiment.of(train_args)
    if args.tracker and experiment.temporal_pooling is not None:
        raise cli.UserError('--tracker exports embed one crop at a time, and `{}` is a video '
                            'experiment that combines the frames of tracklets (--seq_len); '
                            'export it without --tracker. Nothing was exported.'.format(
                                args.experiment_root))
    module = exported.EmbeddingModule(model, experiment.net_input_size, experiment.antialias,
                                      experiment.sie_cameras)
    # The calibration images are read first, so that a bad training set
    # stops the export before anything is written.
    representative = exported.calibration_images(
        train_args, args.tflite_samples, args.calibration_images) if args.tflite_int8 else None
    log('Tracing and writing the SavedModel of {} (some seconds)…'.format(checkpoint))
    exported.export_saved_model(module, output)
    log('Exported {} to the SavedModel {}.'.format(checkpoint, output))
    if args.onnx:
        log('Converting to ONNX with tf2onnx (half a minute or more)…')
        exported.export_onnx(module, args.onnx)
        log('Exported {} to the ONNX model {}.'.format(checkpoint, args.onnx))
    if args.tflite:
        log('Converting to TensorFlow Lite{}…'.format(
            ', int8 calibrated on {} training images'.format(len(representative))
            if args.tflite_int8 else ''))
        exported.export_tflite(module, args.tflite, representative)
        log('Exported {} to the TensorFlow Lite model {}.'.format(checkpoint, args.tflite))
        problem = exported.xnnpack_problem(args.tflite, module.net_input_size)
        if problem:
            print('WARNING: {} does not run with TensorFlow Lite\'s default XNNPACK delegate ({}); '
                  'run it with the built-in kernels: ai_edge_litert.interpreter.Interpreter('
                  '..., experimental_op_resolver_type=ai_edge_litert.interpreter.'
                  'OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).'.format(args.tflite, problem),
                  file=sys.stderr)
    if args.tracker:
        export_tracker(args, model, experiment, train_args, checkpoint, tracker_outputs, log)
    return 0


def check_tracker_arguments(args, output):
    """The (format, model path, sidecar path) of --tracker, checked before any
    work, with the threshold of --evaluation read into `args.threshold`."""
    from triplet_reid.serving import tracker
    args.threshold = None
    if not args.tracker:
        if args.evaluation:
            raise cli.UserError('--evaluation gives the threshold of the --tracker exports; '
                                'give --tracker too.')
        return []
    if args.evaluation:
        args.threshold = tracker.evaluation_threshold(args.evaluation)
    files.check_writable(args.tracker, '--tracker', folder=True)
    saved_model = os.path.realpath(output)
    if os.path.commonpath([saved_model, os.path.realpath(args.tracker)]) == saved_model:
        raise cli.UserError('--tracker `{}` is the SavedModel\'s folder `{}` or lies inside it; '
                            'give the tracker models a folder of their own.'.format(
                                args.tracker, output))
    from triplet_reid.experiment import trained_args
    names = tracker.file_names(Experiment.of(trained_args(args.experiment_root)),
                               args.experiment_root,
                               dict.fromkeys(args.tracker_formats))
    outputs = []
    for fmt, name in names.items():
        path = os.path.join(args.tracker, name)
        for target in (path, path + '.metadata.json'):
            if os.path.isdir(args.tracker):  # A new folder holds none of them yet.
                check_output(target, '--tracker')
            if os.path.abspath(target) in {os.path.abspath(p) for p in (
                    output, args.onnx, args.tflite) if p}:
                raise cli.UserError('--tracker writes `{}`, which another output names.'.format(
                    target))
        outputs.append((fmt, path, path + '.metadata.json'))
    return outputs


def export_tracker(args, model, experiment, train_args, checkpoint, outputs, log):
    """Writes the --tracker models and their sidecars."""
    from triplet_reid.serving import tracker
    from triplet_reid.inputs.embeddings_file import embedding_origin
    net = tracker.boxmot_architecture(experiment.model_name)
    convention = tracker.tracker_model(model, experiment.net_input_size)
    metadata = tracker.sidecar(experiment, train_args.get('metric', 'euclidean'), net,
                               args.threshold, embedding_origin(args.experiment_root,
                                                                checkpoint))
    for fmt, path, sidecar in outputs:
        log('Writing the {} model for trackers…'.format(fmt.upper()))
        tracker.EXPORTERS[fmt](convention, path)
        files.write_json(sidecar, metadata, replace=False)
        log('Exported {} to {} for trackers (BoxMOT reads it as {}), with {}.'.format(
            checkpoint, path, net, sidecar))


def command():
    """`reid-export`, the command that `pip install .` installs (pyproject.toml)."""
    cli.run(main)


if __name__ == '__main__':
    command()
