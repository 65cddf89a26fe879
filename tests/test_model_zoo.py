"""torchreid's trained OSNet as an experiment: the exact padding, the head,
the PyTorch weights reader that runs nothing, and the importer. The weight
files are written here without PyTorch, by a writer of PyTorch's two
formats over stand-in `torch` modules; the real model-zoo files are
compared with torchreid itself by `bench/torchreid.py`."""

import collections
import io
import json
import os
import pickle
import pickletools
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid import experiment
from triplet_reid import import_model
from triplet_reid.models import inference, zoo, torch_weights
from conftest import ROOT, write_image
from torch_files import View, randomise_batch_norms, write_pth
from triplet_reid.models.build import build_model


# The weights reader.
###

@pytest.mark.parametrize('zip_format', [False, True])
def test_state_dicts_read_back_in_both_formats(tmp_path, zip_format):
    rng = np.random.default_rng(0)
    arrays = {'module.w': rng.normal(size=(3, 5)).astype(np.float32),
              'module.conv': rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
              'module.half': np.array([1.5, -2.0], np.float16),
              'module.count': np.array(7, np.int64),
              'module.bf16': (np.array([1.5, -0.25], np.float32).view(np.uint32) >> 16).astype(
                  np.uint16)}
    path = write_pth(tmp_path / 'w.pth', {'state_dict': arrays, 'epoch': 3, 'rank1': 0.5},
                     zip_format)
    state = torch_weights.read_state_dict(path)
    assert list(state) == ['w', 'conv', 'half', 'count', 'bf16']
    for key in ('w', 'conv', 'half', 'count'):
        np.testing.assert_array_equal(state[key], arrays['module.' + key])
        assert state[key].dtype == arrays['module.' + key].dtype
    np.testing.assert_array_equal(state['bf16'], np.array([1.5, -0.25], np.float32))


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, ('touch ' + self.marker,)


