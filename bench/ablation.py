#!/usr/bin/env python3
"""Benchmark: the strong baseline's tricks added one at a time to TriNet, as BoT's ablation.

Trains the demo recipe of `bench.parity` (tiny + fc1024, P=18 K=4, 128×64
crops from 144×72, batch-hard soft margin, Adam 3e-4 for 600 iterations with
the original's decay) once per seed, then again with each trick added on top
of the previous ones, and evaluates each run on the demo test set with the
market1501 rules. Every run is the whole user's run: train.py, embed.py for
query and gallery, evaluate.py.

    .venv/bin/python -m bench.ablation --seeds 0 1 2 --json bench/results/ablation_demo.json

`--steps` names the rows to run (all by default), to split the work over
several invocations; `--merge` folds earlier JSON files into the table.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile

import numpy as np

from bench import parity

# Each row adds its flags to all the rows above it. The identity loss starts
# without label smoothing so that smoothing is a step of its own, as in BoT.
STEPS = (
    ('TriNet', ''),
    ('+ identity loss', '--id_loss_weight 1 --label_smoothing 0'),
    ('+ warm-up', '--warmup_iterations 60'),
    ('+ label smoothing', '--label_smoothing 0.1'),
    # BNNeck on TriNet's embedding: `tiny` needs the fc1024 head's MLP, which
    # the `bnneck` head (BoT's, for a pretrained ResNet) would drop.
    ('+ BNNeck', '--head_name fc1024_bnneck'),
    ('+ center loss', '--center_loss_weight 5e-4'),
    # Last, as it is the one trick that hurt on the demo set in a first run.
    ('+ random erasing (all of BoT)', '--random_erasing 0.5'),
)


def flags_of(index):
    """The train.py flags of row `index`: its own and those of every row above."""
    flags = []
    for _, extra in STEPS[:index + 1]:
        flags += shlex.split(extra)
    # A later value of a flag replaces an earlier one.
    merged, order = {}, []
    for i in range(0, len(flags), 2):
        if flags[i] not in merged:
            order.append(flags[i])
        merged[flags[i]] = flags[i + 1]
    return ' '.join('{} {}'.format(flag, merged[flag]) for flag in order)


def print_table(rows, seeds, metric):
    """The Markdown table of every row's figures under `metric`. Runs from before
    bench.parity kept several metrics were evaluated with Euclidean distances
    only; rows without `metric` are left out."""
    def figure(run, key):
        return run.get('metrics', {'euclidean': run}).get(metric, {}).get(key, np.nan)

    print('\n{} distances:\n'.format(metric))
    print('| recipe | ' + ' | '.join('mAP seed {}'.format(s) for s in seeds) +
          ' | mean mAP ± sd | mean top-1 ± sd |')
    print('|---' * (len(seeds) + 3) + '|')
    for name, row in sorted(rows.items(), key=lambda item: item[1]['index']):
        m_ap = np.array([figure(r, 'mAP') for r in row['runs']])
        top1 = np.array([figure(r, 'top1') for r in row['runs']])
        if np.isnan(m_ap).all():
            continue
        print('| {} | {} | {:.2%} ± {:.2%} | {:.2%} ± {:.2%} |'.format(
            name, ' | '.join('{:.2%}'.format(v) for v in m_ap), m_ap.mean(), m_ap.std(ddof=1),
            top1.mean(), top1.std(ddof=1)))


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='Seeds; every row trains once per seed.')
    parser.add_argument('--steps', type=int, nargs='*', default=list(range(len(STEPS))),
                        help='Row numbers (0 = TriNet) to run; none, to print the --merge '
                        'files\' table.')
    parser.add_argument('--merge', nargs='*', default=[],
                        help='JSON files of earlier invocations to add to the table.')
    parser.add_argument('--embed_flags', default='',
                        help='Extra embed.py flags for every run, as one shell-quoted string '
                        '(for example "--crop_augment center", the training scale); by '
                        'default query and gallery are resized, as in bench.parity.')
    parser.add_argument('--metric', nargs='+', default=['euclidean'], choices=parity.METRICS,
                        help='Distances to evaluate every run with (see bench.parity); the '
                        'table shows each.')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)
    rows = {}
    for path in args.merge:
        with open(path) as f:
            rows.update(json.load(f)['rows'])
    recipe = parity.parse_args(['--only', 'project', '--embed_flags', args.embed_flags,
                                '--metric'] + args.metric)
    with tempfile.TemporaryDirectory(prefix='ablation-') as scratch:
        log = os.path.join(scratch, 'log.txt')
        for index in args.steps:
            name = STEPS[index][0]
            recipe.train_flags = flags_of(index)
            results = []
            for seed in args.seeds:
                root = os.path.join(scratch, '{}-{}'.format(index, seed))
                result = parity.run_project(recipe, seed, root, log)
                result['seed'] = seed
                results.append(result)
                print('{:34} seed {}: mAP {:.2%}, top-1 {:.2%}'.format(
                    name, seed, result['mAP'], result['top1']), flush=True)
            rows[name] = {'index': index, 'flags': recipe.train_flags,
                          'embed_flags': args.embed_flags, 'runs': results}
    for metric in args.metric:
        print_table(rows, args.seeds, metric)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'argv': sys.argv[1:], 'rows': rows}, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
