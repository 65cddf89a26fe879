#!/usr/bin/env python3
"""Benchmark: a gallery that grows, appended to against built anew.

Makes a gallery of `--size` embeddings shaped like bench/ann.py's (20 images
of each identity around a random unit direction) and `--append` more of the
same identities, split into `--appends` files as new footage would come.
It builds the gallery's saved index (faiss HNSW, as search.py --index), then
appends the files one after another with `gallery.append` (search.py
--append: reading both files, adding to the index, writing both whole), and
compares with building the index of the grown gallery anew: the time, and
the recall@10 at efSearch 64 against exact search for `--queries` queries.

    .venv/bin/python -m bench.gallery_append --size 1000000 --json bench/results/gallery_append.json
"""

import argparse
import os
import platform
import sys
import tempfile
import time

from bench.ann import brute_force, make_gallery, recall


def write(path, embs, first):
    from triplet_reid.inputs import embeddings_file
    fids = ['{:08d}.jpg'.format(first + i) for i in range(len(embs))]
    embeddings_file.write(path, embs, None, ['original_resize'], fids, None,
                          {'experiment_root': '/bench', 'checkpoint': 'checkpoint-0'})


def measure(args, folder):
    from triplet_reid.serving import gallery
    embs, queries = make_gallery(args.size + args.append, args.dim, args.queries, args.noise)
    exact = brute_force(embs, queries, 10)
    path = os.path.join(folder, 'gallery.h5')
    write(path, embs[:args.size], 0)
    start = time.perf_counter()
    gallery.load_or_build_index(embs[:args.size], 'euclidean', path)
    first_build = time.perf_counter() - start

    appended, step = 0.0, args.append // args.appends
    for number in range(args.appends):
        begin = args.size + number * step
        end = args.size + args.append if number == args.appends - 1 else begin + step
        part = os.path.join(folder, 'new{}.h5'.format(number))
        write(part, embs[begin:end], begin)
        start = time.perf_counter()
        gallery.append(path, part)
        appended += time.perf_counter() - start
    grown = gallery.load_or_build_index(embs, 'euclidean', path)

    start = time.perf_counter()
    fresh = gallery.build_index(embs, 'euclidean')
    rebuild = time.perf_counter() - start
    rows = {}
    for name, index in (('appended', grown), ('fresh', fresh)):
        found, _ = gallery.search_index(index, queries, embs, 'euclidean', 10, 64)
        rows[name] = recall(found, exact)
    return {'first_build_s': round(first_build, 1), 'append_s': round(appended, 2),
            'rebuild_s': round(rebuild, 1), 'rebuild_over_append': round(rebuild / appended, 1),
            'recall_at_10_appended': round(rows['appended'], 4),
            'recall_at_10_fresh': round(rows['fresh'], 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=1000000, help='Gallery embeddings.')
    parser.add_argument('--append', type=int, default=10000, help='Embeddings appended.')
    parser.add_argument('--appends', type=int, default=10, help='Files they come in.')
    parser.add_argument('--dim', type=int, default=128, help='Embedding dimensions.')
    parser.add_argument('--queries', type=int, default=1000, help='Query embeddings.')
    parser.add_argument('--noise', type=float, default=0.08,
                        help='Noise per dimension around each identity\'s direction.')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args, folder)
    print('| gallery | appended | first build | {} appends | rebuild | rebuild / appends | '
          'recall@10 appended | recall@10 fresh |'.format(args.appends))
    print('|---|---|---|---|---|---|---|---|')
    print('| {} × {} | {} | {} s | {} s | {} s | {}× | {:.2%} | {:.2%} |'.format(
        args.size, args.dim, args.append, result['first_build_s'], result['append_s'],
        result['rebuild_s'], result['rebuild_over_append'], result['recall_at_10_appended'],
        result['recall_at_10_fresh']))
    if args.json:
        from triplet_reid.storage import files
        files.write_json(args.json, {'machine': platform.processor() or platform.machine(),
                                     'cpus': os.cpu_count(), 'argv': sys.argv[1:],
                                     'result': result})
    return 0


if __name__ == '__main__':
    sys.exit(main())
