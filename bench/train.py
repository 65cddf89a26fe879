#!/usr/bin/env python3
"""Benchmark: training-step throughput of every net, the input pipeline, peak memory.

For each net, in a process of its own (so that its peak memory is its own):
  - the training step of train.py on synthetic tensors (input pipeline
    excluded), at a small CPU setting (P=8, K=4, 128×64) and at the paper's
    setting (P=18, K=4, 256×128);
  - the same small setting fed by the real P×K pipeline from JPEGs of the demo
    set (decoding, resizing, flip and crop augmentation included), so that a
    slow pipeline shows;
  - the FLOPs of the step (3 × the forward pass, from TensorFlow's profiler) over
    the machine's measured float32 matrix-multiply rate.
And the input pipeline alone against --loading_threads.

    .venv/bin/python -m bench.train [--nets tiny resnet_v1_50 …] [--json FILE]
    .venv/bin/python -m bench.train --nets resnet_v1_50 --variants none mixed_precision=bfloat16

`--variants` measures each net once per set of train.py settings (`none`, or
comma-separated `flag` / `flag=value` items such as `mixed_precision=bfloat16,xla`),
all in one run so that their ratios compare like with like.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NETS = ('tiny', 'lunet', 'mobilenet_v1_1_224', 'resnet_v1_50', 'resnet_v1_101',
        'resnet_v1_152')
SMALL = dict(batch_p=8, batch_k=4, size=(128, 64), pre_crop=(144, 72))
PAPER = dict(batch_p=18, batch_k=4, size=(256, 128), pre_crop=(288, 144))


def peak_memory_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(n=2048, repeats=10, trials=5):
    """The machine's float32 matrix-multiply rate in GFLOP/s, the best of
    several trials (the rate the network's FLOPs are compared with)."""
    import tensorflow as tf
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    (a @ b).numpy()
    best = 0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            c = a @ b
        c.numpy()
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def forward_flops(model, size):
    """FLOPs of one image's forward pass, counted by TensorFlow's profiler."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1,) + tuple(size) + (3,), tf.float32))
    options = option_builder.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    return model_analyzer.profile(concrete.graph, options=options).total_float_ops


def time_steps(train_step, batches, warmup, steps):
    for _ in range(warmup):
        images, labels = next(batches)
        train_step(images, labels)['losses'].numpy()
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        train_step(images, labels)['losses'].numpy()
    return (time.perf_counter() - start) / steps


def build(net, setting, variant=None):
    """The model, optimizer and step of train.py for `net` at `setting`, with
    the `variant`'s settings (see `variant_settings`)."""
    import keras
    import tensorflow as tf
    from triplet_reid import training
    import triplet_reid.training.step  # noqa: F401
    from triplet_reid.experiment import StepSettings
    from triplet_reid.models.build import build_model
    variant = dict(variant or {})
    mixed_precision = variant.pop('mixed_precision', 'off')
    # train.py draws a seed in main(); the step needs one for its random losses.
    settings = StepSettings(batch_p=setting['batch_p'], batch_k=setting['batch_k'], seed=0,
                            **variant)
    strategy = tf.distribute.get_strategy()
    model, _ = build_model(net, 'fc1024', 128, mixed_precision)
    optimizer = keras.optimizers.Adam(1e-4)
    if mixed_precision == 'float16':
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    return model, training.step.make_train_step(model, optimizer, step, settings, strategy)[0]


def synthetic(setting):
    import numpy as np
    import tensorflow as tf
    batch = setting['batch_p'] * setting['batch_k']
    images = tf.constant(np.random.default_rng(0).uniform(
        0, 255, (batch,) + setting['size'] + (3,)).astype(np.float32))
    labels = tf.constant(np.repeat(np.arange(setting['batch_p'], dtype=np.int32),
                                   setting['batch_k']))
    while True:
        yield images, labels


def real(setting, data, threads):
    from triplet_reid import common
    from triplet_reid.inputs import images, sampler
    pids, fids = common.load_dataset(os.path.join(data, 'demo_train.csv'), data)
    preprocessing = images.Preprocessing(setting['size'], setting['pre_crop'])
    dataset = sampler.pk_dataset(pids, fids, data, preprocessing, batch_p=setting['batch_p'],
                                 batch_k=setting['batch_k'], flip_augment=True,
                                 crop_augment=True, seed=0, loading_threads=threads)
    for batch, _, _, labels in dataset:
        yield batch, labels


def variant_settings(variant):
    """`mixed_precision=bfloat16,xla` -> {'mixed_precision': 'bfloat16', 'xla': True}: train.py's
    --mixed_precision and the fields of `experiment.StepSettings`."""
    settings = {}
    for item in ([] if variant == 'none' else variant.split(',')):
        key, _, value = item.partition('=')
        settings[key] = value or True
    return settings


def bench_net(net, data, steps, paper_steps, variant='none', threads=2, paper_real=False):
    """One net's rows; run in a process of its own."""
    rows = []
    rate = matmul_gflops()
    configs = [('small, synthetic', SMALL, 'synthetic', steps),
               ('small, real pipeline', SMALL, 'real', steps),
               ('paper, synthetic', PAPER, 'synthetic', paper_steps)]
    if paper_real:
        configs.append(('paper, real pipeline', PAPER, 'real', paper_steps))
    for name, setting, source, count in configs:
        model, train_step = build(net, setting, variant_settings(variant))
        batches = synthetic(setting) if source == 'synthetic' else real(setting, data, threads)
        # The first step traces the function; the paper setting's steps are long.
        seconds = time_steps(train_step, batches, warmup=1 if setting is PAPER else 2,
                             steps=count)
        batch = setting['batch_p'] * setting['batch_k']
        flops = 3 * forward_flops(model, setting['size']) * batch
        rows.append({'net': net, 'variant': variant, 'setting': name, 'batch': batch,
                     'images_per_s': round(batch / seconds, 1),
                     'step_s': round(seconds, 3),
                     'gflops_per_s': round(flops / seconds / 1e9, 1),
                     'matmul_gflops_per_s': round(rate, 1),
                     'flops_ratio': round(flops / seconds / 1e9 / rate, 3),
                     'peak_mib': round(peak_memory_mib())})
    return rows


def bench_pipeline(data, threads_list, batches=20):
    """Images/s of the P×K pipeline alone (decode, resize, augment, batch)."""
    rows = []
    for setting_name, setting in (('small', SMALL), ('paper', PAPER)):
        for threads in threads_list:
            stream = real(setting, data, threads)
            next(stream)
            start = time.perf_counter()
            for _ in range(batches):
                next(stream)
            seconds = time.perf_counter() - start
            batch = setting['batch_p'] * setting['batch_k']
            rows.append({'setting': setting_name, 'loading_threads': threads,
                         'images_per_s': round(batches * batch / seconds, 1),
                         'peak_mib': round(peak_memory_mib())})
    return rows


def run_worker(argv):
    """Runs this script in a fresh process and returns its JSON rows."""
    done = subprocess.run([sys.executable, '-m', 'bench.train'] + argv, cwd=ROOT,
                          capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--nets', nargs='+', default=list(NETS), help='Nets to measure.')
    parser.add_argument('--steps', type=int, default=3, help='Timed steps, small setting.')
    parser.add_argument('--paper_steps', type=int, default=2,
                        help='Timed steps at the paper setting.')
    parser.add_argument('--variants', nargs='+', default=['none'],
                        help='Sets of train.py flags to measure, see above.')
    parser.add_argument('--loading_threads', type=int, default=2,
                        help='Threads of the real pipeline in the training rows.')
    parser.add_argument('--paper_real', action='store_true',
                        help='Also time the paper setting with the real pipeline.')
    parser.add_argument('--json', help='Also write the rows to this JSON file.')
    parser.add_argument('--worker', choices=('net', 'pipeline'), help=argparse.SUPPRESS)
    parser.add_argument('--data', help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == 'net':
        print(json.dumps(bench_net(args.nets[0], args.data, args.steps, args.paper_steps,
                                   args.variants[0], args.loading_threads, args.paper_real)))
        return 0
    if args.worker == 'pipeline':
        print(json.dumps(bench_pipeline(args.data, (1, 2, 4, 8))))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, 'demo')
        from triplet_reid.data import make_demo
        make_demo.generate(data, train_ids=60, test_ids=2, distractors=0, junk=0)
        common_argv = ['--data', data, '--steps', str(args.steps), '--paper_steps',
                       str(args.paper_steps), '--loading_threads', str(args.loading_threads)]
        net_rows = []
        for net in args.nets:
            for variant in args.variants:
                net_rows += run_worker(['--worker', 'net', '--nets', net, '--variants', variant] +
                                       common_argv + (['--paper_real'] if args.paper_real else []))
        pipeline_rows = run_worker(['--worker', 'pipeline'] + common_argv)

    machine = '{} ({} cores), {}'.format(platform.machine(), os.cpu_count(), platform.platform())
    print('machine: ' + machine)
    print('{:<20} {:<24} {:<22} {:>6} {:>9} {:>8} {:>9} {:>7} {:>9}'.format(
        'net', 'flags', 'setting', 'batch', 'images/s', 's/step', 'GFLOP/s', 'of mm',
        'peak MiB'))
    for r in net_rows:
        print('{:<20} {:<24} {:<22} {:>6} {:>9} {:>8} {:>9} {:>6.0%} {:>9}'.format(
            r['net'], r['variant'], r['setting'], r['batch'], r['images_per_s'], r['step_s'],
            r['gflops_per_s'], r['flops_ratio'], r['peak_mib']))
    print('matrix multiply (float32, best of 5 in each process): {} GFLOP/s'.format(
        ', '.join(sorted({str(r['matmul_gflops_per_s']) for r in net_rows}))))
    print('\n{:<10} {:>16} {:>9} {:>9}'.format('pipeline', 'loading_threads', 'images/s',
                                               'peak MiB'))
    for r in pipeline_rows:
        print('{:<10} {:>16} {:>9} {:>9}'.format(r['setting'], r['loading_threads'],
                                                 r['images_per_s'], r['peak_mib']))
    if args.json:
        from triplet_reid.storage import files
        files.write_json(args.json, {'machine': machine, 'train_step': net_rows,
                                     'pipeline': pipeline_rows})
    return 0


if __name__ == '__main__':
    sys.exit(main())
