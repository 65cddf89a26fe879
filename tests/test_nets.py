"""The bodies follow the slim architectures; the heads have the original's layers."""

from importlib import import_module

import keras
import numpy as np
import pytest

from triplet_reid.heads import HEAD_CHOICES
from triplet_reid.models.build import build_model
from triplet_reid.nets import FASTREID_NETS, NET_CHOICES
from triplet_reid.layers import FusedBatchNormalization

# Trainable parameters of slim's networks without logits (conv layers have no
# bias under batch norm); a wrong layer or stride placement changes them.
SLIM_TRAINABLE = {
    'resnet_v1_50': 23508032,
    'resnet_v1_101': 42500160,
    'resnet_v1_152': 58143808,
    'mobilenet_v1_1_224': 3206976,
}
FEATURES = {'resnet_v1_50': 2048, 'resnet_v1_101': 2048, 'resnet_v1_152': 2048,
            'mobilenet_v1_1_224': 1024, 'tiny': 1024, 'lunet': 512, 'keras_resnet50': 2048,
            'keras_mobilenet_v2': 1280, 'keras_mobilenet_v2_035': 1280, 'osnet': 512,
            'osnet_x0_75': 384, 'osnet_x0_5': 256, 'osnet_x0_25': 128, 'osnet_ain': 512,
            'osnet_ain_x0_75': 384, 'osnet_ain_x0_5': 256, 'osnet_ain_x0_25': 128,
            'osnet_ibn': 512, 'torchreid_resnet50': 2048, 'vit_small_16': 384, 'vit_base_16': 768,
            'clip_vit_base_16': 768, 'clipreid_vit_base_16': 1280,
            **{name: 2048 for name in FASTREID_NETS}}


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize('name', NET_CHOICES)
def test_body_builds_and_pools(name):
    body = import_module('triplet_reid.nets.' + name).body()
    # Their padding needs 64×64.
    width = 64 if name.startswith('keras_mobilenet_v2') else 32
    out = body(np.random.uniform(0, 255, (2, 64, width, 3)).astype(np.float32))
    assert out.shape == (2, FEATURES[name])
    if name in SLIM_TRAINABLE:
        assert trainable(body) == SLIM_TRAINABLE[name]


def test_resnet_follows_slim():
    body = import_module('triplet_reid.nets.resnet_v1_50').body()
    layer = body.get_layer
    # The stride sits in the 3×3 of the last unit of blocks 1-3, with slim's padding.
    for block, units in ((1, 3), (2, 4), (3, 6)):
        last = 'block{}_unit_{}'.format(block, units)
        assert layer(last + '_conv2').strides == (2, 2)
        assert layer(last + '_conv2').padding == 'valid'
        assert layer(last + '_conv2_pad').padding == ((1, 1), (1, 1))
        assert layer('block{}_unit_1_conv2'.format(block)).strides == (1, 1)
        assert layer(last + '_shortcut_subsample').strides == (2, 2)
    assert all(layer('block4_unit_{}_conv2'.format(u)).strides == (1, 1) for u in (1, 2, 3))
    assert layer('conv1_pad').padding == ((3, 3), (3, 3))
    for bn in (x for x in body.layers if isinstance(x, keras.layers.BatchNormalization)):
        assert bn.momentum == 0.9 and bn.epsilon == 1e-5 and bn.scale and bn.center
    assert not any(getattr(x, 'use_bias', False) for x in body.layers
                   if isinstance(x, keras.layers.Conv2D))
    # Output stride 32: block4 of a 256×128 input is 8×4.
    block4 = keras.Model(body.input, layer('block4_unit_3_out').output)
    assert block4(np.zeros((1, 256, 128, 3), np.float32)).shape == (1, 8, 4, 2048)
    # ImageNet mean subtraction: the mean colour enters the network as zero.
    pre = keras.Model(body.input, layer('mean_subtraction').output)
    mean = np.array([123.68, 116.78, 103.94], np.float32)
    np.testing.assert_allclose(pre(np.tile(mean, (1, 2, 2, 1))), 0, atol=1e-4)


def test_mobilenet_follows_slim():
    body = import_module('triplet_reid.nets.mobilenet_v1_1_224').body()
    for bn in (x for x in body.layers if isinstance(x, keras.layers.BatchNormalization)):
        assert bn.momentum == 0.9 and bn.epsilon == 0.001
    assert body.get_layer('Conv2d_13_pointwise').filters == 1024
    strides = [body.get_layer('Conv2d_{}_depthwise'.format(i)).strides[0] for i in range(1, 14)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]


