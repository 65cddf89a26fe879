#!/usr/bin/env python3
"""Benchmark: real pedestrians, from scratch against an ImageNet-pretrained body and a re-id model.

Trains three recipes on real re-id data (CUHK03 crops converted with
`data/convert.py cuhk03_folders`) with Keras' MobileNetV2 at width 0.35
(`keras_mobilenet_v2_035`) at 128×64, seed by seed, then embeds the query and
gallery sets (resized to the net input) and evaluates them:

  - `trinet_scratch`: TriNet (fc1024 head, 128 dimensions, P=18 K=4, crops
    from 9/8 of the input, flips, batch-hard soft margin, Adam 3e-4 decaying
    from 3/5 of the iterations) from random weights; Euclidean distances;
  - `trinet_imagenet`: the same from the ImageNet body;
  - `bot_imagenet`: the strong baseline (BoT's tricks) from the ImageNet body:
    TriNet's head with a BNNeck on its embedding (`fc1024_bnneck`), identity
    loss with label smoothing 0.1, batch-hard with margin 0.3, center loss
    5e-4, P=16 K=4, Adam 3.5e-4 with 1/12 of the iterations of warm-up and
    ×0.1 steps at 3/5 and 17/20, weight decay 5e-4, flips, padding 5 (BoT's 10
    at 256×128) and random crop; cosine distances of the features after the
    BNNeck.

Three changes from BoT's ResNet-50 recipe were measured on seed 0 at 1500
iterations (bench/RESULTS.md): BoT's BNNeck straight on the 1280 pooled
features (`bnneck`) reached 17.2% mAP in both implementations, TriNet's head
with the BNNeck 24.4%; BoT's schedule (steps at 1/3 and 7/12) leaves a short
run a quarter of its iterations at the full rate, and random erasing slows a
short run further (PyTorch side with the `bnneck` head: 9.1% with both,
14.0% with the later steps).

Two more recipes start from a trained re-id model instead, a torchreid
model-zoo file (`--zoo_weights`, such as OSNet x0.25 trained on MSMT17)
imported with import_model.py, at torchreid's 256×128, in the project only:

  - `zoo`: the imported model as it is, without training (cross-domain);
  - `zoo_finetune`: the CPU recipe of docs/deployment.md, fine-tuning the whole net
    (`--zoo_iterations`, 600 by default) with batch-hard soft margin on its
    512-d features, P=16 K=4, flips, Adam 1e-4 decaying from half-way;
    Euclidean distances, as torchreid evaluates.
  - `zoo_adapt`: the same without the identities, recipes/zoo_adapt.args
    (`--zoo_iterations` long): train.py --pseudo_labels clusters the training crops
    every `--cluster_every` iterations and trains on the pseudo-identities,
    with the cluster-memory loss beside batch-hard; the training CSV's
    identities only measure each round's pseudo-labels (pairwise precision,
    recall and NMI, in the results).

With `--torch_python`, each recipe but these also runs in `bench/torch_finetune.py`, an
independent PyTorch implementation of the same recipes (MobileNetV2 written
out in PyTorch, loading the same converted weights), so that a weakness of
the project shows against a yardstick. The project's runs are what a user
runs: train.py, embed.py for query and gallery, evaluate.py.

The data and weights are not in the repository; make them first (the
ImageNet body from a TF.js export with `python -m bench.tfjs_weights`, or
`--weights imagenet` where Keras can download them):

    .venv/bin/python data/convert.py cuhk03_folders --dataset_root D/detected --output_dir C
    .venv/bin/python -m bench.real --image_root D/detected --csv_dir C \\
        --weights mobilenet_v2_035.weights.h5 --iterations 1500 --seeds 0 1 2 \\
        --torch_python ../torchenv/bin/python --json bench/results/real_cuhk03.json
"""

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile

import numpy as np

from triplet_reid.cli import startup
from bench import adaptation, tfjs_weights
from bench.parity import ROOT, print_table, run, summarise
from triplet_reid.excluders import _camera, cuhk03_folders

