#!/usr/bin/env python3
"""Benchmark: training on two datasets at once, and evaluating across them.

Set A is the demo set (`data/demo`, seed 0) and set B a second demo set drawn
with `make_demo.py --seed 1`: other people and other cameras (backgrounds,
colour casts, brightness), and the same identity names 0001-0150, as two
public datasets have. The demo recipe of `bench.parity` (tiny + fc1024, P=18
K=4, 600 iterations) trains on

- A alone, and B alone (each evaluated on the other set too: cross-domain);
- A and B with `--train_set A B --image_root ROOT_A ROOT_B`, which keeps the
  identities of the two sets apart;
- A and B as one concatenated CSV, the naive way, in which A's `0002` and
  B's `0002` become one person;

once per seed, and every run is evaluated on the test sets of both (market1501
rules, embeddings of resized images as in bench.parity).

    .venv/bin/python -m bench.multi_dataset --seeds 0 1 --json bench/results/multi_dataset_demo.json
"""

import argparse
import json
import os
import platform
import re
import sys
import tempfile

import numpy as np

from bench import parity

ROWS = ('A alone', 'B alone', 'A + B, kept apart (--train_set A B)',
        'A + B, one concatenated CSV')


def train_sets(row, a, b, scratch):
    """The --train_set and --image_root values of `row`, given the (root, name)
    of each set; the concatenated CSV is written into `scratch`."""
    csv = {name: os.path.join(root, '{}_train.csv'.format(name)) for root, name in (a, b)}
    if row == 0:
        return [csv['demo']], [a[0]]
    if row == 1:
        return [csv['demo_b']], [b[0]]
    if row == 2:
        return [csv['demo'], csv['demo_b']], [a[0], b[0]]
    # Both sets in one CSV relative to their common folder, as a user would
    # concatenate two lists.
    root = os.path.commonpath([a[0], b[0]])
    path = os.path.join(scratch, 'concatenated.csv')
    with open(path, 'w') as out:
        for folder, name in (a, b):
            with open(csv[name]) as f:
                for line in f:
                    pid, fid = line.strip().split(',')
                    out.write('{},{}\n'.format(pid, os.path.relpath(os.path.join(folder, fid),
                                                                    root)))
    return [path], [root]


def run(recipe, seed, root, sets, roots, tests, log):
    """Trains the bench.parity recipe on `sets` and evaluates it on each of
    `tests` ({name: (folder, csv prefix)}); returns {name: {'mAP', 'top1'}}."""
    python = sys.executable
    os.makedirs(root)
    parity.run([python, 'train.py', '--experiment_root', root, '--train_set'] + sets +
               ['--image_root'] + roots +
               ['--model_name', 'tiny', '--head_name', 'fc1024', '--embedding_dim', '128',
                '--batch_p', '18', '--batch_k', '4', '--net_input_height', '128',
                '--net_input_width', '64', '--pre_crop_height', '144', '--pre_crop_width', '72',
                '--crop_augment', '--train_iterations', str(recipe.steps),
                '--decay_start_iteration', str(recipe.steps * 3 // 5),
                '--checkpoint_frequency', '0', '--seed', str(seed)], log)
    scores = {}
    for name, (folder, prefix) in tests.items():
        files = []
        for split in ('query', 'test'):
            csv = os.path.join(folder, '{}_{}.csv'.format(prefix, split))
            filename = '{}_{}.h5'.format(name, split)
            parity.run([python, 'embed.py', '--experiment_root', root, '--dataset', csv,
                        '--image_root', folder, '--filename', filename, '--quiet'], log)
            files += [csv, os.path.join(root, filename)]
        out, _ = parity.run([python, 'evaluate.py', '--excluder', 'market1501', '--metric',
                             'euclidean', '--query_dataset', files[0], '--query_embeddings',
                             files[1], '--gallery_dataset', files[2], '--gallery_embeddings',
                             files[3]], log)
        scores[name] = {'mAP': float(re.search(r'mAP: ([\d.]+)%', out).group(1)) / 100,
                        'top1': float(re.search(r'top-1: ([\d.]+)%', out).group(1)) / 100}
    return scores


def print_table(rows, seeds):
    print('\n| trained on | test A mAP | test B mAP | test A top-1 | test B top-1 |')
    print('|---|---|---|---|---|')
    for name, runs in rows.items():
        cells = []
        for key in ('mAP', 'top1'):
            for test in ('A', 'B'):
                values = np.array([run[test][key] for run in runs])
                cells.append('{:.1%} ± {:.1%}'.format(values.mean(), values.std(ddof=1))
                             if len(values) > 1 else '{:.1%}'.format(values[0]))
        print('| {} | {} |'.format(name, ' | '.join(cells)))
    print('\n(mean ± standard deviation over seeds {})'.format(
        ', '.join(map(str, seeds))))


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1],
                        help='Seeds; every row trains once per seed.')
    parser.add_argument('--rows', type=int, nargs='+', default=list(range(len(ROWS))),
                        help='Row numbers to run (0: A alone, 1: B alone, 2: kept apart, '
                        '3: concatenated).')
    parser.add_argument('--steps', type=int, default=600, help='Training iterations.')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(parity.DEMO, 'demo_train.csv')):
        sys.exit('The demo set is missing; run `make demo` (or data/make_demo.py) first.')
    rows = {}
    with tempfile.TemporaryDirectory(prefix='multi-dataset-') as scratch:
        log = os.path.join(scratch, 'log.txt')
        set_b = os.path.join(scratch, 'demo_b')
        parity.run([sys.executable, 'data/make_demo.py', '--output', set_b, '--seed', '1'], log)
        # make_demo names its CSVs demo_*; B's are renamed to tell them apart.
        for split in ('train', 'test', 'query'):
            os.rename(os.path.join(set_b, 'demo_{}.csv'.format(split)),
                      os.path.join(set_b, 'demo_b_{}.csv'.format(split)))
        a, b = (parity.DEMO, 'demo'), (set_b, 'demo_b')
        tests = {'A': a, 'B': b}
        for index in args.rows:
            runs = []
            for seed in args.seeds:
                sets, roots = train_sets(index, a, b, scratch)
                scores = run(args, seed, os.path.join(scratch, '{}-{}'.format(index, seed)),
                             sets, roots, tests, log)
                scores['seed'] = seed
                runs.append(scores)
                print('{:38} seed {}: mAP on A {:.2%}, on B {:.2%}'.format(
                    ROWS[index], seed, scores['A']['mAP'], scores['B']['mAP']), flush=True)
            rows[ROWS[index]] = runs
    print_table(rows, args.seeds)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'argv': sys.argv[1:], 'steps': args.steps,
                       'rows': rows}, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
