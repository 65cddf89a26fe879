"""TF1/slim checkpoints load into the Keras nets and give the same embeddings."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid import common
from triplet_reid import embed
from triplet_reid.models import tf1_checkpoint
from triplet_reid import train
from triplet_reid.inputs.images import fid_to_image
from triplet_reid.models.build import build_model, load_body_weights
from slim_reference import build_and_save

SLIM_NETS = ['resnet_v1_50', 'resnet_v1_101', 'resnet_v1_152', 'mobilenet_v1_1_224']


def images(n=3, size=(64, 32), seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n,) + size + (3,)).astype(np.float32)


def assert_close(ours, reference):
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() <= 1e-4 * scale, (
        np.abs(ours - reference).max(), scale)


@pytest.mark.slow
@pytest.mark.parametrize('net', SLIM_NETS)
def test_full_checkpoint_equivalence(tmp_path, net):
    x = images()
    path = str(tmp_path / 'model.ckpt')
    reference = build_and_save(net, path, x)
    model, body = build_model(net, 'fc1024', 16)
    step = tf1_checkpoint.restore_experiment(path, model, body)
    assert step == 1234
    assert_close(model(x, training=False)['emb'].numpy(), reference)


@pytest.mark.slow
def test_initial_checkpoint_loads_body_only(tmp_path):
    x = images()
    path = str(tmp_path / 'resnet_v1_50.ckpt')
    reference = build_and_save('resnet_v1_50', path, x, with_head=False)
    model, body = build_model('resnet_v1_50', 'fc1024', 16)
    head_before = model.get_layer('emb').kernel.numpy().copy()
    load_body_weights('resnet_v1_50', body, path)
    assert_close(body(x, training=False).numpy(), reference)
    np.testing.assert_array_equal(model.get_layer('emb').kernel.numpy(), head_before)


@pytest.mark.slow
def test_wrong_net_is_reported_by_name(tmp_path):
    path = str(tmp_path / 'm.ckpt')
    build_and_save('mobilenet_v1_1_224', path, images(1), with_head=False)
    _, body = build_model('resnet_v1_50', 'fc1024', 16)
    with pytest.raises(cli.UserError, match=r'variables are missing from the checkpoint, '
                       r'e\.g\. resnet_v1_50/'):
        load_body_weights('resnet_v1_50', body, path)
    model, body = build_model('mobilenet_v1_1_224', 'fc1024', 32)
    with pytest.raises(cli.UserError, match=r'no place for|other shapes|missing'):
        tf1_checkpoint.restore_experiment(path, model, body)


@pytest.fixture(scope='module')
def original_experiment(tmp_path_factory):
    """A folder as the original train.py leaves it: args.json and a TF1 checkpoint
    of the training graph (Adam slots, global_step), on a tiny image set."""
    from conftest import make_dataset
    tmp = tmp_path_factory.mktemp('original')
    image_root = str(tmp / 'data')
    csv_path = make_dataset(image_root, num_ids=4, images_per_id=4, size=(64, 32))
    root = tmp / 'exp'
    root.mkdir()
    pids, fids = common.load_dataset(csv_path, image_root)
    x = np.stack([fid_to_image(f, image_root, (64, 32)).numpy() for f in fids])
    build_and_save('mobilenet_v1_1_224', str(root / 'checkpoint-1235'), x, train_graph=True)
    with open(root / 'checkpoint', 'w') as f:
        f.write('model_checkpoint_path: "checkpoint-1235"\n'
                'all_model_checkpoint_paths: "checkpoint-1235"\n')
    args = dict(vars(train.parser.parse_args(['--experiment_root', str(root)])),
                train_set=csv_path, image_root=image_root, model_name='mobilenet_v1_1_224',
                head_name='fc1024', embedding_dim=16, net_input_height=64, net_input_width=32,
                batch_p=2, batch_k=2, loading_threads=2, train_iterations=1237,
                checkpoint_frequency=0, resume=False)
    del args['seed']  # The original had no --seed.
    with open(root / 'args.json', 'w') as f:
        json.dump(args, f)
    return str(root), csv_path, image_root, x


def reference_embeddings(root, x):
    """The embeddings the TF1 graph gives for the saved (post-step) weights."""
    from slim_reference import fc1024_head, mobilenet_body
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, (None,) + x.shape[1:])
        out = fc1024_head(mobilenet_body(inputs), 16)
        tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.Session() as session:
            tf.compat.v1.train.Saver(var_list=tf.compat.v1.global_variables()).restore(
                session, os.path.join(root, 'checkpoint-1235'))
            return session.run(out, {inputs: x})


@pytest.mark.slow
def test_embed_py_uses_original_experiment(original_experiment):
    root, csv_path, _, x = original_experiment
    assert embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet']) == 0
    import h5py
    with h5py.File(os.path.join(root, 'train_embeddings.h5'), 'r') as f:
        ours = f['emb'][()]
    assert_close(ours, reference_embeddings(root, x))


@pytest.mark.slow
def test_train_py_continues_original_experiment(original_experiment, tmp_path):
    source, _, _, _ = original_experiment
    root = str(tmp_path / 'continued')
    shutil.copytree(source, root)
    assert train.main(['--experiment_root', root]) == 0
    with open(os.path.join(root, 'train.log')) as f:
        log = f.read()
    assert 'Continuing the TF1 experiment' in log
    # The reference graph ran one Adam step after setting global_step to 1234.
    assert 'Starting training from iteration 1235;' in log
    assert 'iter:  1236' in log and 'iter:  1237' in log
    assert os.path.exists(os.path.join(root, 'checkpoint-1237.index'))
    stored = json.load(open(os.path.join(root, 'args.json')))
    assert isinstance(stored['seed'], int)


@pytest.mark.slow
def test_adam_slots_are_restored(original_experiment):
    import keras
    root, _, _, _ = original_experiment
    model, body = build_model('mobilenet_v1_1_224', 'fc1024', 16)
    optimizer = keras.optimizers.Adam(epsilon=1e-8)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    tf1_checkpoint.restore_experiment(os.path.join(root, 'checkpoint-1235'), model, body,
                                      optimizer, step)
    reader = tf.train.load_checkpoint(os.path.join(root, 'checkpoint-1235'))
    emb = model.get_layer('emb').kernel
    index = optimizer._get_variable_index(emb)
    np.testing.assert_array_equal(optimizer._momentums[index].numpy(),
                                  reader.get_tensor('emb/weights/Adam'))
    np.testing.assert_array_equal(optimizer._velocities[index].numpy(),
                                  reader.get_tensor('emb/weights/Adam_1'))
    assert int(step.numpy()) == int(optimizer.iterations.numpy()) == reader.get_tensor(
        'global_step')
