#!/usr/bin/env python3
"""Benchmark: the TensorFlow Lite export against the SavedModel, size and CPU latency.

For each net (untrained weights, the `fc1024` head, 128-D, 128×64 input),
writes what `export.py` writes (through `serving/exported.py`): the SavedModel,
the float32 TFLite model and the int8 one (calibrated on 100 synthetic
images), and measures each file's size, the time to embed one image and a
batch of 32 on this CPU (the best of `--repeats` after a warm-up), and how far
the TFLite embeddings lie from the
SavedModel's (largest absolute difference; cosine similarity for int8).

    .venv/bin/python -m bench.tflite [--nets tiny osnet_x0_25 …] [--json FILE]
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (128, 64)


def folder_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def best_time(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def tflite_runner(path, batch, delegates=True):
    """`run()` -> the embeddings of `batch`, with TFLite's default XNNPACK
    delegate or (not `delegates`) its built-in kernels alone."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType as resolver
    interpreter = Interpreter(
        model_path=path, num_threads=os.cpu_count(),
        experimental_op_resolver_type=resolver.AUTO if delegates else
        resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    index = interpreter.get_input_details()[0]['index']
    interpreter.resize_tensor_input(index, batch.shape)
    interpreter.allocate_tensors()

    def run():
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]['index'])
    return run


def bench_net(net, folder, repeats):
    import tensorflow as tf
    from triplet_reid.serving import exported
    from triplet_reid.models.build import build_model
    model, _ = build_model(net, 'fc1024', 128)
    module = exported.EmbeddingModule(model, SIZE, True)
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 255, (100,) + SIZE + (3,)).astype(np.float32)
    saved = os.path.join(folder, net)
    exported.export_saved_model(module, saved)
    paths = {'float32': saved + '.tflite', 'int8': saved + '_int8.tflite'}
    exported.export_tflite(module, paths['float32'])
    exported.export_tflite(module, paths['int8'], calibration)
    loaded = tf.saved_model.load(saved).signatures['serving_default']
    rows = []
    for batch_size in (1, 32):
        batch = rng.uniform(0, 255, (batch_size,) + SIZE + (3,)).astype(np.float32)
        expected = loaded(images=tf.constant(batch))['emb'].numpy()
        seconds = best_time(lambda: loaded(images=tf.constant(batch))['emb'].numpy(), repeats)
        rows.append({'net': net, 'format': 'SavedModel', 'batch': batch_size,
                     'mib': round(folder_size(saved) / 2 ** 20, 2),
                     'ms_per_image': round(1000 * seconds / batch_size, 2)})
        for kind, path in paths.items():
            # Some int8 models (OSNet's) fail in XNNPACK; they run on the built-in kernels.
            delegates = exported.xnnpack_problem(path, SIZE) is None
            run = tflite_runner(path, batch, delegates)
            out = run()
            cosine = (out * expected).sum(1) / (np.linalg.norm(out, axis=1) *
                                                np.linalg.norm(expected, axis=1))
            rows.append({'net': net, 'format': 'TFLite ' + kind + (
                '' if delegates else ' (built-in kernels)'), 'batch': batch_size,
                         'mib': round(folder_size(path) / 2 ** 20, 2),
                         'ms_per_image': round(1000 * best_time(run, repeats) / batch_size, 2),
                         'max_abs_diff': float(np.abs(out - expected).max()),
                         'min_cosine': round(float(cosine.min()), 4)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--nets', nargs='+', default=['tiny', 'osnet_x0_25', 'osnet',
                                                      'mobilenet_v1_1_224'],
                        help='Nets to export and time.')
    parser.add_argument('--repeats', type=int, default=5, help='Timings per figure; the best '
                        'counts.')
    parser.add_argument('--json', help='Also write the rows to this JSON file.')
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from triplet_reid.cli import startup
    startup.quiet_tensorflow()
    rows = []
    with tempfile.TemporaryDirectory(prefix='tflite-') as folder:
        for net in args.nets:
            rows += bench_net(net, folder, args.repeats)
    print('| net | format | batch | size MiB | ms per image | max abs diff | min cosine |')
    print('|---|---|---|---|---|---|---|')
    for row in rows:
        print('| {} | {} | {} | {} | {} | {} | {} |'.format(
            row['net'], row['format'], row['batch'], row['mib'], row['ms_per_image'],
            '{:.1e}'.format(row['max_abs_diff']) if 'max_abs_diff' in row else '',
            row.get('min_cosine', '')))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'rows': rows}, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
