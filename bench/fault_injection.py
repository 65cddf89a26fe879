#!/usr/bin/env python3
"""Fault injection: SIGKILL a training run at random moments, resume, compare.

Trains the tiny net once without interruption, then the same experiment again
while killing it with SIGKILL at random moments (during start-up, between
steps, while a checkpoint is being written — one is written every step) and
rerunning it each time until it finishes. With `--seed` and `--deterministic`
the final weights, the detailed logs and the embeddings of a fixed image set
must be bit-identical to the uninterrupted run.

    .venv/bin/python -m bench.fault_injection [--kills 20] [--json FILE]

prints a table and the line `N kills survived, final weights identical: yes`.
"""

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(folder):
    """A small demo-style set: 12 training identities, 32×16 net input."""
    from triplet_reid.data import make_demo
    make_demo.generate(folder, train_ids=12, test_ids=3, distractors=0, junk=0)
    return os.path.join(folder, 'demo_train.csv'), os.path.join(folder, 'demo_test.csv')


# The batch and image sizes of the small default run, and of the demo recipe
# (the demo set's own data, 128-D embeddings).
SETTINGS = {
    'small': ['--embedding_dim', '16', '--batch_p', '4', '--batch_k', '4',
              '--net_input_height', '32', '--net_input_width', '16',
              '--pre_crop_height', '36', '--pre_crop_width', '18'],
    'demo': ['--embedding_dim', '128', '--batch_p', '18', '--batch_k', '4',
             '--net_input_height', '128', '--net_input_width', '64',
             '--pre_crop_height', '144', '--pre_crop_width', '72'],
}


def train_command(root, train_csv, image_root, iterations, seed, extra=(), setting='small'):
    return [sys.executable, os.path.join(ROOT, 'train.py'), '--experiment_root', root,
            '--train_set', train_csv, '--image_root', image_root, '--model_name', 'tiny',
            '--head_name', 'fc1024'] + SETTINGS[setting] + [
            '--flip_augment', '--crop_augment',
            '--learning_rate', '1e-3', '--train_iterations', str(iterations),
            '--checkpoint_frequency', '1', '--loading_threads', '2', '--seed', str(seed),
            '--deterministic', '--detailed_logs'] + list(extra)


def run_until_done(command, kills, rng, max_delay):
    """Runs `command` again and again, SIGKILLing it `kills` times at random
    moments, until one run exits 0. Returns the number of kills made."""
    made = 0
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
    while True:
        process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   text=True, env=env)
        if made < kills:
            # Half of the kills land anywhere from start-up on, half once
            # training runs, at a random point within the next steps.
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0, 4.0))
            else:
                for line in process.stderr:
                    if 'Starting training' in line or 'already finished' in line:
                        break
                time.sleep(rng.uniform(0, max_delay))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                made += 1
                continue
        _, err = process.communicate()
        if process.returncode == 0:
            return made
        if made >= kills:
            raise RuntimeError('the resumed run failed:\n' + err[-3000:])


def model_variables(checkpoint):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith(('model/', 'body/', 'optimizer/', 'step/', 'classifier/', 'centers/',
                                'center_optimizer/'))}


def embeddings(root, csv_path):
    import h5py
    subprocess.run([sys.executable, os.path.join(ROOT, 'embed.py'), '--experiment_root', root,
                    '--dataset', csv_path, '--quiet', '--filename', 'fixed.h5'], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), capture_output=True)
    with h5py.File(os.path.join(root, 'fixed.h5'), 'r') as f:
        return f['emb'][()]


def detailed_log(root, name):
    with open(os.path.join(root, name + '.json')) as f:
        meta = json.load(f)
    return np.memmap(os.path.join(root, name), meta['dtype'], 'r', shape=tuple(meta['shape']))


def fault_injection(workdir, kills=20, iterations=200, seed=7, max_delay=0.6, rng_seed=0,
                    extra=(), setting='small'):
    """Returns a dict with the figures of one fault-injection experiment;
    `extra` are further train.py flags, `setting` a key of SETTINGS (`demo`
    trains on the demo set itself)."""
    rng = random.Random(rng_seed)
    if setting == 'demo':
        image_root = os.path.join(ROOT, 'data', 'demo')
        train_csv = os.path.join(image_root, 'demo_train.csv')
        test_csv = os.path.join(image_root, 'demo_query.csv')
    else:
        train_csv, test_csv = make_data(os.path.join(workdir, 'data'))
        image_root = os.path.join(workdir, 'data')
    straight, killed = os.path.join(workdir, 'straight'), os.path.join(workdir, 'killed')

    start = time.time()
    run_until_done(train_command(straight, train_csv, image_root, iterations, seed, extra,
                                 setting), 0, rng, 0)
    straight_seconds = time.time() - start
    start = time.time()
    made = run_until_done(train_command(killed, train_csv, image_root, iterations, seed, extra,
                                        setting), kills, rng, max_delay)
    killed_seconds = time.time() - start

    final = 'checkpoint-{}'.format(iterations)
    a = model_variables(os.path.join(straight, final))
    b = model_variables(os.path.join(killed, final))
    weights_identical = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    logs_identical = all(np.array_equal(detailed_log(straight, n), detailed_log(killed, n))
                         for n in ('losses', 'fids', 'embeddings'))
    emb_identical = np.array_equal(embeddings(straight, test_csv), embeddings(killed, test_csv))
    return {'kills': made, 'iterations': iterations, 'variables': len(a),
            'weights_identical': bool(weights_identical),
            'detailed_logs_identical': bool(logs_identical),
            'embeddings_identical': bool(emb_identical),
            'seconds_uninterrupted': round(straight_seconds, 1),
            'seconds_with_kills': round(killed_seconds, 1)}


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--kills', type=int, default=20, help='Number of SIGKILLs.')
    parser.add_argument('--iterations', type=int, default=200, help='Training iterations.')
    parser.add_argument('--seed', type=int, default=0, help='Seed of the kill moments.')
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    parser.add_argument('--setting', default='small', choices=sorted(SETTINGS),
                        help='`small`: P=4, K=4, 32x16 on generated images; `demo`: the demo '
                        'recipe\'s P=18, K=4, 128x64 on the demo set.')
    parser.add_argument('--train_flags', default='',
                        help='Further train.py flags, as one shell-quoted string (for example '
                        'the strong baseline\'s).')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        result = fault_injection(workdir, args.kills, args.iterations, rng_seed=args.seed,
                                 extra=shlex.split(args.train_flags), setting=args.setting)
    for key, value in result.items():
        print('{:<26} {}'.format(key, value))
    identical = result['weights_identical'] and result['embeddings_identical'] and \
        result['detailed_logs_identical']
    print('{} kills survived, final weights identical: {}'.format(
        result['kills'], 'yes' if identical else 'no'))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return 0 if identical else 1


if __name__ == '__main__':
    sys.exit(main())
