"""fast-reid's trained models as experiments: its ResNet's stem, IBN-a and
non-local blocks against NumPy, its YAML configs read as data with their
`_BASE_` files, and the importer on checkpoints written here (in fast-reid's
layout, without PyTorch); the real code is compared by `bench/peer_models.py`."""

import collections
import json
import os

import keras
import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid import import_model
from triplet_reid import nets
from triplet_reid.models import fastreid
from triplet_reid.models.build import build_model
from triplet_reid.nets import _fastreid
from torch_files import randomise_batch_norms, write_pth

BOT = '''MODEL:
  META_ARCHITECTURE: Baseline
  BACKBONE:
    NAME: build_resnet_backbone
    NORM: BN
    DEPTH: 50x
    LAST_STRIDE: 1
    FEAT_DIM: 2048
    WITH_IBN: False
    PRETRAIN: True
  HEADS:
    NAME: EmbeddingHead
    NORM: BN
    WITH_BNNECK: True
    POOL_LAYER: GlobalAvgPool
    NECK_FEAT: before
    CLS_LAYER: Linear
  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss",)
INPUT:
  SIZE_TRAIN: [ 256, 128 ]
  SIZE_TEST: [ 256, 128 ]
'''

SBS = '''_BASE_: Base-bagtricks.yml
MODEL:
  BACKBONE:
    WITH_NL: True
  HEADS:
    NECK_FEAT: after
    POOL_LAYER: GeneralizedMeanPoolingP
    CLS_LAYER: CircleSoftmax
INPUT:
  SIZE_TEST: [ 384, 128 ]
'''

MGN = '''_BASE_: Base-SBS.yml
MODEL:
  META_ARCHITECTURE: MGN
  BACKBONE:
    WITH_NL: False
  HEADS:
    EMBEDDING_DIM: 256
'''


def configs(tmp_path, leaf='_BASE_: ../Base-SBS.yml\nMODEL:\n  BACKBONE:\n    WITH_IBN: True\n'):
    """fast-reid's layout: configs/Base-*.yml and configs/Market1501/<leaf>.yml."""
    folder = tmp_path / 'configs'
    (folder / 'Market1501').mkdir(parents=True, exist_ok=True)
    (folder / 'Base-bagtricks.yml').write_text(BOT)
    (folder / 'Base-SBS.yml').write_text(SBS)
    (folder / 'Base-MGN.yml').write_text(MGN)
    (folder / 'Market1501' / 'leaf.yml').write_text(leaf)
    return str(folder / 'Market1501' / 'leaf.yml')


def test_a_config_inherits_its_bases_as_fast_reid_merges_them(tmp_path):
    found = fastreid.model_of_config(fastreid.read_config(configs(tmp_path)), 'c.yml')
    assert found == fastreid.FastReidModel('fastreid_r50_ibn_nl', 1, 'gem',
                                           'GeneralizedMeanPoolingP', 2048, False, (384, 128),
                                           'cosine')
    bot = configs(tmp_path, '_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n'
                            '    DEPTH: 101x\n    WITH_IBN: True\n  HEADS:\n'
                            '    EMBEDDING_DIM: 256\nTEST:\n  METRIC: euclidean\n')
    assert fastreid.model_of_config(fastreid.read_config(bot), bot) == fastreid.FastReidModel(
        'fastreid_r101_ibn', 1, 'avg', 'GlobalAvgPool', 256, True, (256, 128), 'euclidean')


