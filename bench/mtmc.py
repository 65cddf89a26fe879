#!/usr/bin/env python3
"""Benchmark: multi-camera tracking on a rendered camera network, and what
each part of the association adds.

Renders a camera network from the demo set's people (data/make_footage.py
--network: six cameras on one clock, people walking between linked
cameras), embeds each camera's tracks with a trained experiment (embed.py
--frames with the tracks from the ground-truth boxes, --tracklets mean),
joins them into global identities four ways (appearance alone; with the
constraints that a person is in one place at a time; with the topology the
renderer used; with the topology estimated from a first pass), each with
the cosine distances and with the k-reciprocal re-ranked ones, at several
thresholds, and scores each against the global ground truth with
associate.py's scores (TrackEval's IDF1 and HOTA, across all cameras).

    make demo
    .venv/bin/python -m bench.mtmc --experiment_root experiments/demo \\
        --json bench/results/mtmc_demo.json
    .venv/bin/python -m bench.mtmc --experiment_root experiments/demo --seed 1 \\
        --json bench/results/mtmc_demo_seed1.json
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from bench.adaptation import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The thresholds (cosine or re-ranked distance) each way is scored at.
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def scored(footage, cameras, tracks, identities):
    """The scores of `identities` of `tracks` (`Tracks`), their boxes those of
    each camera's tracks.txt, against its gt/gt.txt."""
    from triplet_reid.evaluation import mtmc
    from triplet_reid.inputs.footage import Boxes, read_boxes, read_detections
    global_id = {(c, int(t)): int(i) for c, t, i in zip(tracks.cameras, tracks.tracks,
                                                         identities)}
    found, truth = {}, {}
    for camera in cameras:
        detections = read_detections(os.path.join(footage, camera, 'tracks.txt'))
        found[camera] = Boxes('', *(np.array(values) for values in (
            [d.frame for d in detections], [global_id[camera, d.track] for d in detections],
            [d.box for d in detections])))
        truth[camera] = read_boxes(os.path.join(footage, camera, 'gt', 'gt.txt'))
    return mtmc.evaluate(truth, found)[mtmc.ALL_CAMERAS]


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--experiment_root', required=True, help='A trained experiment.')
    parser.add_argument('--demo', default=os.path.join(ROOT, 'data', 'demo'),
                        help='The demo set whose people walk.')
    parser.add_argument('--frames', type=int, default=600, help='Frames of the shared clock.')
    parser.add_argument('--people', type=int, default=40, help='People who walk.')
    parser.add_argument('--seed', type=int, default=0, help="The renderer's seed.")
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import checkout
    checkout.register()
    from triplet_reid.inputs.topology import read_topology
    from triplet_reid.evaluation.rerank import reranked_matrix
    from triplet_reid.serving.association import associate, estimate_topology, read_tracks

    rows = []
    with tempfile.TemporaryDirectory(prefix='mtmc-') as folder:
        footage = os.path.join(folder, 'network')
        start = time.time()
        run('data/make_footage.py', '--network', '--demo', args.demo, '--output', footage,
            '--frames', str(args.frames), '--people', str(args.people), '--seed',
            str(args.seed))
        rendered = time.time() - start
        cameras = sorted(name for name in os.listdir(footage) if name.startswith('cam'))
        paths, start = [], time.time()
        for camera in cameras:
            paths.append(os.path.join(folder, camera + '_tracklets.h5'))
            run('embed.py', '--experiment_root', args.experiment_root, '--frames',
                os.path.join(footage, camera, 'img1'), '--detections',
                os.path.join(footage, camera, 'tracks.txt'), '--camera', camera,
                '--filename', paths[-1], '--crop_augment', 'center', '--tracklets', 'mean',
                '--quiet')
        embedded = time.time() - start
        topology = read_topology(os.path.join(footage, 'topology.json'))
        tracks = read_tracks(paths, topology)
        people = len({int(line.split(',')[1]) for camera in cameras for line in open(
            os.path.join(footage, camera, 'gt', 'gt.txt'))})
        start = time.time()
        matrix = reranked_matrix(tracks.embeddings, 'cosine')
        reranking = time.time() - start
        for threshold in THRESHOLDS:
            estimated, _ = estimate_topology(tracks, threshold)
            reranked_estimate, _ = estimate_topology(tracks, threshold, matrix=matrix)
            for way, options in (
                    ('appearance alone', dict(constraints=False)),
                    ('+ one place at a time', {}),
                    ('+ topology (given)', dict(topology=topology)),
                    ('+ topology (estimated)', dict(topology=estimated)),
                    ('re-ranked, appearance alone', dict(constraints=False, matrix=matrix)),
                    ('re-ranked, + one place at a time', dict(matrix=matrix)),
                    ('re-ranked, + topology (given)', dict(topology=topology, matrix=matrix)),
                    ('re-ranked, + topology (estimated)', dict(topology=reranked_estimate,
                                                               matrix=matrix))):
                start = time.time()
                identities = associate(tracks, threshold, **options)
                seconds = time.time() - start
                row = dict(way=way, threshold=threshold, identities=len(set(identities)),
                           seconds=round(seconds, 3), **{
                               key: round(100 * value, 2) for key, value in scored(
                                   footage, cameras, tracks, identities).items()})
                print(json.dumps(row), flush=True)
                rows.append(row)
    print('{} cameras, {} tracks of {} people; rendered in {:.0f} s, embedded in {:.0f} s, '
          're-ranked in {:.2f} s.'.format(len(cameras), len(tracks.cameras), people, rendered,
                                          embedded, reranking))
    print('| way | threshold | identities | IDF1 | IDP | IDR | HOTA | AssA |')
    print('|---|---|---|---|---|---|---|---|')
    for row in rows:
        print('| {way} | {threshold} | {identities} | {IDF1}% | {IDP}% | {IDR}% | {HOTA}% | '
              '{AssA}% |'.format(**row))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'cameras': len(cameras),
                       'tracks': len(tracks.cameras), 'people': people,
                       'frames': args.frames, 'render_s': round(rendered),
                       'embed_s': round(embedded), 'rerank_s': round(reranking, 2),
                       'seed': args.seed, 'rows': rows}, f, indent=2)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
