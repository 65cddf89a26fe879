#!/usr/bin/env python3
"""Benchmark: training on tracklets against training on single frames, tracklet-level mAP.

On a tracklet set (the video demo of data/make_video_demo.py by default, or
any tracklet CSVs written by data/convert_video.py), each recipe trains with
train.py, embeds the query and gallery tracklets with embed.py from all
their frames, and evaluates them with evaluate.py --excluder tracklets, seed
by seed:

  - `frames`: the original's training on single images (every frame of the
    training tracklets is an image of its identity), P=8 K=8, its frames
    averaged at test time (embed.py --tracklets mean); `frames_p16` the same
    with P=16 K=4;
  - `video_avg`: video training, P=8 identities × K=2 tracklets × T=4 frames
    (the same 64 images a batch), temporal average after the head;
  - `video_attention`: the same with the learnt temporal attention;
  - `video_features`: temporal average of the body's features, before the head.

Every recipe: the `tiny` net at 64×32 (the footage's people are 40-52 pixels
wide), fc1024 head with 128 dimensions (or `--model_flags`), batch-hard soft
margin, Adam 3e-4 decaying from 2/3 of the iterations, flips. Equal iterations and equal
images per batch, so equal compute.

    .venv/bin/python data/make_video_demo.py --output /tmp/video_demo --sessions 10
    .venv/bin/python -m bench.video --data /tmp/video_demo --seeds 0 1 2 \\
        --json bench/results/video_demo.json

Real pedestrians, as multi-shot tracklets (`--cuhk03`: each CUHK03 identity's
images from one camera of the pair are a tracklet of up to 5), fine-tuning
torchreid's OSNet x0.25 (MSMT17) imported with import_model.py:

    .venv/bin/python -m bench.video --data D/detected --cuhk03 C --iterations 300 \\
        --model_flags "--model_name osnet_x0_25 --head_name fc_bn_relu --embedding_dim 512 \\
        --net_input_height 256 --net_input_width 128 --learning_rate 1e-4 \\
        --initial_checkpoint ZOO_ROOT" --recipes frames video_avg --json R.json
"""

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = ('--model_name tiny --head_name fc1024 --embedding_dim 128 --net_input_height 64 '
         '--net_input_width 32')
COMMON = ['--flip_augment', '--checkpoint_frequency', '0', '--loading_threads', '4']

RECIPES = {
    'frames': ['--batch_p', '8', '--batch_k', '8'],
    'frames_p16': ['--batch_p', '16', '--batch_k', '4'],
    'video_avg': ['--batch_p', '8', '--batch_k', '2', '--seq_len', '4'],
    'video_attention': ['--batch_p', '8', '--batch_k', '2', '--seq_len', '4',
                        '--temporal_pooling', 'attention'],
    'video_features': ['--batch_p', '8', '--batch_k', '2', '--seq_len', '4',
                       '--temporal_position', 'features'],
}