@pytest.mark.parametrize('leaf, match', [
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  META_ARCHITECTURE: MoCo\n',
     r'sets MODEL\.META_ARCHITECTURE to `MoCo`; what imports is Baseline or MGN'),
    ('_BASE_: ../Base-MGN.yml\nMODEL:\n  HEADS:\n    EMBEDDING_DIM: 512\n',
     r'EMBEDDING_DIM to `512`; what imports is 256 \(fast-reid\'s MGN configs\)'),
    ('_BASE_: ../Base-MGN.yml\nMODEL:\n  BACKBONE:\n    NAME: build_resnest_backbone\n',
     r'what imports is build_resnet_backbone \(.*, MGN on its ResNet\)'),
    ('_BASE_: ../Base-MGN.yml\nMODEL:\n  BACKBONE:\n    DEPTH: 101x\n',
     r'DEPTH to `101x`; what imports is 50x\.$'),
    ('_BASE_: ../Base-MGN.yml\nINPUT:\n  SIZE_TEST: [64, 32]\n',
     r'height 64 gives `fastreid_mgn_r50` feature maps of 4 rows, which its branches cannot '
     r'cut into 2 and 3 stripes; give a --net_input_height such as 67'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    NAME: build_regnet_backbone\n',
     r'`build_regnet_backbone`, RegNet, which this project does not build; what imports is '
     r'build_resnet_backbone or build_resnest_backbone'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    NAME: build_resnest_backbone\n'
     '    DEPTH: 101x\n', r'DEPTH to `101x`; what imports is 50x\.$'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    DEPTH: 18x\n',
     r'sets MODEL\.BACKBONE\.DEPTH to `18x`; what imports is 50x or 101x'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    WITH_SE: True\n',
     r'MODEL\.BACKBONE\.WITH_SE'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  HEADS:\n    POOL_LAYER: AdaptiveAvgMaxPool\n',
     r'POOL_LAYER to `AdaptiveAvgMaxPool`; what imports is GlobalAvgPool, '),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  PIXEL_MEAN: [1, 2, 3]\n',
     r'MODEL\.PIXEL_MEAN to `\[1, 2, 3\]`'),
    ('_BASE_: ../Base-bagtricks.yml\nINPUT:\n  SIZE_TEST: [256, 100000000]\n',
     r'INPUT\.SIZE_TEST'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    LAST_STRIDE: one\n',
     r'sets MODEL\.BACKBONE\.LAST_STRIDE to `one`, which is not a whole number'),
    ('_BASE_: leaf.yml\n', r'the `_BASE_` files of .* loop'),
    ('_BASE_: ../missing.yml\n', r'missing\.yml'),
    ('_BASE_: [1]\n', r'names a `_BASE_` that is not a path'),
    ('_BASE_: "a\\0b"\n', r'names a `_BASE_` that is not a path'),
    ('MODEL: [unclosed\n', r'leaf\.yml` is not valid YAML \(line 2\)'),
    ('- a list\n', r'holds no mapping of settings'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  PIXEL_MEAN: [a, b, c]\n',
     r'MODEL\.PIXEL_MEAN to `\[\'a\', \'b\', \'c\'\]`'),
    ('MODEL: ' + '[' * 100000 + '\n', r'nests its settings deeper than any config|not valid'),
    # Aliases that would make a value of 10**9 elements, written out in a message.
    ('_BASE_: ../Base-bagtricks.yml\na: &a [{}]\n'.format(', '.join('x' * 10)) + ''.join(
        '{}: &{} [{}]\n'.format(new, new, ', '.join(['*' + old] * 10))
        for old, new in zip('abcdefgh', 'bcdefghi')) + 'INPUT:\n  SIZE_TEST: *i\n',
     r'leaf\.yml` holds 2,345,679,013 values once its aliases are written out'),
    # Aliases of 10**4 elements pass the size check, and the message shows a few.
    ('_BASE_: ../Base-bagtricks.yml\na: &a [{}]\n'.format(', '.join('x' * 10)) + ''.join(
        '{}: &{} [{}]\n'.format(new, new, ', '.join(['*' + old] * 10))
        for old, new in zip('abc', 'bcd')) + 'INPUT:\n  SIZE_TEST: *d\n',
     r'INPUT\.SIZE_TEST to `\[\[\[.*\.\.\.'),
    # A value that a message would quote whole is cut.
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  META_ARCHITECTURE: {}\n'.format('M' * 1200),
     r'META_ARCHITECTURE to `M{100,200} … M{40,80} \(1200 characters\)`; what imports'),
    # Numbers where the import needs whole numbers.
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  HEADS:\n    EMBEDDING_DIM: 0.5\n',
     r'sets MODEL\.HEADS\.EMBEDDING_DIM to `0\.5`, which is not a whole number'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    LAST_STRIDE: 1.0\n',
     r'LAST_STRIDE to `1\.0`, which is not a whole number'),
    ('_BASE_: ../Base-bagtricks.yml\nMODEL:\n  HEADS:\n    EMBEDDING_DIM: -3\n',
     r'EMBEDDING_DIM to `-3`; what imports is 0 \(none\) to 65536'),
    ('_BASE_: ../Base-bagtricks.yml\nINPUT:\n  SIZE_TEST: 256\n',
     r'SIZE_TEST to `256`, which is not a list'),
    ('_BASE_: ../Base-bagtricks.yml\nINPUT:\n  SIZE_TEST: [256.5, 128]\n',
     r'SIZE_TEST to `\[256\.5, 128\]`; what imports is \[height, width\]'),
    ('_BASE_: ../Base-bagtricks.yml\nTEST:\n  METRIC: [cosine]\n',
     r'TEST\.METRIC to `\[\'cosine\'\]`, which is not a name'),
    # A tag that an unsafe loader would run: read as data, it is refused.
    ('MODEL: !!python/object/apply:os.system ["touch pwned"]\n', r'is not valid YAML'),
])
def test_configs_it_cannot_build_are_refused_by_setting(tmp_path, leaf, match):
    path = configs(tmp_path, leaf)
    with pytest.raises(cli.UserError, match=match):
        fastreid.model_of_config(fastreid.read_config(path), path)
    assert not os.path.exists('pwned')