RECIPES = ('trinet_scratch', 'trinet_imagenet', 'bot_imagenet')
# The recipes that start from a torchreid model-zoo file (--zoo_weights),
# imported by import_model.py, at torchreid's 256×128: `zoo` embeds with it
# as it is, `zoo_finetune` fine-tunes it first, `zoo_adapt` adapts it without the
# labels; the project's side only.
ZOO_RECIPES = ('zoo', 'zoo_finetune', 'zoo_adapt')
PREFIX = 'cuhk03_folders'


def project_flags(recipe, iterations, height, width, weights, cluster_every=200):
    """train.py's flags for `recipe`, and the metric it is evaluated with."""
    if recipe == 'zoo_adapt':
        # The recipe file itself, at this benchmark's length and rounds.
        return ['@zoo_adapt', '--initial_checkpoint', weights, '--train_iterations',
                str(iterations), '--decay_start_iteration', str(iterations // 2),
                '--cluster_every', str(cluster_every)], 'euclidean'
    if recipe == 'zoo_finetune':
        # The recipe of docs/deployment.md: the whole net at torchreid's input size and rate
        # scale, batch-hard soft margin on its 512-d features, the rate
        # decaying over the second half.
        return ['--initial_checkpoint', weights, '--head_name', 'fc_bn_relu',
                '--embedding_dim', '512', '--net_input_height', '256', '--net_input_width', '128',
                '--pre_crop_height', '256', '--pre_crop_width', '128', '--flip_augment',
                '--batch_p', '16', '--batch_k', '4', '--learning_rate', '1e-4',
                '--train_iterations', str(iterations), '--decay_start_iteration',
                str(iterations // 2)], 'euclidean'
    flags = ['--model_name', 'keras_mobilenet_v2_035', '--net_input_height', str(height),
             '--net_input_width', str(width), '--flip_augment',
             '--train_iterations', str(iterations)]
    if recipe != 'trinet_scratch':
        flags += ['--initial_checkpoint', weights]
    if recipe.startswith('trinet'):
        return flags + [
            '--head_name', 'fc1024', '--embedding_dim', '128', '--batch_p', '18',
            '--batch_k', '4', '--pre_crop_height', str(height * 9 // 8),
            '--pre_crop_width', str(width * 9 // 8), '--crop_augment',
            '--decay_start_iteration', str(iterations * 3 // 5)], 'euclidean'
    return flags + [
        '--head_name', 'fc1024_bnneck', '--embedding_dim', '128', '--id_loss_weight', '1',
        '--label_smoothing', '0.1', '--center_loss_weight', '5e-4', '--margin', '0.3',
        '--batch_p', '16', '--batch_k', '4', '--learning_rate', '3.5e-4',
        '--warmup_iterations', str(iterations // 12), '--lr_schedule', 'step',
        '--lr_decay_steps', str(iterations * 3 // 5), str(iterations * 17 // 20),
        '--weight_decay', '5e-4', '--pad_crop', str(round(10 * height / 256))], 'cosine'


def csvs(args):
    return {split: os.path.join(args.csv_dir, '{}_{}.csv'.format(PREFIX, split))
            for split in ('train', 'query', 'test')}


def camera_csv(train_csv, scratch):
    """The training crops of `train_csv` as --pseudo_labels reads them with
    their cameras: a `path,camera,identity` CSV in `scratch` (the identities
    only score the pseudo-labels), the camera from each crop's number as the
    cuhk03_folders excluder reads it."""
    target = os.path.join(scratch, 'train_cameras.csv')
    with open(train_csv, newline='') as f:
        rows = list(csv.reader(f))
    _, numbers = _camera.parse([path for _, path in rows], cuhk03_folders.PATTERN,
                               'CUHK03 folders')
    with open(target, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['path', 'camera', 'identity'])
        writer.writerows((path, camera, identity) for (identity, path), camera
                         in zip(rows, cuhk03_folders.camera(numbers)))
    return target


def import_zoo(args, scratch, log):
    """The experiment root of --zoo_weights, imported once."""
    root = os.path.join(scratch, 'zoo')
    if not os.path.isdir(root):
        run([sys.executable, 'import_model.py', '--weights', args.zoo_weights,
             '--experiment_root', root], log)
    return root


def run_project(args, recipe, seed, root, log, scratch):
    python = sys.executable
    files = csvs(args)
    seconds = 0
    if recipe == 'zoo':
        # As torchreid evaluates its models.
        root, metric = import_zoo(args, scratch, log), 'euclidean'
    else:
        weights = import_zoo(args, scratch, log) if recipe in ZOO_RECIPES else args.weights
        flags, metric = project_flags(recipe, args.zoo_iterations if recipe in ZOO_RECIPES
                                      else args.iterations, args.height, args.width, weights,
                                      args.cluster_every)
        if recipe in ZOO_RECIPES:
            flags = ['--model_name', json.load(open(os.path.join(weights, 'args.json')))[
                'model_name']] + flags
        train_set = camera_csv(files['train'], scratch) if recipe == 'zoo_adapt' \
            else files['train']
        _, seconds = run([python, 'train.py', '--experiment_root', root, '--train_set',
                          train_set, '--image_root', args.image_root,
                          '--checkpoint_frequency', '0', '--seed', str(seed)] + flags +
                         shlex.split(args.train_flags), log)
    embeddings = []
    for split in ('query', 'test'):
        filename = '{}-{}.h5'.format(split, seed)
        _, took = run([python, 'embed.py', '--experiment_root', root, '--dataset', files[split],
                       '--image_root', args.image_root, '--filename', filename, '--quiet'], log)
        seconds += took
        embeddings.append(os.path.join(root, filename))
    results = os.path.join(root, 'eval-{}.json'.format(seed))
    _, took = run([python, 'evaluate.py', '--excluder', PREFIX, '--metric', metric,
                   '--query_dataset', files['query'], '--gallery_dataset', files['test'],
                   '--query_embeddings', embeddings[0], '--gallery_embeddings', embeddings[1],
                   '--filename', results], log)
    with open(results) as f:
        figures = json.load(f)
    row = {'mAP': figures['mAP'], 'top1': figures['CMC'][0], 'seconds': seconds + took}
    if recipe == 'zoo_adapt':
        with open(files['train']) as f:
            identities = {path: identity for identity, path in csv.reader(f)}
        row['rounds'] = adaptation.round_scores(root, identities)
    return row


def run_torch(args, recipe, seed, scratch, log):
    files = csvs(args)
    command = [args.torch_python, os.path.join(ROOT, 'bench', 'torch_finetune.py'),
               '--recipe', recipe, '--train_csv', files['train'], '--query_csv',
               files['query'], '--gallery_csv', files['test'], '--image_root', args.image_root,
               '--steps', str(args.iterations), '--H', str(args.height), '--W', str(args.width),
               '--seed', str(seed)]
    if recipe != 'trinet_scratch':
        command += ['--weights', numpy_weights(args.weights, scratch)]
    out, seconds = run(command, log)
    result = json.loads(out.strip().splitlines()[-1])
    return {'mAP': result['mAP'], 'top1': result['top1'], 'seconds': seconds}


def numpy_weights(path, scratch):
    """The Keras weights file of the body as an .npz of `layer/weight` arrays,
    which the PyTorch side reads without h5py or Keras."""
    target = os.path.join(scratch, 'body.npz')
    if not os.path.exists(target):
        startup.quiet_tensorflow()
        application = tfjs_weights.mobilenet_v2(0.35, 'imagenet' if path == 'imagenet' else None)
        if path != 'imagenet':
            application.load_weights(path)
        np.savez(target, **{tfjs_weights.variable_name(v): np.asarray(v)
                            for v in application.weights})
    return target


def parse_args(argv):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--image_root', required=True,
                        help='The converted dataset root (holding train/ and val/).')
    parser.add_argument('--csv_dir', required=True,
                        help='The folder of data/convert.py cuhk03_folders\'s CSVs.')
    parser.add_argument('--weights', default='imagenet',
                        help='The ImageNet body: a Keras weights file of '
                        'MobileNetV2(alpha=0.35, include_top=False), or `imagenet`.')
    parser.add_argument('--recipes', nargs='+', choices=RECIPES + ZOO_RECIPES,
                        default=list(RECIPES),
                        help='The recipes to run.')
    parser.add_argument('--iterations', type=int, default=1500, help='Training iterations.')
    parser.add_argument('--zoo_weights',
                        help='A torchreid model-zoo .pth (such as osnet_x0_25_msmt17.pth) for '
                        'the recipes zoo and zoo_finetune.')
    parser.add_argument('--zoo_iterations', type=int, default=600,
                        help='Training iterations of zoo_finetune and zoo_adapt.')
    parser.add_argument('--cluster_every', type=int, default=200,
                        help='Iterations between two clusterings of zoo_adapt.')
    parser.add_argument('--height', type=int, default=128, help='Net input height.')
    parser.add_argument('--width', type=int, default=64, help='Net input width.')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='Seeds; each recipe trains once per seed and implementation.')
    parser.add_argument('--torch_python',
                        help='The Python of an environment with PyTorch, scikit-learn and '
                        'Pillow, to run the PyTorch side too.')
    parser.add_argument('--only', choices=('project', 'torch'),
                        help='Run one implementation only.')
    parser.add_argument('--train_flags', default='',
                        help='Extra train.py flags, as one shell-quoted string.')
    parser.add_argument('--json', help='Also write the results to this JSON file, after '
                        'every run.')
    return parser.parse_args(argv)


def write_json(args, results):
    summaries = {name: summarise(rows) for name, rows in results.items() if rows}
    from triplet_reid.storage import files
    files.write_json(args.json, {
        'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
        'argv': sys.argv[1:], 'recipe': {'height': args.height, 'width': args.width,
                                         'iterations': args.iterations,
                                         'zoo_iterations': args.zoo_iterations,
                                         'cluster_every': args.cluster_every,
                                         'train_flags': args.train_flags},
        'results': results, 'summary': summaries})


def main(argv=None):
    args = parse_args(argv)
    implementations = [name for name in ('project', 'torch') if args.only in (None, name) and
                       (name == 'project' or args.torch_python)]
    if set(args.recipes) & set(ZOO_RECIPES) and not args.zoo_weights:
        sys.exit('the recipes {} need --zoo_weights.'.format(', '.join(ZOO_RECIPES)))
    missing = [path for path in csvs(args).values() if not os.path.isfile(path)]
    if missing:
        sys.exit('{} is missing; run data/convert.py cuhk03_folders first.'.format(missing[0]))
    results = {'{}/{}'.format(name, recipe): [] for recipe in args.recipes
               for name in implementations if name == 'project' or recipe not in ZOO_RECIPES}
    # Kept when a run fails, for its log; removed after a complete benchmark.
    scratch = tempfile.mkdtemp(prefix='real-')
    log = os.path.join(scratch, 'log.txt')
    for seed in args.seeds:
        for key, rows in results.items():
            name, recipe = key.split('/')
            if name == 'project':
                root = os.path.join(scratch, '{}-{}'.format(recipe, seed))
                row = run_project(args, recipe, seed, root, log, scratch)
            else:
                row = run_torch(args, recipe, seed, scratch, log)
            row['seed'] = seed
            rows.append(row)
            print('{:24} seed {}: mAP {:.2%}, top-1 {:.2%}, {:.0f} s'.format(
                key, seed, row['mAP'], row['top1'], row['seconds']), flush=True)
            if args.json:
                write_json(args, results)
    shutil.rmtree(scratch)
    print_table(results, args.seeds, 'implementation/recipe')


if __name__ == '__main__':
    main()