def test_tiny_is_exactly_four_blocks():
    body = import_module('triplet_reid.nets.tiny').body()
    convs = [x for x in body.layers if isinstance(x, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 1024]
    assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) and not c.use_bias
               for c in convs)
    pools = [x for x in body.layers if isinstance(x, keras.layers.MaxPooling2D)]
    assert len(pools) == 4 and all(p.pool_size == (2, 2) for p in pools)
    scale = body.get_layer('scale')
    assert scale.scale == pytest.approx(1 / 255)


# BNNeck's, torchreid's and the pooled features have no orthogonal `emb` kernel; their tests
# are below and in test_model_zoo.py.
@pytest.mark.parametrize('head_name', [h for h in HEAD_CHOICES if not h.endswith('bnneck')
                                       and h not in ('fc_bn_relu', 'pooled')])
def test_heads(head_name):
    model, body = build_model('tiny', head_name, 16)
    out = model(np.random.uniform(0, 255, (3, 32, 16, 3)).astype(np.float32), training=False)
    assert out['emb'].shape == out['emb_raw'].shape == (3, 16)
    norms = np.linalg.norm(out['emb'].numpy(), axis=1)
    if head_name.endswith('_normalize'):
        np.testing.assert_allclose(norms, 1, rtol=1e-5)
    else:
        np.testing.assert_allclose(out['emb'].numpy(), out['emb_raw'].numpy())
    emb = model.get_layer('emb')
    w = emb.kernel.numpy()  # (F, 16): orthogonal columns.
    np.testing.assert_allclose(w.T @ w, np.eye(16), atol=1e-4)
    if head_name.startswith('fc1024'):
        assert model.get_layer('fully_connected').units == 1024
        assert not model.get_layer('fully_connected').use_bias
        bn = model.get_layer('fully_connected_bn')
        assert bn.momentum == 0.9 and bn.epsilon == 1e-5
    assert body.name == 'tiny'


@pytest.mark.parametrize('head_name, embedding_dim', [('bnneck', 1024), ('bnneck', 16),
                                                      ('fc1024_bnneck', 16)])
def test_bnneck_infers_the_batch_normalised_features(head_name, embedding_dim):
    model, body = build_model('tiny', head_name, embedding_dim)
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 16, 3)).astype(np.float32)
    bn = model.get_layer('emb')
    assert not bn.center and bn.momentum == 0.9 and bn.epsilon == 1e-5
    # Move the statistics away from 0 and 1, as training would.
    bn.moving_mean.assign(np.linspace(-1, 1, embedding_dim))
    bn.moving_variance.assign(np.linspace(0.5, 2, embedding_dim))
    bn.gamma.assign(np.linspace(0.5, 1.5, embedding_dim))
    out = model(images, training=False)
    features = out['metric_emb'].numpy()
    if embedding_dim == 1024:
        # The body's width: no reduction, the triplet loss sees the pooled features.
        assert 'reduction' not in [layer.name for layer in model.layers]
        np.testing.assert_allclose(features, body(images).numpy(), rtol=1e-5)
    elif head_name == 'bnneck':
        assert model.get_layer('reduction').kernel.shape == (1024, embedding_dim)
    else:
        # TriNet's head, its orthogonal embedding layer feeding the BNNeck.
        assert model.get_layer('fully_connected').units == 1024
        w = model.get_layer('metric_emb').kernel.numpy()
        np.testing.assert_allclose(w.T @ w, np.eye(embedding_dim), atol=1e-4)
    expected = (features - bn.moving_mean.numpy()) / np.sqrt(
        bn.moving_variance.numpy() + 1e-5) * bn.gamma.numpy()
    np.testing.assert_allclose(out['emb'].numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out['emb_raw'].numpy(), out['emb'].numpy())


def test_pooling_choices():
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 16, 3)).astype(np.float32)
    models = {p: build_model('tiny', 'direct', 8, pooling=p)[0] for p in ('avg', 'max', 'gem')}
    weights = models['avg'].get_layer('emb').get_weights()
    feature_map = models['gem'].get_layer('tiny_map')
    models['gem'].get_layer('tiny_map').set_weights(models['avg'].get_layer('tiny').get_weights())
    fmap = feature_map(images).numpy()
    gem = models['gem'].get_layer('gem_pool')
    assert float(gem.p.numpy()) == 3.0 and gem.p.trainable
    expected = np.mean(np.maximum(fmap, 1e-6) ** 3, axis=(1, 2)) ** (1 / 3)
    np.testing.assert_allclose(gem(fmap).numpy(), expected, rtol=1e-4)
    gem.p.assign(1.0)
    np.testing.assert_allclose(gem(fmap).numpy(), np.maximum(fmap, 1e-6).mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-6)
    pooled_max = models['max'].get_layer('global_max_pool')
    np.testing.assert_allclose(pooled_max(fmap).numpy(), fmap.max(axis=(1, 2)))
    for model in models.values():
        model.get_layer('emb').set_weights(weights)
        assert model(images)['emb'].shape == (2, 8)


