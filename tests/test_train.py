"""End-to-end training on a tiny generated dataset: loss, checkpoints, resume, signals."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid.training import memory, detailed_logs
from triplet_reid import experiment
from triplet_reid import train
from triplet_reid import loss
from triplet_reid import training
import triplet_reid.training.data  # noqa: F401
import triplet_reid.training.run  # noqa: F401
import triplet_reid.training.step  # noqa: F401
from triplet_reid.training import schedules, collapse
from triplet_reid.models.build import build_model
from conftest import ROOT, base_args, checkpoint_steps, logged_iterations, make_dataset

TAGS = {'loss', 'batch_top1', 'batch_prec_at_3', 'active_count', 'learning_rate',
        'secs_per_iter', 'loss_distribution', 'embedding_dists', 'embedding_pos_dists',
        'embedding_neg_dists', 'embedding_lengths', 'embedding_spread'}


def test_train_end_to_end(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 40)) == 0

    stored = json.load(open(os.path.join(root, 'args.json')))
    assert stored['model_name'] == 'tiny' and stored['seed'] == 3 and stored['batch_p'] == 4
    assert checkpoint_steps(root) == [0, 10, 20, 30, 40]
    losses = [avg for _, avg in logged_iterations(root)]
    assert [i for i, _ in logged_iterations(root)] == list(range(1, 41))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses

    events = [f for f in os.listdir(root) if f.startswith('events.out.tfevents')]
    tags = {v.tag for f in events
            for e in tf.compat.v1.train.summary_iterator(os.path.join(root, f))
            for v in e.summary.value}
    assert TAGS <= tags
    assert 'looks collapsed' not in open(os.path.join(root, 'train.log')).read()


def test_interrupt_and_resume_with_changed_flag(tmp_path, tiny_dataset, interrupt_at):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    interrupt_at(15)
    assert train.main(base_args(root, csv_path, image_root, 30, '--detailed_logs')) == 0
    assert checkpoint_steps(root) == [0, 10, 15]

    # Rerun without --resume and with a changed flag: stored value wins, warned.
    assert train.main(base_args(root, csv_path, image_root, 30, '--learning_rate', '0.5')) == 0
    with open(os.path.join(root, 'train.log')) as f:
        text = f.read()
    assert re.search(r'WARNING.*`learning_rate`.*stored value `0.001`.*provided value was '
                     r'`0.5`', text)
    assert 'Starting training from iteration 15; the first iteration also traces' in text
    assert [i for i, _ in logged_iterations(root)] == list(range(1, 31))
    assert checkpoint_steps(root) == [0, 10, 15, 20, 30]

    # The detailed logs cover both runs.
    embs = np.memmap(os.path.join(root, 'embeddings'), np.float32, 'r', shape=(30, 16, 16))
    fids = np.memmap(os.path.join(root, 'fids'), json.load(
        open(os.path.join(root, 'fids.json')))['dtype'], 'r', shape=(30, 16))
    assert np.abs(embs).sum(axis=(1, 2)).min() > 0
    assert all(f.startswith(b'train/') for f in fids.ravel())


def test_sigterm_stops_after_the_step(tmp_path, tiny_dataset, interrupt_at):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    interrupt_at(4, signal.SIGTERM)
    assert train.main(base_args(root, csv_path, image_root, 30)) == 0
    assert checkpoint_steps(root) == [0, 4]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, 'handlers are restored'


def test_resume_reproduces_uninterrupted_batches(tmp_path, tiny_dataset, interrupt_at):
    csv_path, image_root = tiny_dataset
    straight, resumed = str(tmp_path / 'a'), str(tmp_path / 'b')
    assert train.main(base_args(straight, csv_path, image_root, 12, '--detailed_logs')) == 0
    interrupt_at(5)
    assert train.main(base_args(resumed, csv_path, image_root, 12, '--detailed_logs')) == 0
    assert train.main(['--experiment_root', resumed, '--resume']) == 0
    shape = json.load(open(os.path.join(straight, 'fids.json')))
    a = np.memmap(os.path.join(straight, 'fids'), shape['dtype'], 'r', shape=tuple(shape['shape']))
    b = np.memmap(os.path.join(resumed, 'fids'), shape['dtype'], 'r', shape=tuple(shape['shape']))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('loss_name, margin', [('batch_all', '0.2'), ('batch_all_mean', 'soft'),
                                               ('batch_sample', 'soft'), ('weighted', '0.3')])
def test_every_loss_trains(tmp_path, tiny_dataset, loss_name, margin):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 20, '--loss', loss_name,
                                '--margin', margin, '--metric', 'sqeuclidean')) == 0
    losses = [avg for _, avg in logged_iterations(root)]
    assert len(losses) == 20 and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


def test_resumed_batch_sample_draws_what_the_straight_run_drew(tmp_path, tiny_dataset,
                                                               interrupt_at):
    csv_path, image_root = tiny_dataset
    straight, resumed = str(tmp_path / 'a'), str(tmp_path / 'b')
    extra = ('--detailed_logs', '--loss', 'batch_sample')
    assert train.main(base_args(straight, csv_path, image_root, 8, *extra)) == 0
    interrupt_at(4)
    assert train.main(base_args(resumed, csv_path, image_root, 8, *extra)) == 0
    assert train.main(['--experiment_root', resumed, '--resume']) == 0
    # Without --deterministic the kernels may differ in the last bits, but a
    # different draw would change a per-anchor loss by far more.
    shape = json.load(open(os.path.join(straight, 'losses.json')))
    a, b = (np.memmap(os.path.join(root, 'losses'), shape['dtype'], 'r',
                      shape=tuple(shape['shape'])) for root in (straight, resumed))
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_looks_collapsed():
    assert collapse.looks_collapsed(0.70, 0.01, 'soft')
    assert not collapse.looks_collapsed(0.70, 0.5, 'soft'), 'a healthy spread'
    assert not collapse.looks_collapsed(0.60, 0.01, 'soft'), 'the loss left ln 2'
    assert collapse.looks_collapsed(0.2, 0.001, 0.2)
    assert not collapse.looks_collapsed(0.1, 0.001, 0.2)
    assert collapse.looks_collapsed(0.0, 0.001, 'none')
    # Spread out, but ranking at chance (3 of 71 for 18×4): a net that learns
    # nothing, as TriNet from scratch on CUHK03 with MobileNetV2 0.35.
    chance = 3 / 71
    assert collapse.looks_collapsed(0.713, 0.4, 'soft', 0.03, chance)
    assert not collapse.looks_collapsed(0.713, 0.4, 'soft', 0.3, chance), 'ranking above chance'
    assert not collapse.looks_collapsed(0.5, 0.4, 'soft', 0.03, chance), 'the loss left ln 2'


def test_collapsed_run_warns_once(tmp_path):
    # Every identity shows the same black picture, so every embedding is the
    # same point: the loss sits at ln 2 and the spread at zero, as in a
    # collapse. Black, since the tiny net and its head map zeros to exactly
    # zero on every machine (their biases start at zero), and zero gradients
    # keep them there. Over a picture of noise, batch norm of identical
    # inputs would blow the last-bit differences between batch elements that
    # some CPUs' kernels make up into a spread of any size.
    from conftest import scalars, write_image
    image_root = str(tmp_path / 'data')
    picture = np.zeros((32, 16, 3), np.uint8)
    rows = []
    for i in range(16):
        fid = 'train/{:04d}_c1s1_{:06d}_00.jpg'.format(i // 4 + 1, i)
        write_image(os.path.join(image_root, fid), picture)
        rows.append('{:04d},{}\n'.format(i // 4 + 1, fid))
    csv_path = os.path.join(image_root, 'train.csv')
    with open(csv_path, 'w') as f:
        f.writelines(rows)
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 25, '--collapse_patience', '10')) == 0
    text = open(os.path.join(root, 'train.log')).read()
    assert text.count('Training looks collapsed: for 10 iterations the loss has stayed at 0.693') \
        == 1, text
    assert 'a lower --learning_rate' in text and '--initial_checkpoint' in text
    assert '--id_loss_weight 1' in text
    spread = scalars(root, 'embedding_spread')['embedding_spread']
    assert len(spread) == 25 and max(spread.values()) < 0.02


def test_initial_checkpoint_loads_body(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    _, body = build_model('tiny', 'fc1024', 16)
    weights = str(tmp_path / 'body.weights.h5')
    body.save_weights(weights)

    def body_weights_at_step0(root):
        model, fresh = build_model('tiny', 'fc1024', 16)
        tf.train.Checkpoint(body=fresh).read(os.path.join(root, 'checkpoint-0')).expect_partial()
        return fresh.get_weights()

    first = str(tmp_path / 'from_keras')
    assert train.main(base_args(first, csv_path, image_root, 2, '--initial_checkpoint',
                                weights)) == 0
    for a, b in zip(body_weights_at_step0(first), body.get_weights()):
        np.testing.assert_array_equal(a, b)

    # Another experiment's checkpoint works as an initial checkpoint too.
    second = str(tmp_path / 'from_experiment')
    source = os.path.join(first, 'checkpoint-2')
    assert train.main(base_args(second, csv_path, image_root, 1, '--initial_checkpoint',
                                source)) == 0
    _, expected = build_model('tiny', 'fc1024', 16)
    tf.train.Checkpoint(body=expected).read(source).expect_partial()
    for a, b in zip(body_weights_at_step0(second), expected.get_weights()):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(cli.UserError, match='neither a Keras weights file nor'):
        train.main(base_args(str(tmp_path / 'x'), csv_path, image_root, 1,
                             '--initial_checkpoint', str(tmp_path / 'nothing')))
    # The checkpoint's `.index` file, or the experiment root, name it as well.
    from triplet_reid.models.build import load_body_weights
    for given in (source + '.index', first):
        _, loaded = build_model('tiny', 'fc1024', 16)
        load_body_weights('tiny', loaded, given)
        newest = os.path.join(first, 'checkpoint-2') if given == first else source
        _, expected = build_model('tiny', 'fc1024', 16)
        tf.train.Checkpoint(body=expected).read(newest).expect_partial()
        for a, b in zip(loaded.get_weights(), expected.get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(cli.UserError, match='holds no checkpoint to initialise the body'):
        train.main(base_args(str(tmp_path / 'x'), csv_path, image_root, 1,
                             '--initial_checkpoint', image_root))


def test_initial_checkpoints_holding_nan_or_negative_variances_are_refused(tmp_path,
                                                                             tiny_dataset):
    # Of every kind: Keras weights, a TF2 checkpoint, a TF1 name-based one.
    from triplet_reid.models import tf1_checkpoint
    from triplet_reid.models.build import load_body_weights
    _, body = build_model('tiny', 'fc1024', 16)
    kernel = next(w for w in body.weights if w.path.endswith('kernel'))
    variance = next(w for w in body.weights if w.path.endswith('moving_variance'))
    damaged = []
    for weight, value in ((kernel, np.nan), (kernel, np.inf), (variance, -1.0)):
        good = weight.numpy()
        bad = good.copy()
        bad.flat[0] = value
        weight.assign(bad)
        keras_file = str(tmp_path / 'body{}.weights.h5'.format(len(damaged)))
        body.save_weights(keras_file)
        tf2 = tf.train.Checkpoint(body=body).write(str(tmp_path / 'tf2_{}'.format(len(damaged))))
        tf1 = str(tmp_path / 'tf1_{}.ckpt'.format(len(damaged)))
        names = tf1_checkpoint.variable_map(body, body.name)
        tf.raw_ops.SaveV2(prefix=tf1, tensor_names=list(names),
                          shape_and_slices=[''] * len(names),
                          tensors=[v.numpy() for v in names.values()])
        weight.assign(good)
        what = ('negative variances in the batch norm' if value == -1 else
                'NaN or infinite values in')
        damaged += [(path, what, weight.path) for path in (keras_file, tf2, tf1)]
    for path, what, name in damaged:
        _, fresh = build_model('tiny', 'fc1024', 16)
        with pytest.raises(cli.UserError, match=r'`{}` holds 1 {}.*`{}`'.format(
                re.escape(path), what, re.escape(name))):
            load_body_weights('tiny', fresh, path)
    # From the command line: one message, and no experiment root left behind.
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    with pytest.raises(cli.UserError, match='NaN or infinite'):
        train.main(base_args(root, csv_path, image_root, 2, '--initial_checkpoint',
                             damaged[0][0]))
    assert not os.path.exists(root)


def test_refusals_write_nothing(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    with pytest.raises(cli.UserError, match='--batch_k 1 leaves no positive'):
        train.main(base_args(root, csv_path, image_root, 5, '--batch_k', '1'))
    with pytest.raises(cli.UserError, match='8 identities but --batch_p is 9'):
        train.main(base_args(root, csv_path, image_root, 5, '--batch_p', '9'))
    with pytest.raises(cli.UserError, match='did not specify the `--train_set`'):
        train.main(['--experiment_root', root, '--image_root', image_root])
    assert not os.path.exists(root)

    os.makedirs(root)
    open(os.path.join(root, 'notes.txt'), 'w').close()
    with pytest.raises(cli.UserError, match='not empty and holds no args.json'):
        train.main(base_args(root, csv_path, image_root, 5))
    assert os.listdir(root) == ['notes.txt']
    with pytest.raises(cli.UserError, match='--resume was given but'):
        train.main(['--experiment_root', str(tmp_path / 'other'), '--resume'])
    assert not os.path.exists(tmp_path / 'other')

    with open(os.path.join(root, 'args.json'), 'w') as f:
        f.write('{"model_name": "tiny", ')
    with pytest.raises(cli.UserError, match='args.json` is corrupt'):
        train.main(['--experiment_root', root])
    with open(os.path.join(root, 'args.json'), 'w') as f:
        json.dump(dict(vars(train.parser.parse_args(base_args(root, csv_path, image_root))),
                       model_name='resnet_v9'), f)
    with pytest.raises(cli.UserError,
                       match='stores `model_name` = `resnet_v9`, which is not a valid'):
        train.main(['--experiment_root', root])


def test_nan_loss_stops_without_checkpoint(tmp_path, tiny_dataset, monkeypatch):
    csv_path, image_root = tiny_dataset
    original = loss.LOSS_CHOICES['batch_hard']

    def poisoned(dists, pids, margin, anchors=None, seed=None):
        return original(dists, pids, margin, anchors=anchors) * float('nan')

    monkeypatch.setitem(loss.LOSS_CHOICES, 'batch_hard', poisoned)
    root = str(tmp_path / 'exp')
    with pytest.raises(training.run.TrainingDiverged, match='loss became NaN at iteration 1'):
        train.main(base_args(root, csv_path, image_root, 5))
    assert checkpoint_steps(root) == [0]


def test_learning_rate_schedule():
    lr = schedules.LearningRate(1.0, 100, 200)
    assert float(lr(0)) == pytest.approx(1.0)
    assert float(lr(100)) == pytest.approx(1.0)
    assert float(lr(150)) == pytest.approx(0.001 ** 0.5, rel=1e-5)
    assert float(lr(200)) == pytest.approx(0.001, rel=1e-5)
    assert float(schedules.LearningRate(1.0, -1, 200)(150)) == pytest.approx(1.0)


def test_warmup_cosine_and_step_schedules():
    cosine = schedules.LearningRate(2.0, 100, 200, 'cosine')
    assert [float(cosine(i)) for i in (0, 100, 150, 200)] == pytest.approx(
        [2.0, 2.0, 1.0, 0.0], abs=1e-6)
    assert float(schedules.LearningRate(2.0, -1, 200, 'cosine')(150)) == pytest.approx(2.0)
    step = schedules.LearningRate(1.0, 100, 200, 'step', steps=(50, 120), factor=0.5)
    assert [float(step(i)) for i in (0, 49, 50, 119, 120, 199)] == pytest.approx(
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    # Warm-up: 1% at the first iteration, linear to the full rate of the schedule.
    warm = schedules.LearningRate(1.0, 100, 200, warmup=10)
    assert [float(warm(i)) for i in (0, 5, 10, 50)] == pytest.approx(
        [0.01, 0.01 + 0.99 * 0.5, 1.0, 1.0])
    warm_step = schedules.LearningRate(1.0, 0, 200, 'step', warmup=10, steps=(5,))
    assert float(warm_step(5)) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))


STRONG = ('--head_name', 'bnneck', '--id_loss_weight', '1', '--center_loss_weight', '5e-4',
          '--weight_decay', '5e-4', '--warmup_iterations', '5', '--random_erasing', '0.5',
          '--pad_crop', '2', '--pooling', 'gem', '--lr_schedule', 'cosine')


def test_strong_baseline_flags_train_checkpoint_and_resume(tmp_path, tiny_dataset, interrupt_at):
    from conftest import scalars
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    interrupt_at(12)
    assert train.main(base_args(root, csv_path, image_root, 25, *STRONG,
                                '--metric', 'cosine', '--margin', '0.3')) == 0
    assert checkpoint_steps(root) == [0, 10, 12]
    reader = tf.train.load_checkpoint(os.path.join(root, 'checkpoint-12'))
    names = reader.get_variable_to_shape_map()
    # The classifier (8 identities × 16) and the centers are checkpointed beside the model.
    assert any(n.startswith('classifier/') and names[n] == [16, 8] for n in names)
    assert any(n.startswith('centers/') and names[n] == [8, 16] for n in names)
    assert train.main(['--experiment_root', root]) == 0
    iterations = logged_iterations(root)
    assert [i for i, _ in iterations] == list(range(1, 26))
    ids, centers = scalars(root, 'id_loss')['id_loss'], scalars(root, 'center_loss')['center_loss']
    assert sorted(ids) == sorted(centers) == list(range(1, 26))
    ids = [ids[i] for i in sorted(ids)]
    assert np.mean(ids[-5:]) < np.mean(ids[:5]), ids
    rates = scalars(root, 'learning_rate')['learning_rate']
    assert rates[1] == pytest.approx(1e-5) and max(rates.values()) == pytest.approx(1e-3, 1e-3)
    # What embed.py builds from args.json is the trained model: bnneck with GeM.
    from triplet_reid.models.inference import load_experiment
    model, stored, _ = load_experiment(root)
    assert stored['pooling'] == 'gem' and model.get_layer('gem_pool') is not None


def test_strong_baseline_refusals(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    for extra, message in (
            (('--lr_schedule', 'step'), '--lr_schedule step needs the iterations'),
            (('--pad_crop', '2', '--crop_augment'), 'two ways of cropping'),
            (('--last_stride', '1'), '--last_stride 1 works with the nets resnet_v1_50')):
        with pytest.raises(cli.UserError, match=message):
            train.main(base_args(root, csv_path, image_root, 5, *extra))
    assert not os.path.exists(root)
    for flag, value in (('--weight_decay', 'inf'), ('--id_loss_weight', 'nan'),
                        ('--random_erasing', '1.5'), ('--pooling', 'median')):
        with pytest.raises(SystemExit):
            train.main(base_args(root, csv_path, image_root, 5, flag, value))


def test_detailed_log_grows(tmp_path):
    base = str(tmp_path / 'losses')
    first = detailed_logs.create_or_resize_dat(base, np.float32, (3, 2))
    first[:] = 7
    first.flush()
    grown = detailed_logs.create_or_resize_dat(base, np.float32, (5, 2))
    assert grown.shape == (5, 2)
    np.testing.assert_array_equal(grown[:3], 7)
    np.testing.assert_array_equal(grown[3:], 0)


@pytest.mark.parametrize('description, match', [
    ('{"shape": [3, 2', 'is corrupt'), ('[3, 2]', 'is corrupt'), ('{"dtype": "<f4"}', 'is corrupt'),
    ('{"dtype": "<f4", "shape": [3.5, 2]}', 'is corrupt'),
    ('{"dtype": "<f4", "shape": ' + '[' * 100000 + ']' * 100000 + '}',
     r'is corrupt \(nested deeper than 64 levels\)'),
    # A claim of a petabyte would grow the file to that size.
    ('{"dtype": "<f4", "shape": [100000000000000, 2]}',
     r'describes an array of shape \(100000000000000, 2\) that its file .* of 24 bytes does '
     r'not hold'),
])
def test_damaged_detailed_log_description_is_refused(tmp_path, description, match):
    base = str(tmp_path / 'losses')
    detailed_logs.create_or_resize_dat(base, np.float32, (3, 2)).flush()
    with open(base + '.json', 'w') as f:
        f.write(description)
    with pytest.raises(cli.UserError, match=r'losses\.json` {}.*start the detailed'.format(match)):
        detailed_logs.create_or_resize_dat(base, np.float32, (5, 2))
    assert os.path.getsize(base) == 24
    # A kill between growing the array and describing it leaves a longer file: it grows on.
    with open(base, 'ab') as f:
        f.write(bytes(8))
    with open(base + '.json', 'w') as f:
        f.write('{"dtype": "<f4", "shape": [3, 2]}')
    assert detailed_logs.create_or_resize_dat(base, np.float32, (5, 2)).shape == (5, 2)


@pytest.mark.slow
def test_sigint_subprocess_checkpoints_and_exits_zero(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'train.py')] +
        base_args(root, csv_path, image_root, 100000, '--checkpoint_frequency', '0'),
        stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if re.search(r'iter:\s*3,', line):
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 0, ''.join(lines) + rest
    last = max(i for i, _ in logged_iterations(root))
    assert last >= 3
    assert checkpoint_steps(root) == [0, last]


def test_one_writer_per_experiment_root(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 2)) == 0
    # Another process holds the root, as a running train.py does.
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time\nsys.path.insert(0, sys.argv[2])\n'
         'import checkout\ncheckout.register()\nfrom triplet_reid import experiment\n'
         'with experiment.locked_directory(sys.argv[1], "train.py"):\n'
         '    print("locked", flush=True)\n    time.sleep(120)\n', root, ROOT],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        before = sorted(os.listdir(root))
        with pytest.raises(cli.UserError, match=r'in use by another train.py \(process '
                           r'{}\)'.format(holder.pid)):
            train.main(base_args(root, csv_path, image_root, 2))
        # At once: before the data (here missing) is read.
        with pytest.raises(cli.UserError, match='in use by another train.py'):
            train.main(base_args(root, str(tmp_path / 'missing.csv'), image_root, 2))
        assert sorted(os.listdir(root)) == before
    finally:
        # SIGKILL: the operating system releases the lock, nothing stale is left.
        holder.kill()
        holder.wait()
    assert train.main(base_args(root, csv_path, image_root, 2)) == 0
    # Two runs started together on a new root: one trains, the other is refused.
    race = str(tmp_path / 'race')
    # (Enough iterations that the winner still trains when the other has imported TensorFlow.)
    runs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py')] + base_args(
        race, csv_path, image_root, 100, '--checkpoint_frequency', '50'),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(2)]
    outcomes = sorted((run.wait(timeout=120), run.stderr.read()) for run in runs)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert 'in use by another train.py' in outcomes[1][1], outcomes
    assert logged_iterations(race)[-1][0] == 100 and checkpoint_steps(race) == [0, 50, 100]
    # A root that holds only the lock file of a run that failed early is still new.
    fresh = str(tmp_path / 'fresh')
    os.makedirs(fresh)
    open(os.path.join(fresh, experiment.LOCK_FILE), 'w').close()
    assert train.main(base_args(fresh, csv_path, image_root, 2)) == 0


def test_stale_or_damaged_checkpoints_resume_from_the_newest_complete_one(tmp_path,
                                                                          tiny_dataset):
    import glob
    from triplet_reid.experiment.checkpoints import find_checkpoint, newest_checkpoint
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    args = base_args(root, csv_path, image_root, 6, '--checkpoint_frequency', '3')
    assert train.main(args) == 0
    first = os.path.getmtime(os.path.join(root, 'checkpoint-0.index'))
    for path in glob.glob(os.path.join(root, 'checkpoint-6.*')):
        os.remove(path)
    # The index still names checkpoint-6; train.py takes checkpoint-3, and
    # embed.py names it rather than pass an older network for the newest.
    assert newest_checkpoint(root).endswith('checkpoint-3')
    with pytest.raises(cli.UserError, match='pass --checkpoint checkpoint-3 to use the '
                       'newest complete one'):
        find_checkpoint(root)
    assert train.main(args) == 0
    text = open(os.path.join(root, 'train.log')).read()
    assert re.search(r'Using \S*checkpoint-3, the newest complete checkpoint: \S*checkpoint-6 '
                     r'\(the one the `checkpoint` index names\) is missing or damaged', text)
    assert [i for i, _ in logged_iterations(root)] == list(range(1, 7)) + [4, 5, 6]
    assert checkpoint_steps(root) == [0, 3, 6]
    assert os.path.getmtime(os.path.join(root, 'checkpoint-0.index')) == first
    # A damaged index file and a truncated newest checkpoint: scanned past.
    with open(os.path.join(root, 'checkpoint'), 'w') as f:
        f.write('\x00garbage{')
    data = glob.glob(os.path.join(root, 'checkpoint-6.data-*'))[0]
    os.truncate(os.path.join(root, 'checkpoint-6.index'), 10)
    assert newest_checkpoint(root).endswith('checkpoint-3')
    # A truncated data file, which restoring would fail on.
    three = glob.glob(os.path.join(root, 'checkpoint-3.data-*'))[0]
    with open(three, 'r+b') as f:
        f.truncate(1000)
    assert newest_checkpoint(root).endswith('checkpoint-0')
    found = find_checkpoint(root, 'checkpoint-0')
    assert found.path.endswith('checkpoint-0') and not found.tf1 and found.shapes
    # No complete checkpoint at all: refused, never restarted from iteration 0.
    for path in glob.glob(os.path.join(root, 'checkpoint-*.index')):
        os.truncate(path, 10)
    with pytest.raises(cli.UserError, match='holds checkpoint files but no complete '
                       'checkpoint'):
        train.main(args)
    assert os.path.getsize(data) > 0 and checkpoint_steps(root) == [0, 3, 6]


def test_refused_runs_leave_no_root_and_override_fixes_a_diverged_one(tmp_path, tiny_dataset,
                                                                      monkeypatch):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    # Refused while building: nothing written, so the corrected rerun starts afresh.
    with pytest.raises(cli.UserError, match='the net `tiny` cannot take 8x4 inputs'):
        train.main(base_args(root, csv_path, image_root, 2, '--net_input_height', '8',
                             '--net_input_width', '4'))
    with pytest.raises(cli.UserError, match='neither a Keras weights file nor a checkpoint'):
        train.main(base_args(root, csv_path, image_root, 2, '--initial_checkpoint',
                             str(tmp_path / 'nothing')))
    assert not os.path.exists(root)
    # A diverged run keeps its arguments (and checkpoint-0); --override changes them on purpose.
    # The tiny net survives the largest --learning_rate, so the loss turns NaN by hand.
    from triplet_reid import loss
    batch_hard = loss.LOSS_CHOICES['batch_hard']
    monkeypatch.setitem(loss.LOSS_CHOICES, 'batch_hard',
                        lambda *args, **kwargs: batch_hard(*args, **kwargs) * np.nan)
    with pytest.raises(training.run.TrainingDiverged,
                       match=r'What scales it .*--learning_rate \(10\.0\).* and --override'):
        train.main(base_args(root, csv_path, image_root, 4, '--learning_rate', '10'))
    with pytest.raises(training.run.TrainingDiverged):
        train.main(base_args(root, csv_path, image_root, 4, '--learning_rate', '1e-3'))
    monkeypatch.setitem(loss.LOSS_CHOICES, 'batch_hard', batch_hard)
    assert train.main(base_args(root, csv_path, image_root, 4, '--learning_rate', '1e-3',
                                '--override')) == 0
    assert json.load(open(os.path.join(root, 'args.json')))['learning_rate'] == 1e-3
    assert "Overriding the stored `learning_rate`: `10.0` becomes `0.001`" in open(
        os.path.join(root, 'train.log')).read()
    # A finished experiment continues to more iterations; the architecture cannot change.
    assert train.main(['--experiment_root', root, '--train_iterations', '6', '--override']) == 0
    assert logged_iterations(root)[-1][0] == 6 and checkpoint_steps(root)[-1] == 6
    with pytest.raises(cli.UserError, match='--override cannot change `embedding_dim`'):
        train.main(['--experiment_root', root, '--embedding_dim', '8', '--override'])


def test_the_input_size_check_reads_the_traced_shapes():
    # A trial call of a net on too small an input raises with oneDNN's kernels
    # and returns NaN with Eigen's; the check reads the traced shapes instead.
    import keras
    model, _ = build_model('tiny', 'fc1024', 16)
    assert memory.input_size_problem(model, (32, 16)) is None
    assert re.fullmatch(r'Negative dimension size caused by subtracting 2 from 1 at `\S*pool3\S*`',
                        memory.input_size_problem(model, (8, 4)))
    # A layer's own refusal is quoted without the traceback of the trace, and
    # a layer that leaves no pixels is caught although the shapes allow it.
    images = keras.Input((None, None, 3))
    cropped = keras.layers.Cropping2D(((0, 0), (2, 2)))(images)
    assert memory.input_size_problem(
        keras.Model(images, keras.layers.GlobalAveragePooling2D()(cropped)), (8, 4)) == (
        'Values in `cropping` argument should be smaller than the corresponding spatial '
        'dimension of the input. Received: inputs.shape=(1, 8, 4, 3), cropping=((0, 0), (2, 2))')
    emptied = keras.layers.Lambda(lambda x: x[:, :, :0], name='emptied')(images)
    assert re.fullmatch(r'an empty feature map of 8x0 at `\S*emptied\S*`',
                        memory.input_size_problem(
                            keras.Model(images, keras.layers.GlobalAveragePooling2D()(emptied)),
                            (8, 4)))


@pytest.mark.slow
def test_a_too_small_input_is_refused_with_eigens_kernels_too(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'train.py')] +
        base_args(root, csv_path, image_root, 2, '--net_input_height', '8',
                  '--net_input_width', '4'),
        capture_output=True, text=True, cwd=str(tmp_path),
        env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0', TF_CPP_MIN_LOG_LEVEL='3'))
    assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        'error: the net `tiny` cannot take 8x4 inputs (Negative dimension size'), done.stderr
    assert not os.path.exists(root)


def test_a_refused_override_and_killed_saves_leave_nothing_behind(tmp_path, tiny_dataset,
                                                                  monkeypatch):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 2)) == 0
    stored = open(os.path.join(root, 'args.json')).read()
    # What a run killed while saving leaves: TensorFlow's shard folder and
    # write_json's temporary file.
    os.makedirs(os.path.join(root, 'checkpoint-7_temp'))
    open(os.path.join(root, 'checkpoint-7_temp', 'part-00000-of-00001.index'), 'w').close()
    open(os.path.join(root, '.args.json.k2j4'), 'w').close()

    def out_of_memory(*args, **kwargs):
        def step(images, labels):
            raise tf.errors.ResourceExhaustedError(None, None, 'OOM when allocating tensor')
        return step, None
    monkeypatch.setattr(training.run, 'make_train_step', out_of_memory)
    # A change that fails in its first iteration is not stored, so the rerun
    # without it works.
    with pytest.raises(cli.UserError, match=r'a training batch of 12 images of 32x16 does '
                       r'not fit in memory \(OOM when allocating'):
        train.main(['--experiment_root', root, '--train_iterations', '4', '--batch_k', '3',
                    '--override'])
    assert open(os.path.join(root, 'args.json')).read() == stored
    assert sorted(os.listdir(root)) == sorted(
        ['.lock', 'args.json', 'checkpoint', 'train.log'] +
        [name for name in os.listdir(root) if name.startswith(('checkpoint-', 'events'))])
    assert not any(name.endswith('_temp') for name in os.listdir(root))
    monkeypatch.undo()
    # A checkpoint index of binary garbage is written anew.
    with open(os.path.join(root, 'checkpoint'), 'wb') as f:
        f.write(bytes(range(128, 256)))
    assert train.main(['--experiment_root', root, '--train_iterations', '3', '--override']) == 0
    assert 'model_checkpoint_path: "checkpoint-3"' in open(os.path.join(root, 'checkpoint')).read()
    assert json.load(open(os.path.join(root, 'args.json')))['train_iterations'] == 3
    # Checkpoints deleted after training: never a silent start from scratch.
    for name in os.listdir(root):
        if name.startswith('checkpoint'):
            os.remove(os.path.join(root, name))
    with pytest.raises(cli.UserError, match='has trained .* but holds no checkpoint; were '
                       'they deleted'):
        train.main(['--experiment_root', root])


@pytest.mark.parametrize('key, value', [('batch_p', 'abc'), ('batch_p', 3.5), ('batch_p', -2),
                                        ('learning_rate', 'NaN'), ('flip_augment', 'yes'),
                                        ('loss', 'batch_medium'), ('lr_decay_steps', 5),
                                        ('net_input_height', [1, 2]), ('pooling', 'median'),
                                        ('train_set', 5), ('train_set', ['a.csv', 7]),
                                        ('val_query', {'a': 1}), ('image_root', [5]),
                                        ('train_iterations', '30'), ('batch_p', '18'),
                                        ('embedding_dim', ' 1e1'), ('model_name', None),
                                        ('head_name', None), ('batch_p', None),
                                        ('jpm', -1), ('jpm', 2.0), ('patch_stride', 99),
                                        ('optimizer', 'lion')])
def test_stored_arguments_of_a_wrong_type_are_refused(tmp_path, tiny_dataset, key, value):
    from triplet_reid import embed
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 1)) == 0
    path = os.path.join(root, 'args.json')
    stored = json.load(open(path))
    stored[key] = value
    with open(path, 'w') as f:
        json.dump(stored, f)
    written = open(path).read()
    message = r'args.json` (stores `{0}` = .* (not a valid value|a number in quotes)|names {0} ' \
        r'`|stores `{0}` = null, where train.py writes a value)'.format(key)
    with pytest.raises(cli.UserError, match=message):
        train.main(['--experiment_root', root])
    assert open(path).read() == written
    if key in ('net_input_height', 'pooling', 'image_root', 'model_name', 'head_name') or \
            isinstance(value, str) and \
            value.strip()[:1].isdigit():
        with pytest.raises(cli.UserError, match=message):
            embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet'])


@pytest.mark.parametrize('extra, match', [
    (['--batch_k', '100000'], r'a batch of 4×100000 images of 32x16 pixels takes'),
    (['--crop_augment', '--pre_crop_height', '60000', '--pre_crop_width', '60000'],
     r'images of 60000x60000 pixels'),
    (['--pad_crop', '100000'], r'images of 200032x200016 pixels'),
    (['--embedding_dim', '1000000000'], r'--embedding_dim 1000000000 needs 3.05e\+04 GiB'),
    (['--net_input_height', '60000', '--net_input_width', '128'],
     r'a training batch of 16 images of 60000x128 through `tiny` computes about \d+ GiB of '
     r'feature maps, more than this machine\'s 24 GiB of memory')])
def test_sizes_that_cannot_fit_in_memory_are_refused_before_anything_is_written(
        tmp_path, tiny_dataset, extra, match, monkeypatch):
    monkeypatch.setattr(memory, 'physical_memory', lambda: 24 * 2 ** 30)
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    with pytest.raises(cli.UserError, match=match):
        train.main(base_args(root, csv_path, image_root, 2, *extra))
    assert not os.path.exists(root)


def test_eta_of_absurdly_many_iterations():
    assert training.run.format_eta(3725) == '1:02:05'
    assert training.run.format_eta(3 * 2 ** 62) == 'more than 100 years'


def test_resume_messages_name_the_real_cause(tmp_path, tiny_dataset, monkeypatch):
    csv_path, image_root = tiny_dataset
    # Relative paths, as a user in the dataset's parent folder types them.
    monkeypatch.chdir(os.path.dirname(image_root))
    relative_csv = os.path.relpath(csv_path)
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, relative_csv, 'data', 2, '--id_loss_weight', '1')) == 0
    # An architecture flag without --override: the warning does not offer it.
    assert train.main(['--experiment_root', root, '--embedding_dim', '8']) == 0
    log_text = open(os.path.join(root, 'train.log')).read()
    assert 'The provided value was `8` (the checkpoints hold that network; a new experiment ' \
        'root can change it).' in log_text
    # Fewer training identities: the identity loss's classifier, not the model.
    fewer = tmp_path / 'fewer.csv'
    fewer.write_text(''.join(line for line in open(csv_path) if not line.startswith('0008')))
    with pytest.raises(cli.UserError, match=r'learned 8 training identities for its identity '
                       r'or center loss, but `.*fewer.csv` now has 7'):
        train.main(['--experiment_root', root, '--train_set', str(fewer), '--override'])
    # From another folder the stored relative paths are named as such.
    os.makedirs(tmp_path / 'elsewhere')
    monkeypatch.chdir(tmp_path / 'elsewhere')
    with pytest.raises(cli.UserError, match=r'stores --train_set `data/train.csv`, a path '
                       r'relative to the folder train.py first ran in'):
        train.main(['--experiment_root', root])
    from triplet_reid import embed
    with pytest.raises(cli.UserError, match=r'image root `data` that `.*args.json` stores is '
                       r'not a folder from here .*relative to the folder '
                       r'train.py ran in; pass --image_root'):
        embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet'])


def test_detailed_logs_that_cannot_fit_on_the_disk_are_refused_before_anything_is_written(
        tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    with pytest.raises(cli.UserError, match=r'--detailed_logs over 1000000000000 iterations '
                       r'needs .* GiB more, but only'):
        train.main(base_args(root, csv_path, image_root, 10 ** 12, '--detailed_logs'))
    assert not os.path.exists(root)
    detailed_logs.check_space(root, 10, 16, 16, 40)


def test_the_experiment_records_name_train_py_s_flags():
    """Experiment and StepSettings hold train.py's defaults (its parser reads
    them from there), and the records of its arguments and of the args.json
    it writes are equal."""
    import dataclasses
    from triplet_reid.experiment import Experiment, StepSettings
    args = train.parser.parse_args(['--experiment_root', '/unused'])
    for record in (Experiment, StepSettings):
        for field in dataclasses.fields(record):
            if field.name != 'seed':
                assert field.default == getattr(args, field.name), field.name
    stored = json.loads(json.dumps(vars(args)))
    assert Experiment.of(stored) == Experiment.of(args) == Experiment()


@pytest.mark.parametrize('id_loss', ['cosface', 'arcface', 'circle'])
def test_margin_softmax_identity_losses_train(tmp_path, tiny_dataset, id_loss):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 30, '--id_loss_weight', '1',
                                '--id_loss', id_loss, '--id_scale', '16', '--head_name',
                                'bnneck')) == 0
    terms = [float(m.group(1)) for m in re.finditer(r'id_loss: ([\d.]+)', open(
        os.path.join(root, 'train.log')).read())]
    assert len(terms) == 30 and np.mean(terms[-5:]) < np.mean(terms[:5])
    with pytest.raises(cli.UserError, match='--id_loss arcface is the identity loss of '
                       '--id_loss_weight, which is 0'):
        train.main(base_args(str(tmp_path / 'other'), csv_path, image_root, 2,
                             '--id_loss', 'arcface'))


def test_several_training_sets_keep_their_identities_apart(tmp_path):
    # Two datasets whose identities have the same names (0001-0004) in folders of their own.
    first = make_dataset(str(tmp_path / 'market'), num_ids=4, seed=0)
    second = make_dataset(str(tmp_path / 'duke'), num_ids=4, seed=1)
    roots = [str(tmp_path / 'market'), str(tmp_path / 'duke')]
    root = str(tmp_path / 'exp')
    args = base_args(root, first, roots[0], 20, '--id_loss_weight', '1')
    args[args.index('--train_set') + 1:args.index('--image_root') + 2] = [
        first, '--train_set', second, '--image_root'] + roots
    assert train.main(args) == 0
    stored = json.load(open(os.path.join(root, 'args.json')))
    assert stored['train_set'] == [first, second] and stored['image_root'] == roots
    shapes = tf.train.load_checkpoint(os.path.join(root, 'checkpoint-20')
                                      ).get_variable_to_shape_map()
    assert [shape[-1] for name, shape in shapes.items()
            if name.startswith('classifier/_kernel/.ATTRIBUTES')] == [8]
    assert re.search(r'Training on 2 sets, .* 8 identities and 40 images in all',
                     open(os.path.join(root, 'train.log')).read())
    losses = [avg for _, avg in logged_iterations(root)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses

    # The stored lists resume; one set alone stays a plain path in args.json.
    assert train.main(['--experiment_root', root, '--train_iterations', '24',
                       '--override']) == 0
    assert checkpoint_steps(root)[-1] == 24
    assert json.load(open(os.path.join(root, 'args.json')))['train_set'] == [first, second]

    data = training.data.load_data(train.parser.parse_args(
        ['--experiment_root', str(tmp_path / 'x'), '--train_set', first, second,
         '--image_root'] + roots + ['--batch_p', '8']), chief=True)
    assert data.image_root == str(tmp_path)
    assert data.fids[0].startswith('market/train/') and data.fids[-1].startswith('duke/train/')
    assert sorted(set(data.pids)) == ['{}:{:04d}'.format(s, i) for s in (1, 2)
                                      for i in range(1, 5)]


def test_several_training_sets_refusals(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    other = make_dataset(str(tmp_path / 'other'), num_ids=4)
    root = str(tmp_path / 'exp')
    args = base_args(root, csv_path, image_root, 2)
    with pytest.raises(cli.UserError, match=r'--train_set names 2 CSV file\(s\) and '
                       r'--image_root 3 folders; give one folder'):
        train.main(args + ['--train_set', other, '--image_root', str(tmp_path / 'other'),
                           str(tmp_path)])
    with pytest.raises(cli.UserError, match=r'listed in training set 1 \(`.*`\) and in set '
                       r'2 .* it would be two people'):
        train.main(args + ['--train_set', csv_path])
    assert not os.path.exists(root)


def test_the_optimisers_are_those_the_flags_name():
    from triplet_reid.training.run import make_optimizer
    args = train.parser.parse_args(['--experiment_root', 'e', '--optimizer', 'sgd',
                                    '--momentum', '0.8', '--clip_norm', '5'])
    sgd = make_optimizer(args, 0.01)
    assert type(sgd).__name__ == 'SGD' and sgd.momentum == 0.8 and sgd.global_clipnorm == 5
    args.optimizer, args.weight_decay, args.clip_norm = 'adamw', 0.05, 0.0
    adamw = make_optimizer(args, 0.01)
    assert type(adamw).__name__ == 'AdamW' and adamw.weight_decay == 0.05
    assert adamw.global_clipnorm is None
    args.optimizer = 'adam'
    adam = make_optimizer(args, 0.01)
    assert type(adam).__name__ == 'Adam' and adam.epsilon == 1e-8


def test_sgd_with_clipping_trains_and_is_stored(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 3, '--optimizer', 'sgd',
                                '--learning_rate', '0.01', '--clip_norm', '1')) == 0
    with open(os.path.join(root, 'args.json')) as f:
        stored = json.load(f)
    assert (stored['optimizer'], stored['momentum'], stored['clip_norm']) == ('sgd', 0.9, 1.0)
    shapes = tf.train.load_checkpoint(
        os.path.join(root, 'checkpoint-3')).get_variable_to_shape_map()
    # SGD keeps one momentum slot per weight (Adam two).
    slots = [name for name in shapes if name.startswith('optimizer/_variables/')]
    weights = [name for name in shapes if name.startswith('optimizer/_trainable_variables/')]
    assert len(slots) == len(weights) > 0
