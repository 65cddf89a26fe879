#!/usr/bin/env python3
"""Benchmark: a ViT-S/16 trained from scratch on the demo set learns.

Trains `vit_small_16` with the demo recipe's data and validation, at
96×48 (6×3 patches of 16, so that a CPU trains it in minutes), BNNeck and
the identity loss beside the triplet loss (what keeps a net trained from
scratch from collapsing), AdamW with warm-up and gradient clipping, then
embeds the held-out validation query and gallery with the untrained (step
0) and the trained model and evaluates both (cosine, as BNNeck embeds):
the mAP must rise clearly above the untrained one. Each command is the
user's own (train.py, embed.py, evaluate.py), run in turn.

    make data/demo/demo_train.csv
    .venv/bin/python -m bench.vit_demo --json bench/results/vit_demo.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'data', 'demo')
TRAINING = ['--model_name', 'vit_small_16', '--head_name', 'bnneck', '--embedding_dim', '384',
            '--id_loss_weight', '1',
            '--batch_p', '18', '--batch_k', '4', '--net_input_height', '96',
            '--net_input_width', '48', '--pre_crop_height', '108', '--pre_crop_width', '54',
            '--crop_augment', '--flip_augment', '--optimizer', 'adamw', '--learning_rate',
            '5e-4', '--weight_decay', '0.05', '--warmup_iterations', '50', '--clip_norm', '1',
            '--lr_schedule', 'cosine', '--decay_start_iteration', '0', '--loading_threads', '2',
            '--val_excluder', 'market1501']


def run(*argv):
    subprocess.run([sys.executable] + list(argv), check=True, cwd=ROOT,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def evaluated(root, checkpoint, folder):
    """(mAP, rank-1) in % of `checkpoint` on the demo's validation sets."""
    step = checkpoint.split('-')[1]
    for name in ('val_query', 'val_test'):
        run('embed.py', '--experiment_root', root, '--checkpoint', checkpoint, '--dataset',
            os.path.join(DEMO, 'demo_{}.csv'.format(name)), '--filename',
            os.path.join(folder, 'step{}_{}.h5'.format(step, name)), '--crop_augment', 'center',
            '--quiet')
    output = os.path.join(folder, 'step{}.json'.format(step))
    run('evaluate.py', '--excluder', 'market1501', '--metric', 'cosine',
        '--query_dataset', os.path.join(DEMO, 'demo_val_query.csv'),
        '--query_embeddings', os.path.join(folder, 'step{}_val_query.h5'.format(step)),
        '--gallery_dataset', os.path.join(DEMO, 'demo_val_test.csv'),
        '--gallery_embeddings', os.path.join(folder, 'step{}_val_test.h5'.format(step)),
        '--filename', output, '--quiet')
    with open(output) as f:
        result = json.load(f)
    return round(100 * result['mAP'], 2), round(100 * result['CMC'][0], 2)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--iterations', type=int, default=400, help='Training iterations.')
    parser.add_argument('--seed', type=int, default=0, help='The training seed.')
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='vit-demo-') as folder:
        root = os.path.join(folder, 'exp')
        start = time.time()
        run('train.py', '--experiment_root', root, '--train_set',
            os.path.join(DEMO, 'demo_train.csv'), '--image_root', DEMO, '--val_query',
            os.path.join(DEMO, 'demo_val_query.csv'), '--val_gallery',
            os.path.join(DEMO, 'demo_val_test.csv'), '--val_every', str(args.iterations),
            '--train_iterations', str(args.iterations), '--checkpoint_frequency',
            str(args.iterations), '--seed', str(args.seed), *TRAINING)
        seconds = time.time() - start
        untrained = evaluated(root, 'checkpoint-0', folder)
        trained = evaluated(root, 'checkpoint-{}'.format(args.iterations), folder)
    result = {'net': 'vit_small_16', 'input': '96x48', 'iterations': args.iterations,
              'seed': args.seed, 'train_seconds': round(seconds), 'flags': TRAINING,
              'untrained_mAP': untrained[0], 'untrained_rank1': untrained[1],
              'trained_mAP': trained[0], 'trained_rank1': trained[1]}
    print(json.dumps(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
