"""tf.distribute, mixed precision and XLA on CPUs."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from triplet_reid import train
from triplet_reid import loss
from conftest import (ROOT, base_args, checkpoint_steps, logged_iterations, scalars, val_args,
                      validation_csvs)

HELPER = os.path.join(ROOT, 'tests', 'distributed_helper.py')
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')


def helper(*argv):
    done = subprocess.run([sys.executable, HELPER] + list(argv), capture_output=True,
                          text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_mirrored_cpus_give_the_single_device_loss_gradients_and_moving_statistics():
    # The hinge margin leaves zero terms, which batch_all counts over all replicas.
    losses = list(loss.LOSS_CHOICES) + ['batch_all:0.2', 'batch_sample:0.2',
                                        'batch_hard:soft:strong']
    results = json.loads(helper('gradients', 'global', *losses).stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(losses)
    for name, result in results.items():
        assert result['loss_diff'] <= 1e-4 * result['loss_scale'], (name, result)
        assert result['grad_diff'] <= 1e-4 * result['grad_scale'], (name, result)
        # The synchronised batch norm averages the unbiased variance, as one device's.
        assert result['moving_count'] == 10 and result['moving_rel_diff'] <= 1e-4, (name, result)
    # Per-replica mining sees only half the batch: a different loss, as it should.
    per_replica = json.loads(helper('gradients', 'per_replica', 'batch_hard')
                             .stdout.strip().splitlines()[-1])['batch_hard']
    assert per_replica['loss_diff'] > 1e-2 * per_replica['loss_scale']


@pytest.mark.slow
def test_mirrored_training_run(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    query, gallery = validation_csvs(image_root)
    helper('train', *base_args(root, csv_path, image_root, 6, '--distribution', 'mirrored',
                               '--checkpoint_frequency', '3', '--detailed_logs',
                               *val_args(query, gallery, 3)))
    assert checkpoint_steps(root) == [0, 3, 6]
    assert sorted(scalars(root, 'val/mAP')['val/mAP']) == [3, 6]
    assert [i for i, _ in logged_iterations(root)] == list(range(1, 7))
    fids = np.memmap(os.path.join(root, 'fids'), json.load(open(
        os.path.join(root, 'fids.json')))['dtype'], 'r', shape=(6, 16))
    assert all(f.startswith(b'train/') for f in fids.ravel())


def free_port():
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def start_workers(argv):
    """Two train.py processes of one localhost cluster, started."""
    ports = [free_port(), free_port()]
    processes = []
    for index in range(2):
        config = {'cluster': {'worker': ['localhost:{}'.format(p) for p in ports]},
                  'task': {'type': 'worker', 'index': index}}
        processes.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'train.py')] + argv,
            env=dict(ENV, TF_CONFIG=json.dumps(config)), stderr=subprocess.PIPE, text=True))
    return processes


def run_workers(argv):
    processes = start_workers(argv)
    errors = [p.communicate(timeout=300)[1] for p in processes]
    for process, error in zip(processes, errors):
        assert process.returncode == 0, error[-3000:]
    return errors


@pytest.mark.slow
def test_multi_worker_on_localhost_trains_and_resumes(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    query, gallery = validation_csvs(image_root)
    argv = base_args(root, csv_path, image_root, 4, '--distribution', 'multi_worker',
                     '--checkpoint_frequency', '2', *val_args(query, gallery, 2))
    run_workers(argv)
    assert checkpoint_steps(root) == [0, 2, 4]
    # The chief validates while the other worker waits for the next step.
    assert sorted(scalars(root, 'val/mAP')['val/mAP']) == [2, 4]
    assert os.path.isfile(os.path.join(root, 'best.json'))
    assert not [name for name in os.listdir(root) if name.startswith('.worker')]
    # Extend the experiment and rerun both workers: they resume at step 4.
    args_file = os.path.join(root, 'args.json')
    stored = json.load(open(args_file))
    stored['train_iterations'] = 6
    json.dump(stored, open(args_file, 'w'))
    run_workers(['--experiment_root', root, '--distribution', 'multi_worker'])
    assert checkpoint_steps(root) == [0, 2, 4, 6]
    log = open(os.path.join(root, 'train.log')).read()
    assert 'Starting training from iteration 4;' in log
    assert [i for i, _ in logged_iterations(root)] == list(range(1, 7))


def test_multi_worker_needs_a_seed(tmp_path, tiny_dataset, monkeypatch):
    csv_path, image_root = tiny_dataset
    argv = base_args(str(tmp_path / 'exp'), csv_path, image_root, 2, '--distribution',
                     'multi_worker')
    argv.remove('--seed')
    argv.remove('3')
    with pytest.raises(train.cli.UserError, match='needs the TF_CONFIG environment'):
        train.main(argv)
    monkeypatch.setenv('TF_CONFIG', json.dumps({'cluster': {'worker': ['localhost:1']},
                                                'task': {'type': 'worker', 'index': 0}}))
    with pytest.raises(train.cli.UserError, match='needs --seed'):
        train.main(argv)


@pytest.mark.parametrize('precision', ['float16', 'bfloat16'])
def test_mixed_precision_converges_like_float32(tmp_path, tiny_dataset, precision):
    csv_path, image_root = tiny_dataset
    finals = {}
    for mode in ('off', precision):
        root = str(tmp_path / mode)
        assert train.main(base_args(root, csv_path, image_root, 15, '--mixed_precision',
                                    mode)) == 0
        losses = [avg for _, avg in logged_iterations(root)]
        assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), (mode, losses)
        finals[mode] = np.mean(losses[-10:])
    assert abs(finals[precision] - finals['off']) < 0.3, finals


def test_xla_step(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 3, '--xla')) == 0
    assert checkpoint_steps(root) == [0, 3]


@pytest.mark.slow
def test_a_signal_to_one_worker_stops_all_of_them(tmp_path, tiny_dataset):
    import signal
    import time
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    argv = base_args(root, csv_path, image_root, 100000, '--distribution', 'multi_worker',
                     '--checkpoint_frequency', '0')
    processes = start_workers(argv)
    # Wait until the chief trains, then stop the other worker only.
    def trained(steps):
        log = os.path.join(root, 'train.log')
        return os.path.exists(log) and any(i >= steps for i, _ in logged_iterations(root))

    deadline = time.time() + 240
    while time.time() < deadline and not trained(3):
        time.sleep(0.5)
    processes[1].send_signal(signal.SIGTERM)
    errors = [p.communicate(timeout=120)[1] for p in processes]
    for process, error in zip(processes, errors):
        assert process.returncode == 0, error[-3000:]
    assert 'Received SIGTERM' in errors[1] and 'request of another worker' in errors[0]
    last = logged_iterations(root)[-1][0]
    assert checkpoint_steps(root) == [0, last] and 3 <= last < 100000
