"""Keras application backbones with their own weights files, and model export."""

import functools
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid import common
from triplet_reid import embed
from triplet_reid import export
from triplet_reid.inputs.images import decode
from triplet_reid.experiment import Experiment
from triplet_reid import train
from triplet_reid.models.inference import load_embedder, load_experiment
from triplet_reid.models.build import build_model, load_body_weights
from conftest import ROOT, base_args, make_dataset, run_tflite


@pytest.mark.parametrize('name, application, preprocess', [
    ('keras_resnet50', keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
    ('keras_mobilenet_v2', keras.applications.MobileNetV2,
     keras.applications.mobilenet_v2.preprocess_input),
    ('keras_mobilenet_v2_035', functools.partial(keras.applications.MobileNetV2, alpha=0.35),
     keras.applications.mobilenet_v2.preprocess_input),
])
def test_keras_backbones_load_weights_files(tmp_path, name, application, preprocess):
    source = application(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path / 'app.weights.h5')
    source.save_weights(path)
    model, body = build_model(name, 'fc1024', 16)
    load_body_weights(name, body, path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    # Same weights and the application's own preprocessing: same pooled features.
    expected = source(preprocess(x.copy()), training=False).numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(body(x, training=False).numpy(), expected, rtol=1e-4,
                               atol=1e-4)


def test_a_weights_file_of_another_width_is_refused(tmp_path):
    path = str(tmp_path / 'app.weights.h5')
    keras.applications.MobileNetV2(include_top=False, weights=None,
                                   input_shape=(None, None, 3)).save_weights(path)
    _, body = build_model('keras_mobilenet_v2_035', 'fc1024', 16)
    with pytest.raises(cli.UserError, match='cannot load the Keras weights'):
        load_body_weights('keras_mobilenet_v2_035', body, path)


def test_imagenet_only_for_keras_backbones():
    _, body = build_model('tiny', 'direct', 8)
    with pytest.raises(cli.UserError, match='cannot download ImageNet weights'):
        load_body_weights('tiny', body, 'imagenet')
    with pytest.raises(cli.UserError, match='does not exist'):
        load_body_weights('tiny', body, '/nonexistent.weights.h5')


def test_train_with_keras_backbone_weights_file(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    source = keras.applications.MobileNetV2(include_top=False, weights=None,
                                            input_shape=(None, None, 3))
    path = str(tmp_path / 'mobilenet_v2.weights.h5')
    source.save_weights(path)
    root = str(tmp_path / 'exp')
    argv = base_args(root, csv_path, image_root, 1, '--initial_checkpoint', path)
    argv[argv.index('tiny')] = 'keras_mobilenet_v2'
    # MobileNetV2's padding needs at least 64×64 pixels.
    argv[argv.index('--net_input_height') + 1] = '64'
    argv[argv.index('--net_input_width') + 1] = '64'
    assert train.main(argv) == 0
    _, body = build_model('keras_mobilenet_v2', 'fc1024', 16)
    tf.train.Checkpoint(body=body).read(os.path.join(root, 'checkpoint-0')).expect_partial()
    for a, b in zip(body.get_layer('mobilenet_v2').get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def experiment(tmp_path_factory):
    from conftest import make_dataset
    tmp = tmp_path_factory.mktemp('export')
    image_root = str(tmp / 'data')
    csv_path = make_dataset(image_root, num_ids=4, images_per_id=3, size=(40, 20))
    root = str(tmp / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 2)) == 0
    assert embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet']) == 0
    with h5py.File(os.path.join(root, 'train_embeddings.h5'), 'r') as f:
        embeddings = f['emb'][()]
    pids, fids = common.load_dataset(csv_path, image_root)
    images = np.stack([decode(tf.io.read_file(os.path.join(image_root, f))).numpy()
                       for f in fids])
    return root, images, embeddings


def test_saved_model_gives_embed_py_embeddings(experiment):
    root, images, embeddings = experiment
    assert export.main(['--experiment_root', root, '--quiet']) == 0
    loaded = tf.saved_model.load(os.path.join(root, 'saved_model'))
    # The export shrinks with matrix products, equal to embed.py's resizing up
    # to float rounding.
    from_uint8 = loaded.signatures['serving_uint8'](images=tf.constant(images))['emb'].numpy()
    np.testing.assert_allclose(from_uint8, embeddings, rtol=1e-4, atol=1e-4)
    from_float = loaded.signatures['serving_default'](
        images=tf.constant(images, tf.float32))['emb'].numpy()
    np.testing.assert_allclose(from_float, embeddings, rtol=1e-4, atol=1e-4)
    # Any input size: the signature resizes inside, antialiased as embed.py.
    larger = np.random.default_rng(0).uniform(0, 255, (3, 70, 37, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.signatures['serving_default'](images=larger)['emb'],
                               load_embedder(root)(larger), rtol=1e-4, atol=1e-4)
    with pytest.raises(cli.UserError, match='exists already'):
        export.main(['--experiment_root', root, '--quiet'])


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime(experiment, tmp_path):
    import onnxruntime
    root, images, embeddings = experiment
    path = str(tmp_path / 'model.onnx')
    assert export.main(['--experiment_root', root, '--output', str(tmp_path / 'sm'),
                        '--onnx', path, '--quiet']) == 0
    session = onnxruntime.InferenceSession(path)
    out = session.run(None, {'images': images.astype(np.float32)})[0]
    np.testing.assert_allclose(out, embeddings, rtol=1e-4, atol=1e-4)
    larger = np.random.default_rng(0).uniform(0, 255, (3, 70, 37, 3)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {'images': larger})[0],
                               load_embedder(root)(larger), rtol=1e-4, atol=1e-4)


def test_bnneck_export_outputs_the_batch_normalised_embedding_without_the_classifier(
        tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 3, '--head_name', 'bnneck',
                                '--id_loss_weight', '1', '--pooling', 'gem')) == 0
    assert export.main(['--experiment_root', root, '--quiet']) == 0
    loaded = tf.saved_model.load(os.path.join(root, 'saved_model'))
    shapes = tf.train.load_checkpoint(os.path.join(root, 'saved_model', 'variables',
                                                   'variables')).get_variable_to_shape_map()
    assert not any('classifier' in name or shape == [16, 8] for name, shape in shapes.items())
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 16, 3)).astype(np.float32)
    exported = loaded.signatures['serving_default'](images=images)['emb'].numpy()
    np.testing.assert_allclose(exported, load_embedder(root)(images), rtol=1e-4, atol=1e-4)
    model, _, _ = load_experiment(root)
    out = model(images, training=False)
    np.testing.assert_allclose(exported, out['emb'].numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(exported, out['metric_emb'].numpy(), atol=1e-2)


def test_last_stride_one_loads_keras_weights_files(tmp_path):
    source = keras.applications.ResNet50(include_top=False, weights=None,
                                         input_shape=(None, None, 3))
    path = str(tmp_path / 'app.weights.h5')
    source.save_weights(path)
    _, body = build_model('keras_resnet50', 'bnneck', 2048, last_stride=1)
    load_body_weights('keras_resnet50', body, path)
    for a, b in zip(body.get_layer('resnet50').get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Stride 1 in the last stage: a 64×32 input ends in a 4×2 map, not 2×1.
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 32, 3)).astype(np.float32)
    fmap = body.get_layer('resnet50')(
        keras.applications.resnet50.preprocess_input(x.copy()), training=False)
    assert fmap.shape == (1, 4, 2, 2048)


