#!/usr/bin/env python3
"""Benchmark: adapting a trained model to camera footage without labels,
on the crops alone against the crops with their tracks.

For each seed, renders footage of the demo set's test people with
data/make_footage.py, cuts it into crops with data/footage_crops.py, and
adapts the demo's trained model (`make demo`) to them with train.py
--pseudo_labels twice from the same start: on the crops alone (their CSV
without its track and frame columns) and with the tracks (every crop of a
track one person; two tracks one camera sees at once two people). Reports
each run's first and last round of pseudo-labels (pseudo-identities,
outliers, pairwise precision and recall and NMI against the rendered
identities, which train.py reads for measuring only) and two mAPs before
and after: on the footage's own crops (the cameras adapted to; each
person's middle crop in each camera queries all crops, the same person in
the same camera ignored) and on the demo's test set (the pictures the model
was trained for, whose people the footage shows). The runs are what a user
runs: train.py, embed.py, evaluate.py.

    make demo
    .venv/bin/python -m bench.adaptation --experiment_root experiments/demo --seeds 0 1 2 \\
        --json bench/results/adaptation_footage.json
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'data', 'demo')

# The demo model's architecture (recipes/demo.args), which --initial_head needs.
ARCHITECTURE = ['--model_name', 'tiny', '--head_name', 'fc1024', '--embedding_dim', '128',
                '--net_input_height', '128', '--net_input_width', '64',
                '--pre_crop_height', '144', '--pre_crop_width', '72']


def run(*argv):
    done = subprocess.run([sys.executable] + list(argv), cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit('{} failed:\n{}'.format(' '.join(argv[:2]), done.stderr[-3000:]))
    return done.stdout


def evaluation(experiment_root, folder, image_root, query, gallery):
    """mAP and top-1 of the `query` CSV against the `gallery` CSV (Market-1501
    file names, under `image_root`), embedded at the training scale (the
    centre crop) as `make demo` evaluates."""
    os.makedirs(folder, exist_ok=True)
    for part, dataset in (('query', query), ('gallery', gallery)):
        run('embed.py', '--experiment_root', experiment_root, '--dataset', dataset,
            '--image_root', image_root, '--filename', os.path.join(folder, part + '.h5'),
            '--crop_augment', 'center')
    summary = os.path.join(folder, 'eval.json')
    run('evaluate.py', '--excluder', 'market1501', '--metric', 'euclidean', '--quiet',
        '--query_dataset', query, '--query_embeddings', os.path.join(folder, 'query.h5'),
        '--gallery_dataset', gallery, '--gallery_embeddings', os.path.join(folder, 'gallery.h5'),
        '--filename', summary)
    with open(summary) as f:
        figures = json.load(f)
    return {'mAP': round(figures['mAP'], 4), 'top1': round(figures['CMC'][0], 4)}


def both_maps(experiment_root, folder, footage_set):
    """{'footage': …, 'demo': …}: on the footage's own crops, the cameras adapted
    to, and on the demo's test set, the pictures the model was trained for."""
    return {'footage': evaluation(experiment_root, os.path.join(folder, 'footage'),
                                  *footage_set),
            'demo': evaluation(experiment_root, os.path.join(folder, 'demo'), DEMO,
                               os.path.join(DEMO, 'demo_query.csv'),
                               os.path.join(DEMO, 'demo_test.csv'))}


