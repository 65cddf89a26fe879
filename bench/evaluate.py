#!/usr/bin/env python3
"""Benchmark: evaluate.py at Market-1501 scale, and embedding throughput.

Peak memory is the process's peak resident set so far (evaluation runs first,
so its figure is its own), and the child's for the whole command.

Evaluation runs on synthetic 128-D embeddings laid over the real Market-1501
file lists (3368 queries × 19732 gallery images, junk and distractors
included), with identity structure so that ranks are realistic. Embedding
throughput is measured with the demo net (`tiny` + `fc1024`, 128×64 input) on
synthetic images, so it excludes JPEG decoding.

    .venv/bin/python -m bench.evaluate [--reference DIR] [--json FILE]
"""

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from triplet_reid import common
from triplet_reid.storage import files
from triplet_reid.evaluation import metrics
from triplet_reid.excluders import market1501

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_embeddings(pids, rng, dim=128, spread=1.2):
    """Identity centres plus noise of scale `spread`; junk and distractors get
    random points."""
    unique, inverse = np.unique(pids, return_inverse=True)
    centres = rng.normal(size=(len(unique), dim)).astype(np.float32)
    embs = centres[inverse] + spread * rng.normal(size=(len(pids), dim)).astype(np.float32)
    noise = np.isin(pids, ['-1', '0000'])
    embs[noise] = rng.normal(size=(noise.sum(), dim)) * 1.5
    return embs


def peak_memory_mib():
    """This process's peak resident memory so far."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def time_it(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def bench_evaluation(reference, repeats):
    q_pids, q_fids = common.load_dataset(os.path.join(reference, 'market1501_query.csv'), None)
    g_pids, g_fids = common.load_dataset(os.path.join(reference, 'market1501_test.csv'), None)
    rng = np.random.default_rng(0)
    embs = synthetic_embeddings(np.concatenate([q_pids, g_pids]), rng)
    q_embs, g_embs = embs[:len(q_pids)], embs[len(q_pids):]
    rows = []
    for market_ap in (False, True):
        def run():
            excluder = market1501.excluder(q_fids, g_fids)
            return metrics.evaluate(q_pids, q_fids, g_pids,
                                    metrics.metric_distances(q_embs, g_embs, 'euclidean'),
                                    excluder, use_market_ap=market_ap)
        seconds, result = time_it(run, repeats)
        rows.append({'task': 'evaluate, {} AP'.format('Market' if market_ap else 'sklearn'),
                     'size': '{}×{}'.format(len(q_pids), len(g_pids)),
                     'seconds': round(seconds, 3), 'mAP': round(result['mAP'], 4),
                     'peak_mib': peak_memory_mib()})

    # The whole command, from process start to the printed summary.
    import h5py
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, data in (('query.h5', q_embs), ('gallery.h5', g_embs)):
            files.append(os.path.join(tmp, name))
            with h5py.File(files[-1], 'w') as f:
                f.create_dataset('emb', data=data)
        command = [sys.executable, os.path.join(ROOT, 'evaluate.py'), '--excluder', 'market1501',
                   '--metric', 'euclidean',
                   '--query_dataset', os.path.join(reference, 'market1501_query.csv'),
                   '--gallery_dataset', os.path.join(reference, 'market1501_test.csv'),
                   '--query_embeddings', files[0], '--gallery_embeddings', files[1]]
        # The plain command first: the peak memory of the children only grows.
        for task, extra in (('evaluate.py command, sklearn AP', []),
                            ('evaluate.py command, + JSON with verification',
                             ['--filename', os.path.join(tmp, 'results.json')])):
            seconds, _ = time_it(lambda: subprocess.run(command + extra, check=True,
                                                        capture_output=True), repeats)
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            rows.append({'task': task, 'size': rows[0]['size'], 'seconds': round(seconds, 3),
                         'mAP': rows[0]['mAP'], 'peak_mib': round(children)})
    return rows


def bench_embedding(repeats, batch_size=256):
    import tensorflow as tf
    from triplet_reid.models.build import build_model
    model, _ = build_model('tiny', 'fc1024', 128)
    forward = tf.function(lambda x: model(x, training=False)['emb'])
    images = tf.random.uniform((batch_size, 128, 64, 3), 0, 255)
    forward(images)
    seconds, _ = time_it(lambda: forward(images).numpy(), repeats)
    return [{'task': 'embed, tiny+fc1024 128×64', 'size': 'batch {}'.format(batch_size),
             'seconds': round(seconds, 3), 'images/s': round(batch_size / seconds, 1),
             'peak_mib': peak_memory_mib()}]


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--reference', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'reference',
        'market1501'), help='Folder with market1501_{query,test}.csv.')
    parser.add_argument('--repeats', type=int, default=3, help='Runs per figure; the best counts.')
    parser.add_argument('--json', help='Also write the rows to this JSON file.')
    args = parser.parse_args()

    rows = bench_evaluation(args.reference, args.repeats) + bench_embedding(args.repeats)
    machine = '{} ({} cores), {}'.format(platform.machine(), os.cpu_count(), platform.platform())
    print('machine: ' + machine)
    print('{:<46} {:>14} {:>9} {:>13} {:>9}'.format('task', 'size', 'seconds', 'result',
                                                    'peak MiB'))
    for row in rows:
        result = 'mAP {:.2%}'.format(row['mAP']) if 'mAP' in row else \
            '{} img/s'.format(row['images/s'])
        print('{:<46} {:>14} {:>9.3f} {:>13} {:>9}'.format(row['task'], row['size'],
                                                           row['seconds'], result,
                                                           row['peak_mib']))
    if args.json:
        files.write_json(args.json, {'machine': machine, 'rows': rows})
    return 0


if __name__ == '__main__':
    sys.exit(main())
