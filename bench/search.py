#!/usr/bin/env python3
"""Benchmark: search.py against a gallery of 100,000 embeddings.

Builds a `tiny` experiment (trained for one step on generated images), a
synthetic gallery of `--gallery_size` 128-D embeddings with file names, and
query images; then measures the ranking alone (`gallery.rank`, in this
process) per query batch, and the whole search.py command (start-up, model
loading, embedding the queries, ranking, printing) with its peak memory.

    .venv/bin/python -m bench.search [--gallery_size 100000] [--json FILE]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEAK_OF_CHILD = ('import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, '
                 'stdout=subprocess.DEVNULL); '
                 'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')


def make_experiment(folder):
    """A tiny experiment and the images its queries come from."""
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from conftest import make_dataset
    image_root = os.path.join(folder, 'data')
    csv_path = make_dataset(image_root, num_ids=4, images_per_id=3, size=(128, 64))
    root = os.path.join(folder, 'exp')
    subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--experiment_root', root,
                    '--train_set', csv_path, '--image_root', image_root, '--model_name', 'tiny',
                    '--head_name', 'fc1024', '--embedding_dim', '128', '--batch_p', '4',
                    '--batch_k', '2', '--net_input_height', '128', '--net_input_width', '64',
                    '--train_iterations', '1', '--seed', '0'], check=True, capture_output=True)
    return root, os.path.join(image_root, 'train')


def make_gallery(path, size, rng):
    import h5py
    with h5py.File(path, 'w') as f:
        f['emb'] = rng.normal(size=(size, 128)).astype(np.float32)
        f['fids'] = np.array(['gallery/{:06d}.jpg'.format(i) for i in range(size)],
                             dtype=object).astype('S')


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--gallery_size', type=int, default=100_000, help='Gallery embeddings.')
    parser.add_argument('--repeats', type=int, default=3, help='Runs per figure; the best counts.')
    parser.add_argument('--json', help='Also write the rows to this JSON file.')
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from triplet_reid.serving import gallery
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix='search-') as folder:
        root, images = make_experiment(folder)
        gallery_file = os.path.join(folder, 'gallery.h5')
        make_gallery(gallery_file, args.gallery_size, rng)
        gallery_embs = gallery.load_gallery(gallery_file)[0]
        for queries in (1, 10):
            query_embs = rng.normal(size=(queries, 128)).astype(np.float32)
            best = min(_timed(lambda: gallery.rank(query_embs, gallery_embs, 'euclidean', 10))
                       for _ in range(args.repeats))
            rows.append({'task': 'rank {} quer{}'.format(queries, 'y' if queries == 1 else 'ies'),
                         'gallery': args.gallery_size, 'seconds': round(best, 4),
                         'ms per query': round(1000 * best / queries, 2)})
        query_files = sorted(os.path.join(images, n) for n in os.listdir(images))[:10]
        for queries in (1, 10):
            command = [sys.executable, os.path.join(ROOT, 'search.py'), '--experiment_root', root,
                       '--gallery', gallery_file, '--query'] + query_files[:queries]
            # A wrapper process reports the peak of its only child, search.py.
            wrapped = [sys.executable, '-c', PEAK_OF_CHILD] + command
            timings, peaks = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                done = subprocess.run(wrapped, check=True, capture_output=True, text=True)
                timings.append(time.perf_counter() - start)
                peaks.append(int(done.stdout.split()[-1]))
            rows.append({'task': 'search.py command, {} quer{}'.format(
                queries, 'y' if queries == 1 else 'ies'), 'gallery': args.gallery_size,
                'seconds': round(min(timings), 2),
                'ms per query': round(1000 * min(timings) / queries, 1),
                'peak_mib': round(max(peaks) / 1024)})
    print('| task | gallery | seconds | ms per query | peak MiB |')
    print('|---|---|---|---|---|')
    for row in rows:
        print('| {} | {} | {} | {} | {} |'.format(row['task'], row['gallery'], row['seconds'],
                                                  row['ms per query'], row.get('peak_mib', '')))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'rows': rows}, f, indent=2)
            f.write('\n')


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == '__main__':
    main()