def footage_evaluation_set(crops, rows, folder):
    """(image root, query CSV, gallery CSV) of the footage's crops, linked
    under Market-1501 names so that its excluder ignores the same person in the
    same camera: the gallery is every crop, the queries the middle crop of each
    person in each camera."""
    root = os.path.join(folder, 'named')
    os.makedirs(root)
    people = {name: i + 1 for i, name in enumerate(sorted({r['identity'] for r in rows}))}
    cameras = {name: i + 1 for i, name in enumerate(sorted({r['camera'] for r in rows}))}
    seen = {}
    for number, row in enumerate(rows):
        name = '{:04d}_c{}s1_{:06d}_{:05d}.jpg'.format(
            people[row['identity']], cameras[row['camera']], int(row['frame']), number)
        os.symlink(os.path.abspath(os.path.join(crops, row['path'])), os.path.join(root, name))
        seen.setdefault((row['identity'], row['camera']), []).append((int(row['frame']), name))
    query, gallery = os.path.join(folder, 'query.csv'), os.path.join(folder, 'gallery.csv')
    with open(gallery, 'w') as f:
        f.writelines('0,{}\n'.format(name) for name in sorted(os.listdir(root)))
    with open(query, 'w') as f:
        f.writelines('0,{}\n'.format(sorted(names)[len(names) // 2][1])
                     for names in seen.values())
    return root, query, gallery


def round_scores(root, identities):
    """The scores of each round's pseudo-labels in the experiment `root`
    against `identities`, a dict of each crop's path to its true identity."""
    from triplet_reid.training import pseudo_labels
    folder = os.path.join(root, 'pseudo_labels')
    rounds = []
    for name in sorted(os.listdir(folder), key=lambda n: int(n.split('_iter')[1][:-4])):
        with open(os.path.join(folder, name)) as f:
            rows = list(csv.DictReader(f))
        labels = np.array([int(row['pseudo_identity']) for row in rows])
        truth = np.array([identities[row['path']] for row in rows])
        scores = pseudo_labels.pairwise_scores(labels, truth)
        rounds.append(dict({k: round(v, 4) for k, v in scores.items()}, round=name,
                           clusters=int(labels.max() + 1),
                           outliers=round(float((labels < 0).mean()), 4)))
    return rounds


def adapt(args, crops, train_csv, identities, folder, name, footage_set):
    """One adaptation run on `train_csv`: its rounds' scores, mAP and seconds."""
    root = os.path.join(folder, 'adapted_' + name)
    start = time.time()
    run('train.py', '--experiment_root', root, '--pseudo_labels', '--train_set', train_csv,
        '--image_root', crops, '--initial_checkpoint', args.experiment_root, *ARCHITECTURE,
        '--crop_augment', '--flip_augment', '--batch_p', '8', '--batch_k', '4',
        '--learning_rate', str(args.learning_rate), '--memory_loss_weight', '1',
        '--cluster_every', str(args.cluster_every), '--train_iterations', str(args.iterations),
        '--decay_start_iteration', str(args.iterations // 2), '--seed', '0',
        '--checkpoint_frequency', str(args.iterations), '--loading_threads', '4')
    seconds = round(time.time() - start, 1)
    return dict(rounds=round_scores(root, identities), seconds=seconds,
                **both_maps(root, os.path.join(folder, 'eval_' + name), footage_set))


def measure(args, seed, folder):
    """Both runs on the footage of `seed`: {'before', 'crops', 'tracks', 'crops_count'}."""
    footage, crops = os.path.join(folder, 'footage'), os.path.join(folder, 'crops')
    run(os.path.join('data', 'make_footage.py'), '--demo', DEMO, '--output', footage,
        '--seed', str(seed), '--frames', str(args.frames))
    run(os.path.join('data', 'footage_crops.py'), '--footage', footage, '--output', crops)
    with open(os.path.join(crops, 'crops.csv')) as f:
        rows = list(csv.DictReader(f))
    identities = {row['path']: row['identity'] for row in rows}
    plain = os.path.join(folder, 'plain.csv')
    with open(plain, 'w') as f:
        f.write('path,identity\n' + ''.join('{},{}\n'.format(r['path'], r['identity'])
                                            for r in rows))
    footage_set = footage_evaluation_set(crops, rows, folder)
    results = {'crops_count': len(rows), 'tracks_count': len({(r['camera'], r['track'])
                                                              for r in rows}),
               'before': both_maps(args.experiment_root, os.path.join(folder, 'eval_before'),
                                   footage_set)}
    results['crops'] = adapt(args, crops, plain, identities, folder, 'crops', footage_set)
    results['tracks'] = adapt(args, crops, os.path.join(crops, 'crops.csv'), identities,
                              folder, 'tracks', footage_set)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--experiment_root', default=os.path.join(ROOT, 'experiments', 'demo'),
                        help='The trained experiment to adapt (the demo\'s).')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='Seeds of the footage, one pair of runs each.')
    parser.add_argument('--frames', type=int, default=40, help='Frames per camera.')
    parser.add_argument('--iterations', type=int, default=300, help='Iterations of each run.')
    parser.add_argument('--cluster_every', type=int, default=100, help='Iterations a round.')
    parser.add_argument('--learning_rate', type=float, default=1e-4,
                        help='Adam\'s learning rate.')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    results = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            results[seed] = measure(args, seed, folder)
        print(json.dumps({seed: results[seed]}), flush=True)
        if args.json:
            # After every seed, so that a long benchmark stopped early keeps its figures.
            from triplet_reid.storage import files
            files.write_json(args.json, {
                'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
                'argv': sys.argv[1:], 'results': results})
    print('| seed | crops | trained on | round 1 P / R / NMI | last round P / R / NMI | '
          'pseudo-ids last | footage mAP | demo test mAP | seconds |')
    print('|---|---|---|---|---|---|---|---|---|')
    for seed, result in results.items():
        print('| {} | {} | nothing (before) | | | | {:.2%} | {:.2%} | |'.format(
            seed, result['crops_count'], result['before']['footage']['mAP'],
            result['before']['demo']['mAP']))
        for kind in ('crops', 'tracks'):
            first, last = result[kind]['rounds'][0], result[kind]['rounds'][-1]
            print('| {} | {} | {} | {} | {} | {} | {:.2%} | {:.2%} | {} |'.format(
                seed, result['crops_count'], kind,
                *(' / '.join('{:.1%}'.format(r[k]) for k in ('precision', 'recall', 'nmi'))
                  for r in (first, last)), last['clusters'], result[kind]['footage']['mAP'],
                result[kind]['demo']['mAP'], result[kind]['seconds']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