def test_configs_whose_merged_bases_would_write_out_billions_of_values_are_refused(tmp_path):
    # Each file names mappings through aliases; merging the two writes each
    # shared mapping out as a copy of its own, 10**9 of them in all.
    def dag(levels):
        lines = ['l0: &l0 {{{}}}'.format(', '.join('k{}: 1'.format(i) for i in range(10)))]
        lines += ['l{}: &l{} {{{}}}'.format(n, n, ', '.join('k{}: *l{}'.format(i, n - 1)
                                                             for i in range(10)))
                  for n in range(1, levels)]
        return '\n'.join(lines) + '\nMODEL:\n  X: *l{}\n'.format(levels - 1)
    path = configs(tmp_path, '_BASE_: ../Base-bagtricks.yml\n' + dag(9))
    (tmp_path / 'configs' / 'Base-bagtricks.yml').write_text(BOT + dag(9))
    with pytest.raises(cli.UserError, match=r'holds [0-9,]{13} values once its aliases'):
        fastreid.read_config(path)
    # Four levels each (11,111 values) are a config; merged, they stay within the bound.
    path = configs(tmp_path, '_BASE_: ../Base-bagtricks.yml\n' + dag(4))
    (tmp_path / 'configs' / 'Base-bagtricks.yml').write_text(BOT + dag(4))
    assert fastreid.read_config(path)['MODEL']['X']['k0']['k0']['k0']['k9'] == 1
    # Nesting deeper than any config, within YAML's reach.
    path = configs(tmp_path, 'MODEL: ' + '[' * 40 + ']' * 40 + '\n')
    with pytest.raises(cli.UserError, match='nested deeper than 32 levels'):
        fastreid.read_config(path)


def numpy_stem(body, image):
    """fast-reid's stem on (H, W, 3) in [0, 255]: normalised, a 7×7 convolution
    at stride 2 padded by 3, batch norm, ReLU, and a 3×3 max-pool at stride 2
    without padding whose output size rounds up (`ceil_mode`)."""
    x = np.pad((image - _fastreid.PIXEL_MEAN) / _fastreid.PIXEL_STD, ((3, 3), (3, 3), (0, 0)))
    kernel = body.get_layer('conv1').get_weights()[0]
    h, w = (image.shape[0] - 1) // 2 + 1, (image.shape[1] - 1) // 2 + 1
    conv = np.array([[np.tensordot(x[2 * i:2 * i + 7, 2 * j:2 * j + 7], kernel, 3)
                      for j in range(w)] for i in range(h)])
    gamma, beta, mean, var = body.get_layer('bn1').get_weights()
    x = np.maximum(gamma * (conv - mean) / np.sqrt(var + 1e-5) + beta, 0)
    oh, ow = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
    return np.array([[x[2 * i:2 * i + 3, 2 * j:2 * j + 3].max((0, 1)) for j in range(ow)]
                     for i in range(oh)])