@pytest.mark.parametrize('zip_format', [False, True])
def test_a_pickle_that_calls_a_function_is_refused_without_running_it(tmp_path, zip_format):
    marker = str(tmp_path / 'ran')
    path = write_pth(tmp_path / 'evil.pth', {'weight': np.ones(2, np.float32),
                                             'payload': Exploit(marker)}, zip_format)
    with pytest.raises(cli.UserError, match=r'refusing `.*evil\.pth`: it asks to call '
                       r'`posix\.system`'):
        torch_weights.read_state_dict(path)
    assert not os.path.exists(marker)
    # An unpickler that resolves what the pickle names, as torch.load's does, runs it.
    class Trusting(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

        def find_class(self, module, name):
            return (lambda *args: None) if module.startswith('torch') else \
                super().find_class(module, name)
    with open(path, 'rb') as f:
        if zip_format:
            f = io.BytesIO(zipfile.ZipFile(f).read('archive/data.pkl'))
        else:
            for _ in range(3):
                pickle.load(f)
        Trusting(f).load()
    assert os.path.exists(marker)


def legacy_pickles(path):
    """The five pickles of a legacy-format file, as bytes, and the storages' bytes after them."""
    with open(path, 'rb') as f:
        data = f.read()
    pickles, f = [], io.BytesIO(data)
    for _ in range(5):
        start = f.tell()
        for _ in pickletools.genops(f):  # Read to its STOP, running nothing.
            pass
        pickles.append(data[start:f.tell()])
    return pickles, data[f.tell():]


@pytest.mark.parametrize('which', [0, 1, 2, 4])
def test_a_hostile_header_pickle_of_the_legacy_format_is_never_run(tmp_path, which):
    # The magic number, the protocol version, the system's description and
    # the list of storage keys hold plain values only: each is read with an
    # unpickler that resolves no name at all.
    marker = str(tmp_path / 'ran')
    valid = write_pth(tmp_path / 'w.pth', {'weight': np.ones(2, np.float32)})
    pickles, storages = legacy_pickles(valid)
    pickles[which] = pickle.dumps(Exploit(marker), protocol=2)
    path = tmp_path / 'evil.pth'
    path.write_bytes(b''.join(pickles) + storages)
    with pytest.raises(cli.UserError, match=r'refusing `.*evil\.pth`: it asks to call '
                       r'`posix\.system` where only plain values belong'):
        torch_weights.read_state_dict(str(path))
    assert not os.path.exists(marker)
    # A plain unpickler, as read the first two before, runs the same pickle.
    pickle.loads(pickles[which])
    assert os.path.exists(marker)


def test_a_zip_bomb_storage_is_read_only_as_far_as_its_tensor_needs(tmp_path):
    # A 10-value storage whose member inflates to 64 MiB of zeros: the reader
    # takes the 40 bytes the tensor needs, never the member whole.
    path = write_pth(tmp_path / 'w.pth', {'weight': np.arange(10, dtype=np.float32)},
                     zip_format=True)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members['archive/data/0'] += bytes(64 << 20)
    bomb = str(tmp_path / 'bomb.pth')
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert os.path.getsize(bomb) < 1 << 20
    read = []
    original = zipfile.ZipExtFile.read

    def counting(self, n=-1):
        data = original(self, n)
        read.append(len(data))
        return data
    zipfile.ZipExtFile.read = counting
    try:
        state = torch_weights.read_state_dict(bomb)
    finally:
        zipfile.ZipExtFile.read = original
    np.testing.assert_array_equal(state['weight'], np.arange(10, dtype=np.float32))
    assert max(read) < 1 << 20, read


def test_claims_beyond_the_data_are_refused_before_they_are_believed(tmp_path):
    # A storage that claims more values than its member holds, a pickle
    # that claims gigabytes, a view of more values than its storage (strides
    # of 0), and a storage of a negative count.
    path = write_pth(tmp_path / 'w.pth', {'weight': np.arange(10, dtype=np.float32)},
                     zip_format=True)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}

    def rewritten(name, **changes):
        out = str(tmp_path / name)
        with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as archive:
            for member, data in dict(members, **changes).items():
                archive.writestr(member, data)
        return out

    short = rewritten('short.pth', **{'archive/data/0': members['archive/data/0'][:20]})
    with pytest.raises(cli.UserError, match=r'storage 0 holds 20 bytes, not 40'):
        torch_weights.read_state_dict(short)
    big = rewritten('big.pth', **{'archive/data.pkl': members['archive/data.pkl'] +
                                  bytes(torch_weights.MAX_PICKLE_BYTES)})
    with pytest.raises(cli.UserError, match=r'data\.pkl` claims \d+ bytes, more than the '
                                            r'pickle of any state dict'):
        torch_weights.read_state_dict(big)
    ten = np.arange(10, dtype=np.float32)
    wide = 'claims more values than its storage'
    for view, in_zip, in_legacy in [
            (View(ten, (100000, 100000), (0, 0)), wide, wide),
            (View(ten, (10,), (1,), numel=-1), 'storage 0 claims -1 values', 'claims -1'),
            (View(ten, (10,), (1,), numel=10 ** 12), 'storage 0 holds 40 bytes, not 4000000000000',
             'storage 0 has 10 values, not 1000000000000')]:
        with pytest.raises(cli.UserError, match=in_zip):
            torch_weights.read_state_dict(write_pth(tmp_path / 'view.pth', {'weight': view},
                                                    zip_format=True))
        with pytest.raises(cli.UserError, match=in_legacy):
            torch_weights.read_state_dict(write_pth(tmp_path / 'view.pth', {'weight': view}))


def test_a_weights_path_that_is_no_regular_file_is_refused(tmp_path):
    with pytest.raises(cli.UserError, match=r'`/dev/zero` is not a regular file'):
        torch_weights.read_state_dict('/dev/zero')
    with pytest.raises(cli.UserError, match=r'is not a regular file'):
        torch_weights.read_state_dict(str(tmp_path))