def test_export_never_removes_what_it_did_not_make(experiment, tmp_path, capsys):
    root = experiment[0]
    # A folder of the old fixed temporary name, which export.py once deleted.
    foreign = tmp_path / 'sm.partial'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    output = str(tmp_path / 'sm')
    assert export.main(['--experiment_root', root, '--output', output]) == 0
    # The export says what it is doing while it traces.
    assert 'Tracing and writing the SavedModel of' in capsys.readouterr().err
    assert (foreign / 'notes.txt').read_text() == 'mine'
    assert sorted(os.listdir(tmp_path)) == ['sm', 'sm.partial']
    # An existing --onnx file is refused before anything is written, like --output.
    onnx = tmp_path / 'model.onnx'
    onnx.write_text('not mine to replace')
    with pytest.raises(cli.UserError, match='model.onnx` exists already'):
        export.main(['--experiment_root', root, '--output', str(tmp_path / 'other'),
                     '--onnx', str(onnx), '--quiet'])
    assert onnx.read_text() == 'not mine to replace' and not (tmp_path / 'other').exists()
    with pytest.raises(cli.UserError, match='does not exist or is not writeable'):
        export.main(['--experiment_root', root, '--output', str(tmp_path / 'no' / 'sm'),
                     '--quiet'])
    assert sorted(os.listdir(tmp_path)) == ['model.onnx', 'sm', 'sm.partial']
    # The SavedModel gets a folder's usual permissions, not mkdtemp's 0700.
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(output).st_mode & 0o777 == 0o777 & ~umask
    # A link to nothing is refused before the export, not replaced after it.
    os.symlink(str(tmp_path / 'nowhere'), str(tmp_path / 'dangling'))
    with pytest.raises(cli.UserError, match=r'dangling` exists already \(a link to nothing'):
        export.main(['--experiment_root', root, '--output', str(tmp_path / 'dangling'),
                     '--quiet'])