def run(*argv):
    start = time.time()
    done = subprocess.run([sys.executable] + list(argv), cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    if done.returncode:
        raise SystemExit('{} failed:\n{}'.format(' '.join(argv[:2]), done.stderr[-3000:]))
    return time.time() - start


def cuhk03_tracklets(csv_dir, output):
    """Multi-shot tracklets of CUHK03 (data/convert.py cuhk03_folders CSVs in
    `csv_dir`): the images of one identity in one camera of the pair (images
    00-04 and 05-09) as a tracklet; the test identities' camera-a tracklets
    query their camera-b tracklets, as iLIDS-VID and PRID-2011 are queried.
    Writes cuhk03ms_{train,query,test}.csv into `output`."""
    def rows(names):
        found = []
        for name in names:
            with open(os.path.join(csv_dir, 'cuhk03_folders_{}.csv'.format(name))) as f:
                for identity, path in csv.reader(f):
                    index = int(os.path.splitext(os.path.basename(path))[0].split('_')[1])
                    found.append((identity, 'a' if index < 5 else 'b', '1', str(index), path))
        return found
    test = rows(['query', 'test'])
    for name, chosen in (('train', rows(['train'])), ('query', [r for r in test if r[1] == 'a']),
                         ('test', [r for r in test if r[1] == 'b'])):
        with open(os.path.join(output, 'cuhk03ms_{}.csv'.format(name)), 'w') as f:
            f.write('identity,camera,track,frame,path\n')
            f.writelines(','.join(row) + '\n' for row in chosen)


def frames_csv(tracklet_csv, path):
    """The frames of a tracklet CSV as a CSV of images, `identity,path` rows."""
    with open(tracklet_csv) as f, open(path, 'w') as out:
        out.writelines('{},{}\n'.format(row['identity'], row['path'])
                       for row in csv.DictReader(f))
    return path


def evaluate(recipe, seed, data, names, root, iterations, model_flags):
    """Trains `recipe` with `seed`; returns its tracklet mAP, top-1 and seconds."""
    train_set = names['train']
    if recipe.startswith('frames'):
        train_set = frames_csv(train_set, os.path.join(root, 'frames.csv'))
    experiment = os.path.join(root, '{}-{}'.format(recipe, seed))
    seconds = run('train.py', '--experiment_root', experiment, '--train_set', train_set,
                  '--image_root', data, '--train_iterations', str(iterations),
                  '--decay_start_iteration', str(iterations * 2 // 3), '--seed', str(seed),
                  *shlex.split(model_flags), *COMMON, *RECIPES[recipe])
    files = {}
    for split in ('query', 'test'):
        files[split] = os.path.join(experiment, split + '.h5')
        run('embed.py', '--experiment_root', experiment, '--dataset', names[split],
            '--image_root', data, '--filename', files[split], '--quiet',
            *(['--tracklets', 'mean'] if recipe.startswith('frames') else []))
    result = os.path.join(experiment, 'eval.json')
    run('evaluate.py', '--excluder', 'tracklets', '--metric', 'euclidean', '--quiet',
        '--query_dataset', names['query'], '--query_embeddings', files['query'],
        '--gallery_dataset', names['test'], '--gallery_embeddings', files['test'],
        '--filename', result)
    with open(result) as f:
        figures = json.load(f)
    return {'mAP': figures['mAP'], 'top1': figures['CMC'][0], 'train_seconds': seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--data', required=True,
                        help='The image root of the tracklet CSVs (data/make_video_demo.py\'s '
                             '--output).')
    parser.add_argument('--prefix', default='video',
                        help='The CSVs are PREFIX_train.csv, PREFIX_query.csv and '
                             'PREFIX_test.csv in --data.')
    parser.add_argument('--recipes', nargs='+', default=list(RECIPES), choices=RECIPES)
    parser.add_argument('--iterations', type=int, default=600, help='Training iterations.')
    parser.add_argument('--model_flags', default=MODEL,
                        help='train.py\'s flags of the net, head and input size (and '
                             'starting weights, such as an imported model zoo root).')
    parser.add_argument('--cuhk03', metavar='CSV_DIR',
                        help='Write multi-shot CUHK03 tracklet CSVs (cuhk03ms_*) from the '
                             'data/convert.py cuhk03_folders CSVs of CSV_DIR into --data\'s '
                             'scratch copy and use them (--data is then the CUHK03 image root).')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--json', help='Write the results here.')
    args = parser.parse_args(argv)

    results = {'argv': sys.argv[1:] if argv is None else argv, 'iterations': args.iterations,
               'model_flags': args.model_flags, 'recipes': {}}
    with tempfile.TemporaryDirectory(prefix='bench-video-') as scratch:
        folder, prefix = args.data, args.prefix
        if args.cuhk03:
            cuhk03_tracklets(args.cuhk03, scratch)
            folder, prefix = scratch, 'cuhk03ms'
        names = {split: os.path.join(folder, '{}_{}.csv'.format(prefix, split))
                 for split in ('train', 'query', 'test')}
        for recipe in args.recipes:
            rows = [evaluate(recipe, seed, args.data, names, scratch, args.iterations,
                             args.model_flags) for seed in args.seeds]
            maps = [row['mAP'] for row in rows]
            results['recipes'][recipe] = {
                'seeds': dict(zip(map(str, args.seeds), rows)),
                'mAP_mean': float(np.mean(maps)), 'mAP_std': float(np.std(maps)),
                'top1_mean': float(np.mean([row['top1'] for row in rows]))}
            print('{:<16} mAP {:6.2%} ± {:5.2%}  top-1 {:6.2%}  ({:.0f} s a run)'.format(
                recipe, np.mean(maps), np.std(maps), results['recipes'][recipe]['top1_mean'],
                np.mean([row['train_seconds'] for row in rows])), flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
