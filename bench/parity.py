#!/usr/bin/env python3
"""Benchmark: accuracy and wall time against the independent PyTorch reference.

Trains the same TriNet recipe in this project and in `torch_reference.py`
(../shared/tools/ by default) on the same CSVs, seed by seed, and compares
their mAP and their whole-run wall time. The recipe is the reference's: a
`tiny` net with the `fc1024` head and 128-dimensional embeddings, P×K
batches, random crops from 9/8 of the input size without flips, batch-hard
with the soft margin, Euclidean distances, Adam at 3e-4 decaying from 3/5 of
the iterations; query and gallery are embedded by resizing to the net input.

The project's run is what a user runs: train.py, embed.py for query and
gallery, and evaluate.py, each a process of its own; its time counts all of
them. The reference runs in one process. The two implementations run one
after the other, never at the same time, so their times compare.

The reference needs PyTorch, which the project does not install; give it a
Python of its own environment (torch numpy scikit-learn pillow):

    .venv/bin/python -m bench.parity --torch_python ../torchenv/bin/python \\
        --seeds 0 1 2 --json bench/results/parity_demo.json

`--only project` skips the reference, `--train_flags` adds train.py flags (to
measure one change at a time). The 64×64 recipe on real letter shapes, shrunk
from 105×105 (`data/make_glyphs.py`):

    .venv/bin/python data/make_glyphs.py --output ../scratch/glyphs
    G=../scratch/glyphs; .venv/bin/python -m bench.parity --torch_python ../torchenv/bin/python \
        --train_csv $G/glyphs_train.csv --query_csv $G/glyphs_test.csv \
        --gallery_csv $G/glyphs_test.csv --image_root $G --excluder diagonal \
        --height 64 --width 64 --seeds 0 1 2 --json bench/results/parity_glyphs.json
"""

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'data', 'demo')
# evaluate.py's --metric choices (metrics.METRICS, without importing TensorFlow here).
METRICS = ('euclidean', 'sqeuclidean', 'cityblock', 'cosine')


def parse_args(argv):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--torch_python', help='The Python of an environment with PyTorch, '
                        'scikit-learn and Pillow, to run the reference with.')
    parser.add_argument('--reference', default=os.path.join(
        ROOT, '..', 'shared', 'tools', 'torch_reference.py'),
        help='The reference implementation.')
    parser.add_argument('--train_csv', default=os.path.join(DEMO, 'demo_train.csv'),
                        help='Training CSV (the demo set by default).')
    parser.add_argument('--query_csv', default=os.path.join(DEMO, 'demo_query.csv'),
                        help='Query CSV.')
    parser.add_argument('--gallery_csv', default=os.path.join(DEMO, 'demo_test.csv'),
                        help='Gallery CSV.')
    parser.add_argument('--image_root', default=DEMO, help='The folder the CSVs are '
                        'relative to.')
    parser.add_argument('--excluder', default='market1501', choices=('market1501', 'diagonal'),
                        help='The evaluation protocol.')
    parser.add_argument('--height', type=int, default=128, help='Net input height.')
    parser.add_argument('--width', type=int, default=64, help='Net input width.')
    parser.add_argument('--steps', type=int, default=600, help='Training iterations.')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='Seeds; each implementation trains once per seed.')
    parser.add_argument('--only', choices=('project', 'reference'),
                        help='Run one implementation only.')
    parser.add_argument('--train_flags', default='',
                        help='Extra train.py flags, as one shell-quoted string.')
    parser.add_argument('--embed_flags', default='',
                        help='Extra embed.py flags, as one shell-quoted string (for example '
                        '"--crop_augment center"); the recipe above resizes.')
    parser.add_argument('--metric', nargs='+', default=['euclidean'],
                        choices=METRICS,
                        help='Distances the project\'s embeddings are evaluated with; the '
                        'first gives the reported mAP and top-1, every one is in the JSON '
                        '(BoT evaluates its BNNeck features with cosine).')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    return parser.parse_args(argv)