@pytest.fixture(scope='module')
def r50_ibn_nl():
    """fast-reid's SBS R50-ibn in Keras with random weights and statistics."""
    model, body = build_model('fastreid_r50_ibn_nl', 'bnneck', 2048, pooling='gem',
                              last_stride=1)
    rng = np.random.default_rng(3)
    model.set_weights([w + rng.normal(0, 0.02, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    randomise_batch_norms(model, rng)
    return model, body


@pytest.mark.parametrize('size', [(32, 16), (31, 17)])
def test_the_stem_pools_as_fast_reid_with_its_output_size_rounded_up(r50_ibn_nl, size):
    _, body = r50_ibn_nl
    stem = keras.Model(body.input, body.get_layer('maxpool').output)
    image = np.random.default_rng(0).uniform(0, 255, size + (3,))
    np.testing.assert_allclose(stem(image[None].astype(np.float32))[0], numpy_stem(body, image),
                               rtol=1e-4, atol=1e-4)


def test_ibn_and_non_local_blocks_compute_as_fast_reid(r50_ibn_nl):
    _, body = r50_ibn_nl
    rng = np.random.default_rng(1)
    # IBN-a: the first half of the channels per instance, the rest per batch.
    block_in = body.get_layer('layer1_0_conv1').output
    ibn = keras.Model(block_in, body.get_layer('layer1_0_bn1').output)
    x = rng.normal(1, 2, (2, 6, 4, 64)).astype(np.float32)
    gamma, beta = body.get_layer('layer1_0_bn1_IN').get_weights()
    first = x[..., :32]
    expected_in = gamma * (first - first.mean((1, 2), keepdims=True)) / np.sqrt(
        first.var((1, 2), keepdims=True) + 1e-5) + beta
    g, b, mean, var = body.get_layer('layer1_0_bn1_BN').get_weights()
    expected_bn = g * (x[..., 32:] - mean) / np.sqrt(var + 1e-5) + b
    np.testing.assert_allclose(ibn(x), np.concatenate([expected_in, expected_bn], -1),
                               rtol=1e-4, atol=1e-4)
    # Non-local: z = BN(W · (θ(x) φ(x)ᵀ / N) g(x)) + x over the N positions.
    entry = body.get_layer('layer2_2_out').output
    block = keras.Model(entry, body.get_layer('NL_2_0_add').output)
    x = rng.uniform(0, 2, (2, 5, 3, 512)).astype(np.float32)

    def conv1x1(name, t):
        kernel, bias = body.get_layer(name).get_weights()
        return t @ kernel[0, 0] + bias
    flat = x.reshape(2, 15, 512)
    theta, phi, gx = (conv1x1('NL_2_0_' + part, flat) for part in ('theta', 'phi', 'g'))
    y = conv1x1('NL_2_0_W_0', (theta @ phi.transpose(0, 2, 1) / 15) @ gx)
    g, b, mean, var = body.get_layer('NL_2_0_W_1').get_weights()
    expected = (g * (y - mean) / np.sqrt(var + 1e-5) + b + flat).reshape(x.shape)
    np.testing.assert_allclose(block(x), expected, rtol=1e-3, atol=1e-3)
    assert [layer.name for layer in body.layers if layer.name.endswith('_attention')] == [
        'NL_2_0_attention', 'NL_2_1_attention', 'NL_3_0_attention', 'NL_3_1_attention',
        'NL_3_2_attention']


def test_resnest_configs_build_fast_reid_s_resnest_50(tmp_path):
    # fast-reid's ResNeSt builder reads neither IBN nor non-local blocks, which
    # AGW_S50 inherits.
    for base in ('Base-bagtricks', 'Base-SBS'):
        path = configs(tmp_path, '_BASE_: ../{}.yml\nMODEL:\n  BACKBONE:\n    NAME: '
                                 'build_resnest_backbone\n    WITH_IBN: True\n'.format(base))
        assert fastreid.model_of_config(fastreid.read_config(path), path).net == 'fastreid_s50'


def numpy_split_attention(body, name, x):
    """fast-reid's `SplAtConv2d` (radix 2, cardinality 1) on x (B, H, W, C)
    in NumPy: a 3×3 convolution padded by 1 in two groups, batch norm, ReLU;
    the two halves' sum pooled, through fc1, batch norm, ReLU and fc2 to
    logits whose softmax across the halves weighs them."""
    def bn(t, layer):
        gamma, beta, mean, var = body.get_layer(layer).get_weights()
        return gamma * (t - mean) / np.sqrt(var + 1e-5) + beta
    kernel = body.get_layer(name + '_conv').get_weights()[0]  # (3, 3, C / 2, 2·out)
    half_in, half_out = x.shape[-1] // 2, kernel.shape[-1] // 2
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    y = np.concatenate([np.einsum('bhwijc,ijcd->bhwd', np.stack([np.stack([
        padded[:, i:i + 3, j:j + 3, g * half_in:(g + 1) * half_in] for j in range(w)], 1)
        for i in range(h)], 1), kernel[..., g * half_out:(g + 1) * half_out])
        for g in range(2)], -1)
    y = np.maximum(bn(y, name + '_bn0'), 0)
    channels = y.shape[-1] // 2
    halves = y[..., :channels], y[..., channels:]
    pooled = (halves[0] + halves[1]).mean((1, 2))
    k1, b1 = body.get_layer(name + '_fc1').get_weights()
    a = np.maximum(bn(pooled @ k1[0, 0] + b1, name + '_bn1'), 0)
    k2, b2 = body.get_layer(name + '_fc2').get_weights()
    logits = (a @ k2[0, 0] + b2).reshape(len(x), 2, channels)
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    return weights[:, 0, None, None] * halves[0] + weights[:, 1, None, None] * halves[1]


def test_resnest_split_attention_and_pools_compute_as_fast_reid():
    from torch_files import randomise_batch_norms
    model, body = build_model('fastreid_s50', 'bnneck', 2048, pooling='gem', last_stride=1)
    rng = np.random.default_rng(4)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    randomise_batch_norms(model, rng)
    block = keras.Model(body.get_layer('layer1_0_relu1').output,
                        body.get_layer('layer1_0_conv2_out').output)
    x = rng.uniform(0, 2, (2, 5, 3, 64)).astype(np.float32)
    np.testing.assert_allclose(block(x), numpy_split_attention(body, 'layer1_0_conv2', x),
                               rtol=1e-3, atol=1e-3)
    # A stride-2 block pools its attention's output with a 3×3 window padded by
    # one that counts the padding, and its shortcut with a 2×2 window whose
    # output size rounds up and counts only the image (PyTorch's ceil_mode,
    # count_include_pad=False), here at an odd size.
    avd = keras.Model(body.get_layer('layer2_0_conv2_out').output,
                      body.get_layer('layer2_0_avd_layer').output)
    y = rng.uniform(0, 2, (1, 5, 3, 128)).astype(np.float32)
    padded = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.array([[padded[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].mean((0, 1))
                          for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(avd(y)[0], expected, rtol=1e-5, atol=1e-5)
    down = keras.Model(body.get_layer('layer1_2_out').output,
                       body.get_layer('layer2_0_downsample_0').output)
    z = rng.uniform(0, 2, (1, 5, 3, 256)).astype(np.float32)
    expected = np.array([[z[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((0, 1))
                          for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(down(z)[0], expected, rtol=1e-5, atol=1e-5)
    # At last stride 1, the last stage's later blocks dilate their convolution by 2.
    assert body.get_layer('layer4_1_conv2_conv').dilation_rate == (2, 2)
    assert body.get_layer('layer4_0_conv2_conv').dilation_rate == (1, 1)


def test_a_fast_reid_resnest_checkpoint_imports_and_embeds_as_the_source(tmp_path):
    from torch_files import randomise_batch_norms
    config = configs(tmp_path, '_BASE_: ../Base-SBS.yml\nMODEL:\n  BACKBONE:\n    NAME: '
                               'build_resnest_backbone\n')
    found = fastreid.model_of_config(fastreid.read_config(config), config)
    model, body = build_model('fastreid_s50', 'bnneck', 2048, pooling='gem', last_stride=1)
    # Random batch norms on the initial weights: noise on every weight, as the
    # ResNet's test adds, takes ResNeSt's activations to 1e5, where the order
    # of the sums alone moves the cosine in the fifth place.
    randomise_batch_norms(model, np.random.default_rng(5))
    # Each block's last batch norm at a fifth, as trained residual branches are
    # small: at full scale the sixteen blocks' sums reach 1e5 from some initial
    # weights (their draw depends on the tests run before), and the order of
    # the sums alone then moves the cosine in the third place.
    for layer in body.layers:
        if layer.name.endswith('_bn3'):
            gamma, *rest = layer.get_weights()
            layer.set_weights([gamma * 0.2] + rest)
    state = fastreid_state(model, body, found)
    assert 'backbone.layer2.0.conv2.fc1.bias' in state and 'backbone.conv1.6.weight' in state
    weights = write_pth(tmp_path / 'market_sbs_S50.pth', checkpoint(state), zip_format=True)
    root = str(tmp_path / 'imported')
    assert import_model.main(['--weights', weights, '--config', config,
                              '--experiment_root', root]) == 0
    from triplet_reid.models.inference import load_embedder
    images = np.random.default_rng(0).uniform(0, 255, (2, 384, 128, 3)).astype(np.float32)
    expected = model(images, training=False)['emb'].numpy()
    found = load_embedder(root)(images)
    cosines = (found * expected).sum(1) / np.linalg.norm(found, axis=1) / np.linalg.norm(
        expected, axis=1)
    assert cosines.min() > 0.999999, (cosines, np.abs(expected).max())


def test_a_fast_reid_mgn_checkpoint_imports_and_embeds_as_the_source(tmp_path, capsys):
    config = configs(tmp_path, '_BASE_: ../Base-MGN.yml\nMODEL:\n  BACKBONE:\n    WITH_IBN: '
                               'True\nINPUT:\n  SIZE_TEST: [256, 128]\n')
    found = fastreid.model_of_config(fastreid.read_config(config), config)
    model, body = build_model(found.net, 'bnneck', 2048, pooling='gem', last_stride=1)
    rng = np.random.default_rng(5)
    randomise_batch_norms(model, rng)
    for head in fastreid.MGN_HEADS:
        body.get_layer(head + '_head_pool').set_weights([np.float32(rng.uniform(2, 4))])
    state = fastreid_state(model, body, found)
    assert {'b1.0.4.bn1.IN.weight', 'b3.1.2.conv3.weight', 'backbone.6.downsample.0.weight',
            'b22_head.bottleneck.0.weight', 'b33_head.pool_layer.p'} <= set(state)
    weights = write_pth(tmp_path / 'market_mgn_R50-ibn.pth', checkpoint(state), zip_format=True)
    root = str(tmp_path / 'imported')
    assert import_model.main(['--weights', weights, '--config', config,
                              '--experiment_root', root]) == 0
    assert 'fastreid_mgn_r50_ibn + bnneck, 2048-d embeddings at 256x128; its classifier of 7 ' \
        'training identities is left out' in capsys.readouterr().out
    from triplet_reid.models.inference import load_embedder
    images = rng.uniform(0, 255, (2, 256, 128, 3)).astype(np.float32)
    expected = model(images, training=False)['emb'].numpy()
    found_embs = load_embedder(root)(images)
    np.testing.assert_allclose(found_embs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # A head's batch norm missing, or of another width, is named.
    del state['b32_head.bottleneck.1.running_var']
    weights = write_pth(tmp_path / 'broken.pth', checkpoint(state), zip_format=True)
    with pytest.raises(cli.UserError, match=r'lacks `b32_head\.bottleneck\.1\.running_var`; '
                       r'MGN\'s heads each end in a batch norm of 256'):
        fastreid.import_fastreid(weights, config, str(tmp_path / 'broken'))
    assert not os.path.exists(tmp_path / 'broken')


VIT = '''MODEL:
  META_ARCHITECTURE: Baseline
  PIXEL_MEAN: [127.5, 127.5, 127.5]
  PIXEL_STD: [127.5, 127.5, 127.5]
  BACKBONE:
    NAME: build_vit_backbone
    DEPTH: base
    FEAT_DIM: 768
    STRIDE_SIZE: (16, 16)
    DROP_PATH_RATIO: 0.1
  HEADS:
    NAME: EmbeddingHead
    NORM: BN
    WITH_BNNECK: True
    POOL_LAYER: Identity
    NECK_FEAT: before
INPUT:
  SIZE_TRAIN: [ 64, 32 ]
  SIZE_TEST: [ 64, 32 ]
'''


def test_a_fast_reid_vit_imports_and_embeds_after_its_neck(tmp_path):
    from vit_reference import numpy_vit, timm_state
    from triplet_reid.models.inference import load_embedder
    rng = np.random.default_rng(6)
    timm = timm_state(rng, dim=768, depth=12, grid=(4, 2))
    del timm['head.weight'], timm['head.bias']
    state = {'backbone.' + key: value for key, value in timm.items()}
    neck = {'weight': rng.uniform(0.5, 1.5, 768), 'bias': np.zeros(768),
            'running_mean': rng.normal(0, 0.2, 768), 'running_var': rng.uniform(0.5, 2, 768)}
    state.update({'heads.bottleneck.0.' + k: v.astype(np.float32) for k, v in neck.items()})
    state['heads.bottleneck.0.num_batches_tracked'] = np.array(9)
    state['heads.weight'] = np.zeros((11, 768), np.float32)
    # fast-reid's YAML writes the stride as a tuple, text that yacs reads as a literal.
    config = configs(tmp_path, VIT)
    weights = write_pth(tmp_path / 'market_vit.pth', checkpoint(state), zip_format=True)
    root = str(tmp_path / 'imported')
    assert import_model.main(['--weights', weights, '--config', config,
                              '--experiment_root', root]) == 0
    stored = json.load(open(os.path.join(root, 'args.json')))
    assert (stored['model_name'], stored['head_name'], stored['embedding_dim'],
            stored['metric'], stored['imported_classes']) == ('vit_base_16', 'bnneck', 768,
                                                              'cosine', 11)
    images = rng.uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    features = numpy_vit(timm, images, heads=12)
    expected = (features - neck['running_mean']) / np.sqrt(neck['running_var'] + 1e-5) * \
        neck['weight']
    found = load_embedder(root)(images)
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize('old, new, match', [
    ('DEPTH: base', 'DEPTH: small', r"fast-reid's ViT-Small is 768 wide and 8 blocks deep"),
    ('POOL_LAYER: Identity', 'POOL_LAYER: GlobalAvgPool', r'POOL_LAYER to `GlobalAvgPool`'),
    ('PIXEL_STD: [127.5, 127.5, 127.5]', 'PIXEL_STD: [58.4, 57.1, 57.4]', r'127\.5'),
    ('SIZE_TEST: [ 64, 32 ]', 'SIZE_TEST: [ 128, 64 ]', r'takes only its training size'),
    ('STRIDE_SIZE: (16, 16)', 'STRIDE_SIZE: (__import__("os"), 1)',
     r'STRIDE_SIZE to `\(__import__\("os"\), 1\)`, which is not a list'),
])
def test_fast_reid_vit_configs_that_do_not_import_are_refused(tmp_path, old, new, match):
    config = configs(tmp_path, VIT.replace(old, new))
    with pytest.raises(cli.UserError, match=match):
        import_model.main(['--weights', str(tmp_path / 'missing.pth'), '--config', config,
                           '--experiment_root', str(tmp_path / 'exp')])
    assert not os.path.exists(tmp_path / 'exp')


def test_mgn_configs_build_its_branches_and_stripes(tmp_path):
    config = configs(tmp_path, '_BASE_: ../Base-MGN.yml\nMODEL:\n  BACKBONE:\n    WITH_IBN: '
                               'True\n    WITH_NL: True\n')
    # Its branches are the ResNet's stages, without non-local blocks whatever WITH_NL says.
    assert fastreid.model_of_config(fastreid.read_config(config), config) == \
        fastreid.FastReidModel('fastreid_mgn_r50_ibn', 1, 'gem', 'GeneralizedMeanPoolingP',
                               2048, True, (384, 128), 'cosine')


def test_mgn_cuts_its_stripes_as_torch_chunk_and_each_head_pools_its_own():
    # torch.chunk: ceil(rows / parts) rows each, the last what remains.
    x = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    assert [c.shape[1] for c in _fastreid.RowChunks(3)(x)] == [6, 6, 4]
    assert [c.shape[1] for c in _fastreid.RowChunks(2)(x)] == [8, 8]
    assert [nets.mgn_rows(h) for h in (256, 384, 64, 67)] == [16, 24, 4, 5]
    assert not nets.chunks_fill(4, 3) and nets.chunks_fill(5, 3)
    model, body = build_model('fastreid_mgn_r50', 'bnneck', 2048, pooling='gem', last_stride=1)
    assert [layer.strides for layer in body.layers if layer.name in (
        'b1_layer4_0_conv2', 'b2_layer4_0_conv2', 'layer3_0_conv2')] == [(2, 2), (1, 1), (1, 1)]
    rng = np.random.default_rng(0)
    for head in ('b31', 'b33', 'b2'):
        body.get_layer(head + '_head_pool').set_weights([np.float32(rng.uniform(1.5, 4))])
    images = rng.uniform(0, 255, (2, 256, 128, 3)).astype(np.float32)
    maps = keras.Model(body.input, [body.get_layer('b{}_layer4_2_out'.format(b)).output
                                    for b in (2, 3)] + [body.output])(images)
    b2, b3, joined = (np.asarray(t) for t in maps)
    assert b3.shape == (2, 16, 8, 2048)

    def head(name, rows):
        p = body.get_layer(name + '_head_pool').get_weights()[0]
        pooled = (np.maximum(rows, 1e-6) ** p).mean((1, 2)) ** (1 / p)
        return pooled @ body.get_layer(name + '_head_reduction').get_weights()[0]
    # MGN's test feature: b1, b2, b3, b21, b22, b31, b32, b33, 256 each.
    order = fastreid.MGN_HEADS
    for name, rows in (('b2', b2), ('b31', b3[:, :6]), ('b32', b3[:, 6:12]), ('b33', b3[:, 12:]),
                       ('b22', b2[:, 8:])):
        start = 256 * order.index(name)
        np.testing.assert_allclose(joined[:, start:start + 256], head(name, rows), rtol=2e-4,
                                   atol=2e-4 * np.abs(joined).max())


def fastreid_state(model, body, found, classes=7):
    """What fast-reid saves of a Keras model of `found` (the inverse of the importer)."""
    module_of = {layer: module for module, layer in
                 fastreid.module_layers(body, found).items()}
    state = collections.OrderedDict()
    for layer in body.layers + model.layers:
        if not layer.weights or hasattr(layer, 'layers'):
            continue
        module, weights, kind = module_of[layer.name], layer.get_weights(), type(layer).__name__
        if 'BatchNormalization' in kind:
            if not layer.center:
                weights.insert(1, np.zeros_like(weights[0]))
            for part, array in zip(('weight', 'bias', 'running_mean', 'running_var'), weights):
                state[module + '.' + part] = array
            state[module + '.num_batches_tracked'] = np.array(100, np.int64)
        elif kind == 'GeneralizedMeanPooling':
            state[module + '.p'] = weights[0].reshape(1)
        elif kind == 'Dense':  # The reduction, a 1×1 convolution in fast-reid.
            state[module + '.weight'] = weights[0].T[:, :, None, None].copy()
        else:
            kernel = weights[0]
            state[module + '.weight'] = kernel if kernel.ndim == 1 else kernel.transpose(3, 2, 0, 1)
            if len(weights) > 1:
                state[module + '.bias'] = weights[1]
    if found.net.startswith('fastreid_mgn'):
        # MGN's eight heads, each with its batch norm of 256 and its classifier.
        for part in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'):
            joined = state.pop(fastreid.MGN_NECK + '.' + part)
            for i, head in enumerate(fastreid.MGN_HEADS):
                state['{}_head.bottleneck.1.{}'.format(head, part)] = (
                    joined if joined.ndim == 0 else joined[256 * i:256 * (i + 1)])
                state['{}_head.weight'.format(head)] = np.zeros((classes, 256), np.float32)
        return state
    state['heads.weight'] = np.zeros((classes, found.embedding_dim), np.float32)
    return state


def checkpoint(state):
    """A fast-reid training checkpoint around the state dict: the model, and
    the optimiser's and schedule's states (whose milestones are a Counter)."""
    return {'model': state, 'optimizer': {'state': {0: {'step': np.array(5.0, np.float32)}},
                                          'param_groups': [{'lr': 3.5e-4, 'betas': (0.9, 0.999),
                                                            'params': [0]}]},
            'scheduler': {'milestones': collections.Counter({40: 1, 90: 1}), 'last_epoch': 3},
            'iteration': 1000}


def test_a_fast_reid_checkpoint_imports_and_embeds_as_the_source(tmp_path, r50_ibn_nl, capsys):
    model, body = r50_ibn_nl
    config = configs(tmp_path)
    found = fastreid.model_of_config(fastreid.read_config(config), config)
    weights = write_pth(tmp_path / 'market_sbs_R50-ibn.pth',
                        checkpoint(fastreid_state(model, body, found)), zip_format=True)
    root = str(tmp_path / 'imported')
    assert import_model.main(['--weights', weights, '--config', config,
                              '--experiment_root', root]) == 0
    assert 'fastreid_r50_ibn_nl + bnneck, 2048-d embeddings at 384x128; its classifier of 7 ' \
        'training identities is left out' in capsys.readouterr().out
    from triplet_reid.models.inference import load_embedder
    images = np.random.default_rng(0).uniform(0, 255, (2, 384, 128, 3)).astype(np.float32)
    expected = model(images, training=False)['emb'].numpy()
    np.testing.assert_allclose(load_embedder(root)(images), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    stored = json.load(open(os.path.join(root, 'args.json')))
    assert (stored['metric'], stored['pooling'], stored['last_stride'], stored['head_name']) == (
        'cosine', 'gem', 1, 'bnneck')
    assert stored['imported_config'] == os.path.abspath(config)


def test_bad_fast_reid_imports_get_one_message_and_write_nothing(tmp_path, r50_ibn_nl):
    model, body = r50_ibn_nl
    config = configs(tmp_path)
    found = fastreid.model_of_config(fastreid.read_config(config), config)
    state = fastreid_state(model, body, found)
    folder = tmp_path / 'files'
    folder.mkdir()

    def refused(content, match, config=config):
        weights = write_pth(folder / 'w.pth', content)
        with pytest.raises(cli.UserError, match=match):
            fastreid.import_fastreid(weights, config, str(folder / 'exp'))
        assert os.listdir(folder) == ['w.pth']

    deeper = configs(tmp_path / 'deep', '_BASE_: ../Base-SBS.yml\nMODEL:\n  BACKBONE:\n'
                                        '    DEPTH: 101x\n    WITH_IBN: True\n')
    refused(state, r'lacks the weights of `backbone\.layer3\.6\.conv1`; is it a state dict of '
                   r'fast-reid\'s fastreid_r101_ibn_nl', deeper)
    plain = configs(tmp_path / 'plain', '_BASE_: ../Base-SBS.yml\n')
    refused(state, r'holds `backbone\.layer1\.0\.bn1\.IN\.weight`, which fast-reid\'s '
                   r'fastreid_r50_nl of .* has no place for', plain)
    refused(dict(state, **{'heads.bottleneck.0.bias': np.ones(2048, np.float32)}),
            r'non-zero `heads\.bottleneck\.0\.bias`')
    refused({'conv1.conv.weight': np.zeros((16, 3, 7, 7), np.float32)},
            r'not a fast-reid checkpoint: .*looks like a torchreid OSNet, which imports without')
    bad = dict(state)
    bad['backbone.layer2.0.bn2.running_var'] = -bad['backbone.layer2.0.bn2.running_var']
    refused(bad, r'negative variances in the batch norm `backbone\.layer2\.0\.bn2\.running_var`')
    # Without its config, a fast-reid checkpoint says what it needs.
    weights = write_pth(folder / 'w.pth', checkpoint(state))
    with pytest.raises(cli.UserError, match=r'looks like a fast-reid checkpoint .* as --config'):
        import_model.main(['--weights', weights, '--experiment_root', str(folder / 'exp')])
    with pytest.raises(SystemExit):
        import_model.main(['--weights', weights, '--config', config, '--model_name', 'osnet',
                           '--experiment_root', str(folder / 'exp')])
    assert os.listdir(folder) == ['w.pth']


def test_an_imported_fast_reid_model_fine_tunes_from_all_its_weights(tmp_path, tiny_dataset):
    # BoT R50: the whole model, head included (--initial_head), starts from the import.
    from conftest import base_args
    from triplet_reid import train
    model, body = build_model('fastreid_r50', 'bnneck', 2048, last_stride=1)
    rng = np.random.default_rng(4)
    randomise_batch_norms(model, rng)
    config = configs(tmp_path, '_BASE_: ../Base-bagtricks.yml\n')
    found = fastreid.model_of_config(fastreid.read_config(config), config)
    weights = write_pth(tmp_path / 'bot.pth', checkpoint(fastreid_state(model, body, found)))
    imported = str(tmp_path / 'bot')
    fastreid.import_fastreid(weights, config, imported)
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'tuned')
    assert train.main(base_args(root, csv_path, image_root, 2) + [
        '--initial_checkpoint', imported, '--initial_head', '--model_name', 'fastreid_r50',
        '--head_name', 'bnneck', '--embedding_dim', '2048', '--last_stride', '1',
        '--batch_p', '2', '--batch_k', '2', '--learning_rate', '1e-12']) == 0
    from triplet_reid.models.inference import load_experiment
    tuned, _, _ = load_experiment(root)
    tuned_body = tuned.get_layer('fastreid_r50')
    for layer in ('conv1', 'layer4_2_conv3'):
        np.testing.assert_allclose(tuned_body.get_layer(layer).get_weights()[0],
                                   body.get_layer(layer).get_weights()[0], atol=1e-6)
    np.testing.assert_allclose(tuned.get_layer('emb').get_weights()[0],
                               model.get_layer('emb').get_weights()[0], atol=1e-6)
