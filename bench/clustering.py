#!/usr/bin/env python3
"""Benchmark: clustering unlabelled crops into pseudo-identities, time and peak memory.

Each size runs in a fresh process: synthetic 512-D embeddings of identities
with 2 to 30 crops each (Gaussian noise of `--spread` around a centre per
identity, then scaled to unit length), their nearest neighbours from faiss,
SpCL's k-reciprocal encodings (k1=30, k2=6), the Jaccard distances below
eps and DBSCAN (eps=0.6, min_samples=4), as training/pseudo_labels.py does.
Each row gives the seconds of every stage, the child's peak resident memory,
and how well the clusters match the identities (pairwise precision and
recall, NMI). The budget (issue 46) is 2 minutes and 4 GiB at 100,000 crops.

    .venv/bin/python -m bench.clustering [--sizes 10000 100000] [--json FILE]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from triplet_reid.storage import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic(size, dim, spread, seed=0):
    """(embeddings (N, dim) float32 of unit length, identities (N,))."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 31, size=size // 2)
    ids = np.repeat(np.arange(len(counts)), counts)[:size]
    centres = rng.normal(size=(ids.max() + 1, dim)).astype(np.float32)
    embs = centres[ids] + spread * rng.normal(size=(len(ids), dim)).astype(np.float32)
    return embs / np.linalg.norm(embs, axis=1, keepdims=True), ids


def child(size, dim, spread):
    """One size, in this process: the row as JSON on stdout."""
    from triplet_reid.training import pseudo_labels
    embs, ids = synthetic(size, dim, spread)
    seconds = {}
    start = time.perf_counter()
    rank, _ = pseudo_labels.nearest_neighbours(embs, 31)
    seconds['neighbours'] = time.perf_counter() - start
    start = time.perf_counter()
    encodings = pseudo_labels.encodings(embs, rank, 30, 6)
    seconds['encodings'] = time.perf_counter() - start
    start = time.perf_counter()
    distances = pseudo_labels.jaccard_distances(encodings, rank, 0.6)
    seconds['jaccard'] = time.perf_counter() - start
    start = time.perf_counter()
    labels = pseudo_labels.cluster(distances, 0.6, 4)
    seconds['dbscan'] = time.perf_counter() - start
    scores = pseudo_labels.pairwise_scores(labels, ids)
    print(json.dumps({
        'crops': size, 'dim': dim, 'spread': spread, 'identities': int(ids.max() + 1),
        'seconds': {k: round(v, 2) for k, v in seconds.items()},
        'total_seconds': round(sum(seconds.values()), 2),
        'peak_gib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3),
        'pairs_per_crop': round(distances.nnz / size, 1),
        'clusters': int(labels.max() + 1), 'outliers': int((labels < 0).sum()),
        'precision': round(scores['precision'], 4), 'recall': round(scores['recall'], 4),
        'nmi': round(scores['nmi'], 4)}))


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', type=int, default=[10000, 20000, 50000, 100000],
                        help='The numbers of crops, each clustered in a process of its own.')
    parser.add_argument('--dim', type=int, default=512, help='The embedding dimension.')
    parser.add_argument('--spread', type=float, default=2.0,
                        help='The noise around each identity\'s centre, per dimension, before '
                             'the embeddings are scaled to unit length.')
    parser.add_argument('--child', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--json', help='Also write the rows to this JSON file.')
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.dim, args.spread)

    rows = []
    for size in args.sizes:
        done = subprocess.run([sys.executable, '-m', 'bench.clustering', '--child', str(size),
                               '--dim', str(args.dim), '--spread', str(args.spread)],
                              cwd=ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.splitlines()[-1]))
        row = rows[-1]
        print('{crops:>7} crops: {total_seconds:6.1f} s ({stages}), {peak_gib:.2f} GiB, '
              '{clusters} clusters, {outliers} outliers, precision {precision:.3f}, recall '
              '{recall:.3f}, NMI {nmi:.3f}'.format(stages=', '.join(
                  '{} {}'.format(k, v) for k, v in row['seconds'].items()), **row), flush=True)
    machine = '{} ({} cores), {}'.format(platform.machine(), os.cpu_count(), platform.platform())
    print('machine: ' + machine)
    if args.json:
        files.write_json(args.json, {'machine': machine, 'rows': rows})


if __name__ == '__main__':
    main()