def run(command, log):
    """Runs `command`, appending its output to `log`; returns (stdout, seconds)."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    with open(log, 'a') as f:
        f.write('$ {}\n{}{}\n'.format(shlex.join(command), result.stdout, result.stderr))
    if result.returncode:
        sys.exit('`{}` failed (exit {}); its output is in {}.'.format(
            shlex.join(command), result.returncode, log))
    return result.stdout, seconds


def run_reference(args, seed, log):
    command = [args.torch_python, args.reference, '--train_csv', args.train_csv,
               '--query_csv', args.query_csv, '--gallery_csv', args.gallery_csv,
               '--image_root', args.image_root, '--steps', str(args.steps),
               '--H', str(args.height), '--W', str(args.width), '--no_flip',
               '--excluder', args.excluder, '--seed', str(seed)]
    out, seconds = run(command, log)
    result = json.loads(out.strip().splitlines()[-1])
    return {'mAP': result['mAP'], 'top1': result['top1'], 'seconds': seconds}


def run_project(args, seed, root, log):
    python = sys.executable
    os.makedirs(root)
    command = [
        python, 'train.py', '--experiment_root', root, '--train_set', args.train_csv,
        '--image_root', args.image_root, '--model_name', 'tiny', '--head_name', 'fc1024',
        '--embedding_dim', '128', '--batch_p', '18', '--batch_k', '4',
        '--net_input_height', str(args.height), '--net_input_width', str(args.width),
        '--pre_crop_height', str(args.height * 9 // 8),
        '--pre_crop_width', str(args.width * 9 // 8), '--crop_augment',
        '--train_iterations', str(args.steps),
        '--decay_start_iteration', str(args.steps * 3 // 5), '--checkpoint_frequency', '0',
        '--seed', str(seed)] + shlex.split(args.train_flags)
    _, seconds = run(command, log)
    embeddings = []
    for name, csv in (('query', args.query_csv), ('gallery', args.gallery_csv)):
        filename = name + '.h5'
        _, took = run([python, 'embed.py', '--experiment_root', root, '--dataset', csv,
                       '--filename', filename, '--quiet'] + shlex.split(args.embed_flags), log)
        seconds += took
        embeddings.append(os.path.join(root, filename))
    by_metric = {}
    for metric in args.metric:
        results = os.path.join(root, 'eval-{}.json'.format(metric))
        out, took = run([python, 'evaluate.py', '--excluder', args.excluder, '--metric', metric,
                         '--query_dataset', args.query_csv, '--gallery_dataset',
                         args.gallery_csv, '--query_embeddings', embeddings[0],
                         '--gallery_embeddings', embeddings[1], '--filename', results], log)
        with open(results) as f:
            by_metric[metric] = {'mAP': json.load(f)['mAP'],
                                 'top1': float(re.search(r'top-1: ([\d.]+)%', out).group(1)) / 100}
        if metric == args.metric[0]:
            # The whole run's time counts one evaluation, as a user's run has.
            seconds += took
    first = by_metric[args.metric[0]]
    return {'mAP': first['mAP'], 'top1': first['top1'], 'seconds': seconds, 'metrics': by_metric}


def print_table(results, seeds, label):
    """Prints {name: rows of one run per seed} as a Markdown table, a row per
    name; returns each name's `summarise`."""
    summaries = {name: summarise(rows) for name, rows in results.items()}
    print('\n| {} | '.format(label) + ' | '.join('seed {}'.format(s) for s in seeds) +
          ' | mean mAP ± sd | mean top-1 ± sd | mean seconds |')
    print('|---' * (len(seeds) + 4) + '|')
    for name, rows in results.items():
        s = summaries[name]
        print('| {} | {} | {:.2%} ± {:.2%} | {:.2%} ± {:.2%} | {:.0f} |'.format(
            name, ' | '.join('{:.2%}'.format(r['mAP']) for r in rows), s['mAP']['mean'],
            s['mAP']['std'], s['top1']['mean'], s['top1']['std'], s['seconds']['mean']))
    return summaries


def summarise(rows):
    """Mean and sample standard deviation of each figure over the seeds."""
    summary = {}
    for key in ('mAP', 'top1', 'seconds'):
        values = np.array([row[key] for row in rows])
        summary[key] = {'mean': float(values.mean()),
                        'std': float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return summary


def main(argv=None):
    args = parse_args(argv)
    implementations = [name for name in ('reference', 'project') if args.only in (None, name)]
    if 'reference' in implementations and not args.torch_python:
        sys.exit('--torch_python is needed to run the reference (or pass --only project).')
    results = {name: [] for name in implementations}
    with tempfile.TemporaryDirectory(prefix='parity-') as scratch:
        log = os.path.join(scratch, 'log.txt')
        for seed in args.seeds:
            for name in implementations:
                if name == 'reference':
                    row = run_reference(args, seed, log)
                else:
                    row = run_project(args, seed, os.path.join(scratch, 'seed{}'.format(seed)),
                                      log)
                row['seed'] = seed
                results[name].append(row)
                print('{:9} seed {}: mAP {:.2%}, top-1 {:.2%}, {:.0f} s'.format(
                    name, seed, row['mAP'], row['top1'], row['seconds']), flush=True)
    summaries = print_table(results, args.seeds, 'implementation')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'argv': sys.argv[1:],
                       'recipe': {'height': args.height, 'width': args.width,
                                  'steps': args.steps, 'train_flags': args.train_flags,
                                  'train_csv': os.path.relpath(args.train_csv, ROOT)},
                       'results': results, 'summary': summaries}, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
