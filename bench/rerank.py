#!/usr/bin/env python3
"""Benchmark: `evaluate.py --rerank` at Market-1501 scale, time and peak memory.

Each setting runs the whole evaluate.py command in a fresh process, on
synthetic 128-D embeddings laid over the real Market-1501 file lists (3368
queries × 19732 gallery images, junk and distractors included; see
bench.evaluate), and reports the child's wall time and peak resident
memory. The budget is 4 GiB; the authors' dense code would hold
several 23100 × 23100 matrices (2 GiB each in float32).

    .venv/bin/python -m bench.rerank [--reference DIR] [--json FILE]
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

from triplet_reid import common
from triplet_reid.storage import files
from bench.evaluate import synthetic_embeddings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETTINGS = (
    ('plain', []),
    ('rerank k1=20 k2=6 λ=0.3', ['--rerank']),
    ('rerank k1=30 k2=10 λ=0.3', ['--rerank', '--rerank_k1', '30', '--rerank_k2', '10']),
)
# The noise scale around each identity's centre: an easy embedding (mAP about
# 86%) and a hard one (about 22%), where re-ranking has more to gain.
SPREADS = (('easy', 1.2), ('hard', 1.5))


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--reference', default=os.path.join(
        ROOT, '..', 'shared', 'reference', 'market1501'),
        help='Folder with market1501_{query,test}.csv.')
    parser.add_argument('--json', help='Also write the rows to this JSON file.')
    args = parser.parse_args()

    query_csv = os.path.join(args.reference, 'market1501_query.csv')
    gallery_csv = os.path.join(args.reference, 'market1501_test.csv')
    q_pids, _ = common.load_dataset(query_csv, None)
    g_pids, _ = common.load_dataset(gallery_csv, None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for difficulty, spread in SPREADS:
            rows += bench_spread(tmp, q_pids, g_pids, query_csv, gallery_csv, difficulty, spread)

    machine = '{} ({} cores), {}'.format(platform.machine(), os.cpu_count(), platform.platform())
    print('machine: ' + machine)
    print('{:<6} {:<26} {:>11} {:>8} {:>9}  {}'.format('data', 'setting', 'size', 'seconds',
                                                       'peak MiB', 'result'))
    for row in rows:
        print('{:<6} {:<26} {:>11} {:>8.2f} {:>9}  {}'.format(
            row['data'], row['setting'], row['size'], row['seconds'], row['peak_mib'],
            row['result']))
    if args.json:
        files.write_json(args.json, {'machine': machine, 'rows': rows})
    return 0


def bench_spread(tmp, q_pids, g_pids, query_csv, gallery_csv, difficulty, spread):
    embs = synthetic_embeddings(np.concatenate([q_pids, g_pids]), np.random.default_rng(0),
                                spread=spread)
    files = []
    for name, data in (('query.h5', embs[:len(q_pids)]), ('gallery.h5', embs[len(q_pids):])):
        files.append(os.path.join(tmp, name))
        with h5py.File(files[-1], 'w') as f:
            f.create_dataset('emb', data=data)
    base = [sys.executable, os.path.join(ROOT, 'evaluate.py'), '--excluder', 'market1501',
            '--metric', 'euclidean', '--query_dataset', query_csv, '--gallery_dataset',
            gallery_csv, '--query_embeddings', files[0], '--gallery_embeddings', files[1]]
    rows = []
    for name, flags in SETTINGS:
        # A wrapper process per setting, so that RUSAGE_CHILDREN is its own.
        wrapper = [sys.executable, '-c',
                   'import resource, subprocess, sys; subprocess.run(sys.argv[1:], '
                   'check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN)'
                   '.ru_maxrss)'] + base + flags
        start = time.perf_counter()
        done = subprocess.run(wrapper, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        lines = done.stdout.strip().splitlines()
        rows.append({'data': difficulty, 'setting': name,
                     'size': '{}×{}'.format(len(q_pids), len(g_pids)),
                     'seconds': round(seconds, 2), 'peak_mib': round(int(lines[-1]) / 1024),
                     'result': lines[-2]})
    return rows


if __name__ == '__main__':
    sys.exit(main())