def test_damaged_and_foreign_files_get_one_message(tmp_path):
    path = write_pth(tmp_path / 'w.pth', {'a': np.arange(1000, dtype=np.float32)})
    data = open(path, 'rb').read()
    for name, content in [('empty.pth', b''), ('half.pth', data[:len(data) // 2]),
                          ('header.pth', data[:40]), ('tail.pth', data[:-8]),
                          ('noise.pth', bytes(range(256)) * 8),
                          ('text.pth', b'not a model\n')]:
        damaged = tmp_path / name
        damaged.write_bytes(content)
        with pytest.raises(cli.UserError, match='is not a readable PyTorch weights file'):
            torch_weights.read_state_dict(str(damaged))
    archive = str(tmp_path / 'other.zip')
    with zipfile.ZipFile(archive, 'w') as z:
        z.writestr('readme.txt', 'hello')
    with pytest.raises(cli.UserError, match='no single `data.pkl`'):
        torch_weights.read_state_dict(archive)
    with pytest.raises(cli.UserError, match='holds no state dict'):
        torch_weights.read_state_dict(write_pth(tmp_path / 'list.pth', {'a': 'b'}))
    with pytest.raises(cli.UserError, match='cannot read .*No such file'):
        torch_weights.read_state_dict(str(tmp_path / 'missing.pth'))


# OSNet as torchreid computes it, and its head.
###

def numpy_stem(body, image, conv='conv1_conv', bn='conv1_bn'):
    """torchreid's stem (OSNet's and ResNet's) on one image (H, W, 3) in
    [0, 255] from the Keras layers' weights: (x / 255 - mean) / std, a 7×7
    convolution at stride 2 padded by 3 zeros on every side, batch norm,
    ReLU, and a 3×3 max-pool at stride 2 padded by 1 (-inf) on every side."""
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    x = np.pad((image - mean) / std, ((3, 3), (3, 3), (0, 0)))
    kernel = body.get_layer(conv).get_weights()[0]
    h, w = (image.shape[0] - 1) // 2 + 1, (image.shape[1] - 1) // 2 + 1
    conv = np.array([[np.tensordot(x[2 * i:2 * i + 7, 2 * j:2 * j + 7], kernel, 3)
                      for j in range(w)] for i in range(h)])
    gamma, beta, mean, var = body.get_layer(bn).get_weights()
    x = np.pad(np.maximum(gamma * (conv - mean) / np.sqrt(var + 1e-5) + beta, 0),
               ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return np.array([[x[2 * i:2 * i + 3, 2 * j:2 * j + 3].max((0, 1)) for j in range(w)]
                     for i in range(h)])


@pytest.mark.parametrize('size', [(16, 8), (15, 9)])
def test_osnet_pads_its_stem_as_torchreid(size):
    model, body = build_model('osnet_x0_25', 'fc_bn_relu', 512)
    randomise_batch_norms(body, np.random.default_rng(1))
    stem = keras.Model(body.input, body.get_layer('pool1').output)
    image = np.random.default_rng(0).uniform(0, 255, size + (3,))
    np.testing.assert_allclose(stem(image[None].astype(np.float32))[0], numpy_stem(body, image),
                               rtol=1e-4, atol=1e-4)
    # Keras' 'same' padding, of experiments before --net_padding, shifts it on even sizes.
    legacy, legacy_body = build_model('osnet_x0_25', 'fc_bn_relu', 512, padding='keras')
    legacy_body.set_weights(body.get_weights())
    shifted = keras.Model(legacy_body.input, legacy_body.get_layer('pool1').output)(
        image[None].astype(np.float32))[0]
    assert not any('pad' in layer.name for layer in legacy_body.layers)
    if size[0] % 2 == 0:
        assert np.abs(shifted - numpy_stem(body, image)).max() > 0.1


def test_old_experiments_keep_keras_padding_and_new_ones_store_torch(tmp_path):
    root = tmp_path / 'old'
    root.mkdir()
    (root / 'args.json').write_text(json.dumps({'model_name': 'osnet_x0_25'}))
    assert experiment.read_args(str(root))['net_padding'] == 'keras'
    (root / 'args.json').write_text(json.dumps({'model_name': 'osnet', 'net_padding': 'x'}))
    with pytest.raises(cli.UserError, match='names net_padding `x`, which does not exist'):
        inference.load_experiment(str(root))
    (root / 'args.json').write_text(json.dumps({'model_name': 'osnet', 'last_stride': 3}))
    with pytest.raises(cli.UserError, match='names last_stride `3`, which does not exist; '
                                            'choose one of 1, 2'):
        experiment.read_args(str(root))


def test_the_torchreid_head_is_dense_batch_norm_relu():
    model, _ = build_model('tiny', 'fc_bn_relu', 6)
    rng = np.random.default_rng(0)
    randomise_batch_norms(model, rng)
    images = rng.uniform(0, 255, (3, 32, 16, 3)).astype(np.float32)
    features = model.get_layer('tiny')(images).numpy()
    kernel, bias = model.get_layer('fc').get_weights()
    gamma, beta, mean, var = model.get_layer('fc_bn').get_weights()
    expected = np.maximum(gamma * (features @ kernel + bias - mean) / np.sqrt(var + 1e-5) + beta,
                          0)
    out = model(images, training=False)
    np.testing.assert_allclose(out['emb'], expected, rtol=1e-4, atol=1e-5)
    assert out['emb'].dtype == tf.float32 and model.get_layer('emb').name == 'emb'


# The importer.
###

def torchreid_state(model, body, classes=5):
    """What torchreid's OSNet saves, from a Keras OSNet (the inverse of zoo.assign)."""
    layer_of = zoo.resnet_layers(body) if body.name == 'torchreid_resnet50' else \
        zoo.module_layers(zoo.VARIANT_OF[body.name])
    module_of = {layer: module for module, layer in layer_of.items()}
    state = collections.OrderedDict()
    for layer in body.layers + model.layers:
        if not layer.weights or layer is body:
            continue
        module, weights = module_of[layer.name], layer.get_weights()
        kind = type(layer).__name__
        if 'BatchNormalization' in kind:
            for part, array in zip(('weight', 'bias', 'running_mean', 'running_var'), weights):
                state[module + '.' + part] = array
            state[module + '.num_batches_tracked'] = np.array(100, np.int64)
            continue
        kernel = weights[0]
        state[module + '.weight'] = (kernel.transpose(2, 3, 0, 1) if kind == 'DepthwiseConv2D'
                                     else kernel if kernel.ndim == 1
                                     else kernel.T if kernel.ndim == 2
                                     else kernel.transpose(3, 2, 0, 1))
        if len(weights) > 1:
            state[module + '.bias'] = weights[1]
    state['classifier.weight'] = np.zeros((classes, model.output['emb'].shape[-1]), np.float32)
    state['classifier.bias'] = np.zeros(classes, np.float32)
    return state


@pytest.fixture(scope='module')
def trained():
    """A Keras OSNet x0.25 with torchreid's head and random weights, and its
    torchreid state dict."""
    model, body = build_model('osnet_x0_25', 'fc_bn_relu', 512)
    rng = np.random.default_rng(3)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    randomise_batch_norms(model, rng)
    return model, torchreid_state(model, body)


def test_the_state_dict_has_torchreid_s_names(trained):
    # The 567 keys of torchreid's osnet_x0_25_market1501.pth, a few by name.
    _, state = trained
    assert len(state) == 567
    for key in ('conv1.conv.weight', 'conv2.0.conv2d.3.conv2.weight', 'conv2.0.downsample.bn.bias',
                'conv3.2.0.bn.running_var', 'conv4.1.gate.fc2.bias', 'conv5.bn.num_batches_tracked',
                'fc.0.bias', 'fc.1.running_mean', 'conv2.1.conv2a.conv1.weight'):
        assert key in state, key
    assert state['conv2.0.conv2a.conv2.weight'].shape == (16, 1, 3, 3)
    assert state['conv1.conv.weight'].shape == (16, 3, 7, 7)
    assert state['fc.0.weight'].shape == (512, 128)


@pytest.mark.parametrize('name', ['osnet', 'osnet_x0_75', 'osnet_x0_5', 'osnet_ain',
                                  'osnet_ain_x0_75', 'osnet_ain_x0_5', 'osnet_ain_x0_25',
                                  'osnet_ibn'])
def test_every_width_and_variant_maps_and_is_recognised(name):
    model, body = build_model(name, 'fc_bn_relu', 512)
    state = torchreid_state(model, body)
    assert zoo.choose_net(state, 'w.pth') == (name, 512)
    # The names torchreid's osnet_ain.py and osnet.py (IN=True) give them.
    if name.startswith('osnet_ain'):
        assert {'conv2.0.conv2.3.layers.3.bn.running_var', 'conv2.0.IN.weight',
                'pool3.0.conv.weight', 'conv4.1.conv3.bn.bias'} <= set(state)
        assert 'conv2.0.conv3.bn.weight' not in state and 'conv3.0.IN.bias' not in state
    if name in ('osnet_ain', 'osnet_ibn'):
        assert 'conv1.bn.running_mean' not in state and 'conv1.bn.weight' in state
    if name == 'osnet_ibn':
        assert {'conv2.1.IN.bias', 'conv2.0.conv2d.3.conv2.weight'} <= set(state)
        assert 'conv3.0.IN.weight' not in state
    fresh, fresh_body = build_model(name, 'fc_bn_relu', 512)
    zoo.assign(fresh, fresh_body, state, 'w.pth')
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('zip_format', [False, True])
def test_an_imported_model_embeds_as_the_source(tmp_path, trained, zip_format, capsys):
    model, state = trained
    weights = write_pth(tmp_path / 'osnet.pth', {'module.' + k: v for k, v in state.items()}
                        if zip_format else state, zip_format)
    root = str(tmp_path / 'imported')
    assert import_model.main(['--weights', weights, '--experiment_root', root]) == 0
    assert 'osnet_x0_25 + fc_bn_relu, 512-d embeddings at 256x128; its classifier of 5 training ' \
        'identities is left out' in capsys.readouterr().out
    from triplet_reid.models.inference import load_embedder
    images = np.random.default_rng(0).uniform(0, 255, (2, 256, 128, 3)).astype(np.float32)
    # The embedder runs as a graph, the source eagerly: kernels may sum in another order, so
    # the tolerance scales with the embeddings' size (here in the hundreds), not per element.
    expected = model(images, training=False)['emb'].numpy()
    np.testing.assert_allclose(load_embedder(root)(images), expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    stored = json.load(open(os.path.join(root, 'args.json')))
    assert stored['net_padding'] == 'torch' and stored['imported_classes'] == 5
    assert stored['imported_sha256'] == zoo.sha256(weights)


def test_bad_weight_files_are_refused_by_name_and_write_nothing(tmp_path, trained):
    _, state = trained

    def refused(content, match, **kwargs):
        path = write_pth(tmp_path / 'w.pth', content)
        root = tmp_path / 'exp'
        with pytest.raises(cli.UserError, match=match):
            zoo.import_torchreid(path, str(root), **kwargs)
        assert sorted(os.listdir(tmp_path)) == ['w.pth']

    refused(state, r'holds osnet_x0_25 \(a stem of 16 channels\), not osnet_x0_5',
            model_name='osnet_x0_5')
    wrong = dict(state, **{'conv2.0.conv1.conv.weight': np.zeros((16, 8, 1, 1), np.float32)})
    refused(wrong, r'holds `conv2\.0\.conv1\.conv\.weight` of shape \(16, 8, 1, 1\), but '
                   r'osnet_x0_25 takes \(16, 16, 1, 1\)')
    refused(dict(state, **{'fc.1.running_mean': np.zeros(256, np.float32)}),
            r'holds `fc\.1\.running_mean` of shape \(256,\), but osnet_x0_25 takes \(512,\)')
    refused({k: v for k, v in state.items() if not k.startswith('conv4.1.gate.fc2')},
            r'lacks the weights of `conv4\.1\.gate\.fc2`')
    refused({k: v for k, v in state.items() if k != 'conv3.0.conv1.bn.running_var'},
            r'w\.pth` lacks `conv3\.0\.conv1\.bn\.running_var`\.$')
    refused(dict(state, **{'conv2.0.IN.weight': np.ones(64, np.float32)}),
            r'is not a torchreid OSNet state dict: .*osnet_ibn \(64\)')
    refused(dict(state, **{'conv3.0.IN.weight': np.ones(64, np.float32)}),
            r'holds `conv3\.0\.IN\.weight`, which osnet_x0_25 has no place for')
    refused({'layer1.0.conv1.weight': np.ones((64, 64, 3, 3), np.float32)},
            r'is not a torchreid OSNet state dict: it has no `conv1\.conv\.weight`')
    refused({k: v for k, v in state.items() if not k.startswith('fc.')},
            r'has no embedding layer `fc\.0\.weight`')
    # Values no trained network holds, which embed.py would not notice later.
    for key, value, match in [
            ('conv2.0.conv1.conv.weight', np.nan, r'holds 1 NaN or infinite values in '
                                                 r'`conv2\.0\.conv1\.conv\.weight`'),
            ('fc.0.bias', -np.inf, r'holds 1 NaN or infinite values in `fc\.0\.bias`'),
            ('conv1.bn.running_var', -0.5, r'holds 1 negative variances in the batch norm '
                                           r'`conv1\.bn\.running_var`')]:
        array = state[key].copy()
        array.flat[0] = value
        refused(dict(state, **{key: array}), match)


def test_an_imported_root_embeds_exports_gives_its_body_and_is_not_resumed(tmp_path, trained,
                                                                           tiny_dataset):
    _, state = trained
    weights = write_pth(tmp_path / 'w.pth', state)
    root = str(tmp_path / 'imported')
    zoo.import_torchreid(weights, root)
    with pytest.raises(cli.UserError, match='exists already'):
        zoo.import_torchreid(weights, root)
    # embed.py on files and on a CSV (which needs --image_root: nothing was trained here).
    from triplet_reid import embed
    crops = tmp_path / 'crops'
    for i in range(3):
        write_image(str(crops / 'p{}.jpg'.format(i)),
                    np.random.default_rng(i).integers(0, 255, (60, 30, 3), dtype=np.uint8))
    assert embed.main(['--experiment_root', root, '--images', str(crops), '--quiet']) == 0
    csv_path, image_root = tiny_dataset
    with pytest.raises(cli.UserError, match='stores no image root .* pass --image_root'):
        embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet'])
    # int8 calibration needs images of the user's, as there is no training set.
    from triplet_reid import export
    with pytest.raises(cli.UserError, match='pass some of your own with '
                       '--calibration_images'):
        export.main(['--experiment_root', root, '--tflite', str(tmp_path / 'm.tflite'),
                     '--tflite_int8', '--quiet'])
    assert sorted(os.listdir(root)) == ['args.json', 'checkpoint', 'checkpoint-0.data-00000-of-'
                                        '00001', 'checkpoint-0.index', 'images_embeddings.h5']
    # Not a run to resume; --initial_checkpoint, which train.py's fine-tuning
    # recipe gives it, loads its body.
    from triplet_reid import train
    from triplet_reid.models.build import load_body_weights
    with pytest.raises(cli.UserError, match='holds a model imported from .* fine-tune it in '
                       'a new experiment root'):
        train.main(['--experiment_root', root])
    _, fresh = build_model('osnet_x0_25', 'fc_bn_relu', 512)
    load_body_weights('osnet_x0_25', fresh, root)
    np.testing.assert_array_equal(fresh.get_layer('conv1_conv').get_weights()[0],
                                  state['conv1.conv.weight'].transpose(2, 3, 1, 0))


def test_the_exported_osnet_holds_no_tensor_but_its_variables():
    # Keras' Normalization layer kept OSNet's mean and deviation as tensors
    # captured from outside the graph, which tf2onnx turned into two more
    # inputs of the ONNX model; constants and variables alone convert to one.
    from triplet_reid.serving import exported
    model, _ = build_model('osnet_x0_25', 'fc_bn_relu', 512)
    module = exported.EmbeddingModule(model, (64, 32), True)
    function = module.embed_float.get_concrete_function()
    assert {tensor.dtype for tensor in function.captured_inputs} == {tf.resource}


def test_import_model_help_names_the_widths():
    import subprocess
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'import_model.py'), '--help'],
                          capture_output=True, text=True)
    assert done.returncode == 0 and 'osnet_x0_25' in done.stdout


def test_a_root_that_cannot_be_written_is_one_message(tmp_path, trained, monkeypatch):
    import errno
    weights = write_pth(tmp_path / 'w.pth', trained[1])

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, 'Read-only file system')
    monkeypatch.setattr(zoo.files, 'temporary_beside', refuse)
    with pytest.raises(cli.UserError, match='cannot write the experiment root `.*exp`: '
                       'Read-only file system; nothing was written'):
        zoo.import_torchreid(weights, str(tmp_path / 'exp'))
    assert sorted(os.listdir(tmp_path)) == ['w.pth']


