#!/usr/bin/env python3
"""Benchmark: a run that collapses on the demo set, and the identity loss that prevents it.

Trains MobileNet v1 from scratch on the demo set with batch-hard, the
normalised TriNet head and a hinge margin of 0.2 (Adam 3e-4, 600 iterations,
no decay), once as it is and once with `--id_loss_weight 1`. Reports for
each the iteration at which train.py warned of a collapse (if it did), and
the last iteration's loss, `embedding_spread` and batch top-1.

    .venv/bin/python -m bench.collapse --json bench/results/collapse_demo.json
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'data', 'demo')

RECIPE = ['--model_name', 'mobilenet_v1_1_224', '--head_name', 'fc1024_normalize',
          '--margin', '0.2', '--learning_rate', '3e-4', '--embedding_dim', '128',
          '--batch_p', '18', '--batch_k', '4', '--net_input_height', '128',
          '--net_input_width', '64', '--decay_start_iteration', '-1',
          '--checkpoint_frequency', '0', '--histogram_every', '50', '--loading_threads', '4']
VARIANTS = (('triplet only', []), ('+ identity loss', ['--id_loss_weight', '1']))


def last_scalars(root, tags):
    """The last logged value of each scalar tag in the experiment root."""
    import tensorflow as tf
    found = {}
    for name in sorted(os.listdir(root)):
        if name.startswith('events.out'):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    if value.tag in tags:
                        found[value.tag] = float(tf.make_ndarray(value.tensor))
    return found


def run(root, iterations, seed, extra):
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--experiment_root', root,
               '--train_set', os.path.join(DEMO, 'demo_train.csv'), '--image_root', DEMO,
               '--train_iterations', str(iterations), '--seed', str(seed)] + RECIPE + extra
    subprocess.run(command, check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    with open(os.path.join(root, 'train.log')) as f:
        text = f.read()
    # The warning comes just before the log line of the iteration that raised it.
    warning = re.search(r'Training looks collapsed[^\n]*\n[^\n]*iter:\s*(\d+),', text)
    result = {'warned_at': int(warning.group(1)) if warning else None}
    result.update(last_scalars(root, {'loss', 'embedding_spread', 'batch_top1'}))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--iterations', type=int, default=600, help='Training iterations.')
    parser.add_argument('--seed', type=int, default=0, help='Seed of both runs.')
    parser.add_argument('--variants', type=int, nargs='+', default=list(range(len(VARIANTS))),
                        help='Which variants to run (0: triplet only, 1: + identity loss).')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix='collapse-') as scratch:
        for index, (name, extra) in enumerate(VARIANTS):
            if index not in args.variants:
                continue
            results[name] = run(os.path.join(scratch, str(index)), args.iterations, args.seed,
                                extra)
            print(name, results[name], flush=True)
    print('\n| MobileNet v1 from scratch | collapse warning at | last loss | last '
          'embedding_spread | last batch_top1 |')
    print('|---|---|---|---|---|')
    for name, r in results.items():
        print('| {} | {} | {:.3f} | {:.3f} | {:.1%} |'.format(
            name, 'iteration {}'.format(r['warned_at']) if r['warned_at'] else 'none',
            r['loss'], r['embedding_spread'], r['batch_top1']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'argv': sys.argv[1:], 'recipe': RECIPE, 'iterations': args.iterations,
                       'seed': args.seed, 'results': results}, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
