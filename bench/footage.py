#!/usr/bin/env python3
"""Benchmark: retrieval from camera footage, tracks against single boxes.

Takes footage that data/make_footage.py rendered from the demo set's people
and a trained experiment (the demo's), and runs the whole path from the
command line: embed.py --frames embeds every camera's boxes and, with
--tracklets mean, its tracks; search.py --append grows one gallery of the
other cameras, camera by camera; evaluate.py then finds each camera's people
in the gallery of all the others, as boxes among boxes (image level) and as
tracks among tracks (track level). The table pools the queries of all
cameras (those whose person some other camera saw) and gives the times.

    make demo && .venv/bin/python data/make_footage.py
    .venv/bin/python -m bench.footage --experiment_root experiments/demo \\
        --json bench/results/footage_demo.json
"""

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*argv):
    done = subprocess.run([sys.executable] + list(argv), cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit('{} failed:\n{}'.format(' '.join(argv[:2]), done.stderr[-3000:]))


def write_csv(path, names, identities):
    """The dataset CSV of an embeddings file's rows, in its order."""
    with open(path, 'w') as f:
        f.writelines('{},{}\n'.format(identities[name], name) for name in names)


def identities_of(footage, camera, kind):
    with open(os.path.join(footage, camera, kind + '.csv'), newline='') as f:
        return {name: identity for identity, name in csv.reader(f)}


def embed_cameras(args, folder, cameras, kind, extra):
    """Embeds every camera's boxes (or tracks); returns their files."""
    paths = []
    for camera in cameras:
        paths.append(os.path.join(folder, '{}_{}.h5'.format(camera, kind)))
        run('embed.py', '--experiment_root', args.experiment_root, '--frames',
            os.path.join(args.footage, camera, 'img1'), '--detections',
            os.path.join(args.footage, camera, 'gt', 'gt.txt'), '--camera', camera,
            '--filename', paths[-1], '--crop_augment', 'center', '--quiet', *extra)
    return paths


def find_camera(folder, query, others, identities, kind):
    """Evaluates the rows of the file `query` against one gallery grown from
    the files `others` with search.py --append: (matched queries, mAP, top-1
    of the matched, seconds of the appends)."""
    from triplet_reid.inputs import embeddings_file
    gallery = os.path.join(folder, 'gallery_{}.h5'.format(kind))
    shutil.copy(others[0], gallery)
    start = time.time()
    for path in others[1:]:
        run('search.py', '--gallery', gallery, '--append', path)
    appended = time.time() - start
    csvs = []
    for path in (query, gallery):
        csvs.append(os.path.join(folder, os.path.basename(path)[:-3] + '.csv'))
        write_csv(csvs[-1], embeddings_file.read(path).fids, identities)
    summary = os.path.join(folder, kind + '.json')
    run('evaluate.py', '--excluder', 'diagonal', '--metric', 'euclidean', '--quiet',
        '--query_dataset', csvs[0], '--query_embeddings', query, '--gallery_dataset',
        csvs[1], '--gallery_embeddings', gallery, '--filename', summary)
    with open(summary) as f:
        figures = json.load(f)
    queries = len(embeddings_file.read(query).fids)
    matched = len(figures['aps'])
    os.remove(gallery)
    return matched, figures['mAP'], figures['CMC'][0] * queries / max(matched, 1), appended


def measure(args, folder):
    """Each camera's people found among the other cameras', as boxes and as
    tracks: {kind: figures pooled over all queries}, {what: seconds}."""
    cameras = sorted(c for c in os.listdir(args.footage) if c.startswith('cam'))
    seconds, results = {}, {}
    for kind, extra in (('boxes', []), ('tracks', ['--tracklets', 'mean'])):
        start = time.time()
        paths = embed_cameras(args, folder, cameras, kind, extra)
        seconds['embed_' + kind] = round(time.time() - start, 1)
        identities = {}
        for camera in cameras:
            identities.update(identities_of(args.footage, camera, kind))
        rows = [find_camera(folder, paths[i], paths[:i] + paths[i + 1:], identities, kind)
                for i in range(len(cameras))]
        matched = sum(r[0] for r in rows)
        results[kind] = {'queries': matched,
                         'mAP': round(sum(r[0] * r[1] for r in rows) / matched, 4),
                         'top1': round(sum(r[0] * r[2] for r in rows) / matched, 4),
                         'per_camera_mAP': [round(r[1], 4) for r in rows]}
        seconds['appends_' + kind] = round(sum(r[3] for r in rows), 1)
    return results, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--experiment_root', default=os.path.join(ROOT, 'experiments', 'demo'),
                        help='A trained experiment (the demo\'s).')
    parser.add_argument('--footage', default=os.path.join(ROOT, 'data', 'footage'),
                        help='The footage of data/make_footage.py.')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results, seconds = measure(args, folder)
    print('| level | queries with a match | mAP | top-1 | mAP per query camera |')
    print('|---|---|---|---|---|')
    for kind, row in results.items():
        print('| {} | {} | {:.2%} | {:.2%} | {} |'.format(
            'track (mean of its boxes)' if kind == 'tracks' else 'box', row['queries'],
            row['mAP'], row['top1'], ' '.join('{:.1%}'.format(v) for v in row['per_camera_mAP'])))
    print('seconds: {}'.format(seconds))
    if args.json:
        sys.path.insert(0, ROOT)
        from triplet_reid.storage import files
        files.write_json(args.json, {'machine': platform.processor() or platform.machine(),
                                     'cpus': os.cpu_count(), 'argv': sys.argv[1:],
                                     'results': results, 'seconds': seconds})
    return 0


if __name__ == '__main__':
    sys.exit(main())