def test_instance_norm_is_pytorch_s():
    # InstanceNorm2d(affine=True): each image's own spatial mean and biased
    # variance per channel, epsilon 1e-5, then the scale and shift.
    from triplet_reid.nets._osnet import instance_norm
    rng = np.random.default_rng(0)
    inputs = keras.Input((None, None, 4))
    layer = keras.Model(inputs, instance_norm(inputs, 'in'))
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.normal(0, 1, 4)
    layer.get_layer('in').set_weights([gamma, beta])
    x = rng.normal(2, 3, (2, 5, 3, 4)).astype(np.float32)
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(layer(x), gamma * (x - mean) / np.sqrt(var + 1e-5) + beta,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', ['osnet_ain_x0_25', 'osnet_ibn'])
def test_an_instance_normalised_osnet_imports_and_embeds_as_the_source(tmp_path, name):
    model, body = build_model(name, 'fc_bn_relu', 512)
    rng = np.random.default_rng(5)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    randomise_batch_norms(model, rng)
    weights = write_pth(tmp_path / 'w.pth', torchreid_state(model, body), zip_format=True)
    root = str(tmp_path / 'imported')
    stored = zoo.import_torchreid(weights, root)
    assert stored['model_name'] == name and stored['net_padding'] == 'torch'
    assert stored['metric'] == ('cosine' if name.startswith('osnet_ain') else 'euclidean')
    from triplet_reid.models.inference import load_embedder
    # At the net's input size, which the embedder resizes to.
    images = rng.uniform(0, 255, (2, 256, 128, 3)).astype(np.float32)
    expected = model(images, training=False)['emb'].numpy()
    np.testing.assert_allclose(load_embedder(root)(images), expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize('head, dim, last_stride', [('fc_bn_relu', 512, 1), ('pooled', 2048, 2)])
def test_torchreid_s_resnet50_imports_with_and_without_its_fc_layer(tmp_path, head, dim,
                                                                   last_stride):
    # resnet50_fc512 (last stride 1, the fc layer) and resnet50 (the pooled features).
    model, body = build_model('torchreid_resnet50', head, dim, last_stride=last_stride)
    rng = np.random.default_rng(6)
    randomise_batch_norms(model, rng)
    image = rng.uniform(0, 255, (15, 9, 3))
    stem = keras.Model(body.input, body.get_layer('maxpool').output)
    np.testing.assert_allclose(stem(image[None].astype(np.float32))[0],
                               numpy_stem(body, image, 'conv1', 'bn1'), rtol=1e-4, atol=1e-4)
    state = torchreid_state(model, body)
    assert {'layer3.5.conv3.weight', 'layer1.0.downsample.1.running_var', 'bn1.bias'} <= set(state)
    assert ('fc.0.weight' in state) == (head == 'fc_bn_relu')
    root = str(tmp_path / 'imported')
    stored = zoo.import_torchreid(write_pth(tmp_path / 'r50.pth', state), root)
    assert (stored['model_name'], stored['head_name'], stored['embedding_dim'],
            stored['last_stride']) == ('torchreid_resnet50', head, dim, last_stride)
    images = rng.uniform(0, 255, (2, 256, 128, 3)).astype(np.float32)
    expected = model(images, training=False)['emb'].numpy()
    np.testing.assert_allclose(inference.load_embedder(root)(images), expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    with pytest.raises(cli.UserError, match=r'holds a torchreid ResNet of 3 blocks in its third '
                       r'stage; only ResNet-50 \(6\) imports'):
        zoo.import_torchreid(write_pth(tmp_path / 'r.pth', {
            k: v for k, v in state.items() if not k.startswith(('layer3.3', 'layer3.4',
                                                                'layer3.5'))}),
            str(tmp_path / 'other'))


def test_the_pooled_head_takes_the_body_s_width_only():
    with pytest.raises(cli.UserError, match=r'pooled features as they are; pass --embedding_dim '
                                            r'1024'):
        build_model('tiny', 'pooled', 128)
