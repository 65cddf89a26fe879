"""bench/tfjs_weights.py on TF.js exports that the tests write, and the
`keras_mobilenet_v2_035` net loading what it makes."""

import json
import os

import keras
import numpy as np
import pytest

from bench import tfjs_weights
from triplet_reid.models.build import build_model, load_body_weights


def random_application(alpha, seed=0):
    """MobileNetV2 without its top, every weight random (moving variances positive)."""
    application = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=alpha,
                                                 input_shape=(None, None, 3))
    rng = np.random.default_rng(seed)
    application.set_weights([
        rng.uniform(0.5, 2.0, w.shape).astype(np.float32) if 'variance' in v.path else
        rng.normal(0, 0.1, w.shape).astype(np.float32)
        for v, w in zip(application.weights, application.get_weights())])
    return application


def write_export(folder, application, extra=True):
    """A TF.js layers export as Teachable Machine writes one: Keras 2's names
    (`depthwise_kernel`), a classifier's tensors after the body's, and the
    weights split over two shards."""
    specs, data = [], []
    tensors = [(v.path.replace('depthwise/kernel', 'depthwise/depthwise_kernel'), np.asarray(v))
               for v in application.weights]
    if extra:
        tensors += [('dense_Dense1/kernel', np.ones((1280, 2), np.float32)),
                    ('dense_Dense1/bias', np.zeros(2, np.float32))]
    for name, value in tensors:
        specs.append({'name': name, 'shape': list(value.shape), 'dtype': 'float32'})
        data.append(value.astype('<f4').tobytes())
    blob = b''.join(data)
    half = len(blob) // 2 + 3  # A shard boundary inside a tensor.
    for name, part in (('group1-shard1of2.bin', blob[:half]),
                       ('group1-shard2of2.bin', blob[half:])):
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(part)
    model_json = os.path.join(folder, 'model.json')
    with open(model_json, 'w') as f:
        json.dump({'modelTopology': {'class_name': 'Sequential'}, 'weightsManifest': [{
            'paths': ['group1-shard1of2.bin', 'group1-shard2of2.bin'], 'weights': specs}]}, f)
    return model_json


def test_export_becomes_the_body_of_keras_mobilenet_v2_035(tmp_path, capsys):
    application = random_application(0.35)
    model_json = write_export(str(tmp_path), application)
    output = str(tmp_path / 'body.weights.h5')
    tfjs_weights.main(['--model_json', model_json, '--output', output])
    printed = capsys.readouterr().out
    assert 'width 0.35' in printed and '260 weights (2 tensors of other layers' in printed
    model, body = build_model('keras_mobilenet_v2_035', 'fc1024', 16)
    load_body_weights('keras_mobilenet_v2_035', body, output)
    loaded = body.get_layer('mobilenet_v2').get_weights()
    for expected, got in zip(application.get_weights(), loaded):
        np.testing.assert_array_equal(got, expected)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(body(images, training=False),
                               keras.ops.mean(application(images / 127.5 - 1.0), axis=(1, 2)),
                               rtol=1e-4, atol=1e-5)
    assert not [name for name in os.listdir(tmp_path) if 'partial' in name]


def test_width_is_found_from_the_shapes_and_checked(tmp_path, capsys):
    model_json = write_export(str(tmp_path), random_application(0.5), extra=False)
    output = str(tmp_path / 'b.weights.h5')
    tfjs_weights.main(['--model_json', model_json, '--output', output])
    assert 'width 0.5 ' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='has the shape .* the network needs'):
        tfjs_weights.main(['--model_json', model_json, '--output', output, '--alpha', '0.35'])


def test_damaged_exports_give_one_message_and_no_file(tmp_path):
    model_json = write_export(str(tmp_path), random_application(0.35))
    output = tmp_path / 'b.weights.h5'
    shard = tmp_path / 'group1-shard2of2.bin'
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(SystemExit, match='truncated'):
        tfjs_weights.main(['--model_json', model_json, '--output', str(output)])
    shard.unlink()
    with pytest.raises(SystemExit, match='cannot read the weights shard'):
        tfjs_weights.main(['--model_json', model_json, '--output', str(output)])
    (tmp_path / 'model.json').write_bytes(b'\x89PNG garbage')
    with pytest.raises(SystemExit, match='not a TF.js model.json'):
        tfjs_weights.main(['--model_json', model_json, '--output', str(output)])
    with pytest.raises(SystemExit):
        tfjs_weights.main(['--model_json', model_json, '--output', str(tmp_path / 'b.h5')])
    assert not output.exists()


def test_quantised_and_half_precision_tensors(tmp_path):
    """uint8 values map through scale and minimum; float16 is read as it is."""
    specs = [{'name': 'a/kernel', 'shape': [2, 2], 'dtype': 'float32',
              'quantization': {'dtype': 'uint8', 'scale': 0.5, 'min': -1.0}},
             {'name': 'b/bias', 'shape': [3], 'dtype': 'float32',
              'quantization': {'dtype': 'float16'}}]
    (tmp_path / 'w.bin').write_bytes(bytes([0, 1, 2, 255]) +
                                     np.array([1.5, -2, 0.25], '<f2').tobytes())
    (tmp_path / 'model.json').write_text(json.dumps(
        {'weightsManifest': [{'paths': ['w.bin'], 'weights': specs}]}))
    tensors = tfjs_weights.read_tfjs_weights(str(tmp_path / 'model.json'))
    np.testing.assert_array_equal(tensors['a/kernel'], [[-1.0, -0.5], [0.0, 126.5]])
    np.testing.assert_array_equal(tensors['b/bias'], [1.5, -2, 0.25])


def test_the_weights_file_gets_the_permissions_open_would_give(tmp_path):
    """mkstemp makes its file private; the converted weights are for other users too."""
    model_json = write_export(str(tmp_path), random_application(0.35))
    output = tmp_path / 'b.weights.h5'
    umask = os.umask(0o022)
    try:
        tfjs_weights.main(['--model_json', model_json, '--output', str(output)])
    finally:
        os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o644
