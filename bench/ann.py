#!/usr/bin/env python3
"""Benchmark: approximate nearest-neighbour indexes for large galleries.

Builds a gallery of `--size` (1 M) `--dim` (128) embeddings shaped like a
re-id gallery: `--size / 20` identities, each a random unit direction, and
20 images each scattered around it (Gaussian noise of `--noise` per
dimension, then L2-normalised, as the `_normalize` heads give). The queries
are further images of gallery identities. For each library's HNSW index
(faiss-cpu's IndexHNSWFlat, hnswlib's Index), at M = `--hnsw_m` and
efConstruction = `--ef_construction`, it reports the build time, the index
file's size and load time, and, for each efSearch, the recall@10 against
exact (brute-force) search and the time per query, one query at a time and
in one batch. Brute force is timed the same way (NumPy, as search.py ranks
without an index).

    .venv/bin/python -m bench.ann --json bench/results/ann.json

Every library in `--libraries` must be installed; the project's requirements
hold the one search.py uses (see "Large galleries" in docs/search.md).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np


def make_gallery(size, dim, queries, noise, seed=0):
    """(gallery (size, dim), queries (queries, dim)), float32 unit vectors."""
    rng = np.random.default_rng(seed)
    ids = max(1, size // 20)
    centers = rng.standard_normal((ids, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def images(owner):
        x = centers[owner] + rng.standard_normal((len(owner), dim), dtype=np.float32) * noise
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    gallery = np.concatenate([images(np.arange(start, min(start + 10000, size)) % ids)
                              for start in range(0, size, 10000)])
    return gallery, images(rng.integers(0, ids, queries))


def brute_force(gallery, queries, k, chunk=256):
    """The exact top-k (Q, k) by Euclidean distance, nearest first."""
    squared = np.einsum('ij,ij->i', gallery, gallery)
    found = []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d = squared[None, :] - 2 * q @ gallery.T
        top = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, top, 1), axis=1)
        found.append(np.take_along_axis(top, order, 1))
    return np.concatenate(found)


def recall(found, exact):
    """The share of the exact top-k that the index found, over all queries."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def timed(search, queries, singles):
    """(results of the batch, seconds per query in one batch, seconds per query
    one at a time over the first `singles` queries)."""
    start = time.perf_counter()
    found = search(queries)
    batch = (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    for query in queries[:singles]:
        search(query[None])
    return found, batch, (time.perf_counter() - start) / singles


class Faiss:
    name = 'faiss-cpu'

    def __init__(self, dim, m, ef_construction):
        import faiss
        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(dim, m)
        self.index.hnsw.efConstruction = ef_construction

    def add(self, gallery):
        self.index.add(gallery)

    def set_ef(self, ef):
        self.index.hnsw.efSearch = ef

    def search(self, queries, k):
        return self.index.search(queries, k)[1]

    def save(self, path):
        self.faiss.write_index(self.index, path)

    def load(self, path):
        self.index = self.faiss.read_index(path)

    @staticmethod
    def version():
        import faiss
        return faiss.__version__


class Hnswlib:
    name = 'hnswlib'

    def __init__(self, dim, m, ef_construction):
        import hnswlib
        self.dim = dim
        self.index = hnswlib.Index(space='l2', dim=dim)
        self.m, self.ef_construction = m, ef_construction

    def add(self, gallery):
        self.index.init_index(max_elements=len(gallery), M=self.m,
                              ef_construction=self.ef_construction, random_seed=0)
        self.index.add_items(gallery, np.arange(len(gallery)))

    def set_ef(self, ef):
        self.index.set_ef(ef)

    def search(self, queries, k):
        return self.index.knn_query(queries, k)[0]

    def save(self, path):
        self.index.save_index(path)

    def load(self, path):
        import hnswlib
        self.index = hnswlib.Index(space='l2', dim=self.dim)
        self.index.load_index(path)

    @staticmethod
    def version():
        import importlib.metadata
        return importlib.metadata.version('hnswlib')


LIBRARIES = {'faiss': Faiss, 'hnswlib': Hnswlib}


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=1000000, help='Gallery embeddings.')
    parser.add_argument('--dim', type=int, default=128, help='Embedding dimensions.')
    parser.add_argument('--queries', type=int, default=1000, help='Query embeddings.')
    parser.add_argument('--singles', type=int, default=200,
                        help='Queries timed one at a time (the first ones).')
    parser.add_argument('--noise', type=float, default=0.08,
                        help='Per-dimension noise around each identity\'s direction.')
    parser.add_argument('--libraries', nargs='+', default=['faiss', 'hnswlib'],
                        choices=sorted(LIBRARIES), help='Indexes to measure.')
    parser.add_argument('--hnsw_m', type=int, default=32, help='HNSW links per node.')
    parser.add_argument('--ef_construction', type=int, default=100,
                        help='HNSW candidate list while building.')
    parser.add_argument('--ef_search', type=int, nargs='+', default=[16, 32, 64, 128, 256],
                        help='HNSW candidate lists while searching.')
    parser.add_argument('--k', type=int, default=10, help='Neighbours asked for (recall@k).')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)

    gallery, queries = make_gallery(args.size, args.dim, args.queries, args.noise)
    exact, brute_batch, brute_single = timed(lambda q: brute_force(gallery, q, args.k),
                                             queries, args.singles)
    rows = [{'index': 'brute force (NumPy)', 'recall': 1.0, 'ms_batch': 1e3 * brute_batch,
             'ms_single': 1e3 * brute_single}]
    print('{:>10} {:>8} {:>8} {:>10} {:>10}'.format('index', 'ef', 'recall', 'ms/query',
                                                    'ms single'))
    print('{:>10} {:>8} {:8.4f} {:10.3f} {:10.3f}'.format('brute', '-', 1.0, 1e3 * brute_batch,
                                                          1e3 * brute_single))
    builds = {}
    with tempfile.TemporaryDirectory(prefix='ann-') as scratch:
        for key in args.libraries:
            library = LIBRARIES[key]
            index = library(args.dim, args.hnsw_m, args.ef_construction)
            start = time.perf_counter()
            index.add(gallery)
            build = time.perf_counter() - start
            path = os.path.join(scratch, key)
            index.save(path)
            start = time.perf_counter()
            index.load(path)
            load = time.perf_counter() - start
            builds[library.name] = {'version': library.version(), 'build_s': build,
                                    'load_s': load, 'file_mb': os.path.getsize(path) / 2 ** 20}
            print('{} {}: built in {:.1f} s, file {:.0f} MB, loaded in {:.2f} s'.format(
                library.name, library.version(), build, builds[library.name]['file_mb'], load))
            for ef in args.ef_search:
                index.set_ef(max(ef, args.k))
                found, batch, single = timed(lambda q: index.search(q, args.k), queries,
                                             args.singles)
                rows.append({'index': library.name, 'ef_search': ef,
                             'recall': recall(found, exact), 'ms_batch': 1e3 * batch,
                             'ms_single': 1e3 * single})
                print('{:>10} {:>8} {:8.4f} {:10.3f} {:10.3f}'.format(
                    key, ef, rows[-1]['recall'], 1e3 * batch, 1e3 * single), flush=True)
            # The next library builds with this one's memory free.
            index = None
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'argv': sys.argv[1:],
                       'settings': {k: v for k, v in vars(args).items() if k != 'json'},
                       'builds': builds, 'rows': rows}, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