def test_tflite_export_float_and_int8(experiment, tmp_path, monkeypatch, capsys):
    from triplet_reid.inputs.images import resize
    root, pictures, _ = experiment
    batch = resize(tf.constant(pictures, tf.float32), (32, 16), antialias=True).numpy()
    expected = load_embedder(root)(batch)
    paths = {}
    for kind, extra in (('float', []), ('int8', ['--tflite_int8', '--tflite_samples', '8'])):
        paths[kind] = str(tmp_path / '{}.tflite'.format(kind))
        assert export.main(['--experiment_root', root, '--output', str(tmp_path / kind),
                            '--tflite', paths[kind], '--quiet'] + extra) == 0
    np.testing.assert_allclose(run_tflite(paths['float'], batch), expected, rtol=1e-4,
                               atol=1e-4)
    quantised = run_tflite(paths['int8'], batch)
    cosine = (quantised * expected).sum(1) / np.linalg.norm(quantised, axis=1) / \
        np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.9, cosine
    assert os.path.getsize(paths['int8']) < os.path.getsize(paths['float']) / 2
    from triplet_reid.serving import exported
    assert exported.xnnpack_problem(paths['int8'], (32, 16)) is None
    with pytest.raises(cli.UserError, match='--tflite_int8 quantises the --tflite model'):
        export.main(['--experiment_root', root, '--output', str(tmp_path / 'x'),
                     '--tflite_int8'])
    # A model XNNPACK cannot run (OSNet's int8, in TensorFlow 2.21) gets a warning
    # naming the interpreter setting that runs it.
    monkeypatch.setattr(exported, 'xnnpack_problem', lambda path, size: 'failed to prepare')
    assert export.main(['--experiment_root', root, '--output', str(tmp_path / 'again'),
                        '--tflite', str(tmp_path / 'again.tflite'), '--quiet']) == 0
    assert 'BUILTIN_WITHOUT_DEFAULT_DELEGATES' in capsys.readouterr().err


def test_int8_calibration_leaves_damaged_images_out(tiny_dataset):
    from triplet_reid.serving import exported
    csv_path, image_root = tiny_dataset
    first = open(csv_path).readline().strip().split(',')[1]
    with open(os.path.join(image_root, first), 'wb') as f:
        f.write(b'not an image')
    train_args = {'train_set': csv_path, 'image_root': image_root, 'net_input_height': 32,
                  'net_input_width': 16, 'pre_crop_height': 32, 'pre_crop_width': 16,
                  'antialias': True, 'accurate_jpeg': True}
    assert exported.calibration_images(train_args, 5).shape == (5, 32, 16, 3)
    with open(csv_path, 'w') as f:
        f.write('0001,{}\n'.format(first))
    with pytest.raises(cli.UserError, match='none of the images of .* can be decoded to '
                       'calibrate --tflite_int8'):
        exported.calibration_images(train_args, 5)


def test_int8_calibration_takes_the_images_of_several_training_sets_in_turn(tmp_path):
    from triplet_reid.serving import exported
    from triplet_reid.inputs.images import Preprocessing
    sets = [make_dataset(str(tmp_path / name), num_ids=2, images_per_id=3, seed=seed)
            for seed, name in enumerate(('a', 'b'))]
    roots = [str(tmp_path / 'a'), str(tmp_path / 'b')]
    train_args = {'train_set': sets, 'image_root': roots, 'net_input_height': 32,
                  'net_input_width': 16, 'pre_crop_height': 32, 'pre_crop_width': 16,
                  'antialias': True, 'accurate_jpeg': True}
    calibration = exported.calibration_images(train_args, 4)
    preprocessing = Preprocessing.of(Experiment.of(train_args))
    expected = [preprocessing.load(open(csv).readlines()[row].strip().split(',')[1], root)
                for row in (0, 1) for csv, root in zip(sets, roots)]
    np.testing.assert_array_equal(calibration, np.stack(expected))


def test_tflite_models_are_run_with_litert_not_the_deprecated_interpreter():
    # TensorFlow warns that tf.lite.Interpreter is deprecated and to be
    # deleted; the product, its benchmarks and the docs use LiteRT's.
    import glob
    found = []
    for path in glob.glob(os.path.join(ROOT, '**', '*.*'), recursive=True):
        if path.endswith(('.py', '.md')) and not os.path.relpath(path, ROOT).startswith(
                ('.venv', 'tests')):
            with open(path, encoding='utf-8') as f:
                if 'tf.lite.Interpreter' in f.read():
                    found.append(os.path.relpath(path, ROOT))
    assert not found