@pytest.mark.parametrize('name', ['resnet_v1_50', 'keras_resnet50'])
def test_last_stride_one_doubles_the_feature_map_and_keeps_the_weights(name):
    images = np.random.default_rng(2).uniform(0, 255, (1, 64, 32, 3)).astype(np.float32)
    maps = {}
    for stride in (2, 1):
        model, body = build_model(name, 'direct', 8, pooling='max', last_stride=stride)
        maps[stride] = model.get_layer(body.name + '_map')(images).shape
        assert trainable(body) == (SLIM_TRAINABLE.get(name) or trainable(body))
        if stride == 2:
            shapes = [w.shape for w in body.weights]
        assert [w.shape for w in body.weights] == shapes
    assert maps[2][1:3] == (2, 1) and maps[1][1:3] == (4, 2)


def test_last_stride_is_refused_where_a_net_has_none():
    from triplet_reid.cli import UserError
    with pytest.raises(UserError, match='--last_stride 1 works with'):
        build_model('tiny', 'fc1024', 8, last_stride=1)


def numpy_batch_norm(x, gamma, beta, mean, variance, epsilon):
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


@pytest.mark.parametrize('center, scale', [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize('compiled', [False, True])
@pytest.mark.parametrize('shape', [(4, 5, 3, 6), (12, 6)], ids=['images', 'features'])
def test_fused_batch_norm_equals_keras_and_numpy(center, scale, compiled, shape):
    import tensorflow as tf
    from triplet_reid.layers import FusedBatchNormalization
    rng = np.random.default_rng(0)
    x = rng.normal(2, 3, shape).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    layers = {}
    for name, layer_class in (('fused', FusedBatchNormalization),
                              ('keras', keras.layers.BatchNormalization)):
        layer = layer_class(momentum=0.9, epsilon=1e-3, center=center, scale=scale)
        layer.build(x.shape)
        if scale:
            layer.gamma.assign(np.linspace(0.5, 1.5, 6))
        if center:
            layer.beta.assign(np.linspace(-1, 1, 6))
        layer.moving_mean.assign(np.linspace(-0.2, 0.3, 6))
        layer.moving_variance.assign(np.linspace(0.8, 1.6, 6))
        layers[name] = layer

    def run(layer, training):
        def forward(images):
            with tf.GradientTape() as tape:
                tape.watch(images)
                y = layer(images, training=training)
                objective = tf.reduce_sum(y * upstream)
            return y, tape.gradient(objective, [images] + layer.trainable_variables)
        return (tf.function(forward) if compiled else forward)(tf.constant(x))

    gamma = np.linspace(0.5, 1.5, 6) if scale else 1.0
    beta = np.linspace(-1, 1, 6) if center else 0.0
    # Inference: the moving statistics.
    for name in ('fused', 'keras'):
        y, _ = run(layers[name], False)
        np.testing.assert_allclose(y, numpy_batch_norm(
            x, gamma, beta, np.linspace(-0.2, 0.3, 6), np.linspace(0.8, 1.6, 6), 1e-3),
            rtol=1e-4, atol=1e-4)
    # Training: the batch's statistics, the same output and gradients as Keras'.
    (y, grads), (y_keras, grads_keras) = run(layers['fused'], True), run(layers['keras'], True)
    axes = tuple(range(x.ndim - 1))
    mean, variance = x.mean(axes), x.var(axes)
    np.testing.assert_allclose(y, numpy_batch_norm(x, gamma, beta, mean, variance, 1e-3),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, y_keras, rtol=1e-4, atol=1e-4)
    assert len(grads) == len(grads_keras) == 1 + center + scale
    for grad, grad_keras in zip(grads, grads_keras):
        np.testing.assert_allclose(grad, grad_keras, rtol=1e-3, atol=1e-4)
    # The moving averages take the unbiased variance, as PyTorch and slim's fused batch norm.
    n = x.size / 6
    np.testing.assert_allclose(layers['fused'].moving_mean.numpy(),
                               0.9 * np.linspace(-0.2, 0.3, 6) + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(layers['fused'].moving_variance.numpy(),
                               0.9 * np.linspace(0.8, 1.6, 6) + 0.1 * variance * n / (n - 1),
                               rtol=1e-5)


def test_fused_batch_norm_computes_in_float32_under_mixed_precision():
    from triplet_reid.layers import FusedBatchNormalization
    layer = FusedBatchNormalization(dtype='mixed_bfloat16')
    x = np.random.default_rng(0).normal(100, 1, (2, 4, 4, 3)).astype(np.float32)
    y = layer(keras.ops.cast(x, 'bfloat16'), training=True)
    assert y.dtype == 'bfloat16' and layer.moving_mean.dtype == 'float32'
    # A large mean and a small spread: bfloat16 statistics would lose the spread.
    np.testing.assert_allclose(np.std(np.asarray(keras.ops.cast(y, 'float32')), axis=(0, 1, 2)),
                               1, rtol=0.1)


@pytest.mark.parametrize('head_name, head_norms', [
    ('fc1024', ['fully_connected_bn']), ('fc1024_bnneck', ['emb', 'fully_connected_bn'])])
def test_tiny_and_the_heads_use_the_fused_batch_norm(head_name, head_norms):
    from triplet_reid.layers import FusedBatchNormalization
    model, body = build_model('tiny', head_name, 16)
    norms = [layer for layer in body.layers + model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert sorted(layer.name for layer in norms) == [
        'conv1_bn', 'conv2_bn', 'conv3_bn', 'conv4_bn'] + head_norms
    assert all(type(layer) is FusedBatchNormalization for layer in norms)


@pytest.mark.parametrize('name', ['keras_resnet50', 'keras_mobilenet_v2_035'])
def test_keras_applications_fine_tune_with_pytorchs_batch_norm_momentum(name):
    """Their own momentum (0.99, 0.999) left ImageNet's statistics in a short fine-tuning."""
    body = import_module('triplet_reid.nets.' + name).body()
    norms = [layer for layer in body._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 30
    assert all(isinstance(n, FusedBatchNormalization) and n.momentum == 0.9 for n in norms)
    before = [np.array(n.moving_mean) for n in norms]
    body(np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32),
         training=True)
    # One step moves each moving mean a tenth of the way to the batch's.
    assert all(np.any(np.array(n.moving_mean) != b) for n, b in zip(norms, before))


# torchreid's OSNets (Zhou et al. 2019), counted in PyTorch without their
# classifier: all parameters, and those without the 512-d fully connected
# layer and its batch norm, which here is the head's.
OSNET_PARAMETERS = {'osnet': (2169508, 1905828), 'osnet_x0_75': (1285754, 1087610),
                    'osnet_x0_5': (630034, 497426), 'osnet_x0_25': (201864, 134792),
                    'osnet_ain': (2169508, 1905828), 'osnet_ain_x0_75': (1285754, 1087610),
                    'osnet_ain_x0_5': (630034, 497426), 'osnet_ain_x0_25': (201864, 134792),
                    'osnet_ibn': (2170532, 1906852)}


@pytest.mark.parametrize('name', sorted(OSNET_PARAMETERS))
def test_osnet_has_torchreid_s_parameters_and_shapes(name):
    body = import_module('triplet_reid.nets.' + name).body()
    with_fc, without = OSNET_PARAMETERS[name]
    assert trainable(body) == without
    features = FEATURES[name]
    assert trainable(body) + features * 512 + 512 + 2 * 512 == with_fc
    if name in ('osnet', 'osnet_ain'):
        assert round(with_fc / 1e6, 1) == 2.2, 'the paper\'s count'
    # Output stride 16 before pooling: a 256×128 person ends as 16×8.
    conv5 = keras.Model(body.input, body.get_layer('conv5_relu').output)
    assert conv5(np.zeros((1, 256, 128, 3), np.float32)).shape == (1, 16, 8, features)
    # One gate serves the four streams of a block.
    assert sum(1 for layer in body.layers if layer.name == 'conv2_1_gate_fc1') == 1
    assert len(body.get_layer('conv2_1_gate_fc1')._inbound_nodes) == 4


@pytest.mark.parametrize('name', ['osnet_x0_25', 'osnet_ain_x0_25'])
def test_osnet_trains_with_the_identity_loss(tmp_path, tiny_dataset, name):
    # OSNet-AIN's instance norms train as its batch norms do.
    from triplet_reid import train
    from conftest import base_args, logged_iterations
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    args = base_args(root, csv_path, image_root, 20, '--model_name', name,
                     '--head_name', 'bnneck', '--id_loss_weight', '1', '--pooling', 'gem')
    assert train.main(args) == 0
    losses = [loss for _, loss in logged_iterations(root)]
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
