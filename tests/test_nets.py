"""The bodies follow the slim architectures; the heads have the original's layers."""

from importlib import import_module

import keras
import numpy as np
import pytest

from heads import HEAD_CHOICES
from model import build_model
from nets import NET_CHOICES

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
            'keras_mobilenet_v2': 1280}


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize('name', NET_CHOICES)
def test_body_builds_and_pools(name):
    body = import_module('nets.' + name).body()
    width = 64 if name == 'keras_mobilenet_v2' else 32  # Its padding needs 64×64.
    out = body(np.random.uniform(0, 255, (2, 64, width, 3)).astype(np.float32))
    assert out.shape == (2, FEATURES[name])
    if name in SLIM_TRAINABLE:
        assert trainable(body) == SLIM_TRAINABLE[name]


def test_resnet_follows_slim():
    body = import_module('nets.resnet_v1_50').body()
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
    body = import_module('nets.mobilenet_v1_1_224').body()
    for bn in (x for x in body.layers if isinstance(x, keras.layers.BatchNormalization)):
        assert bn.momentum == 0.9 and bn.epsilon == 0.001
    assert body.get_layer('Conv2d_13_pointwise').filters == 1024
    strides = [body.get_layer('Conv2d_{}_depthwise'.format(i)).strides[0] for i in range(1, 14)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]


def test_tiny_is_exactly_four_blocks():
    body = import_module('nets.tiny').body()
    convs = [x for x in body.layers if isinstance(x, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 1024]
    assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) and not c.use_bias
               for c in convs)
    pools = [x for x in body.layers if isinstance(x, keras.layers.MaxPooling2D)]
    assert len(pools) == 4 and all(p.pool_size == (2, 2) for p in pools)
    scale = body.get_layer('scale')
    assert scale.scale == pytest.approx(1 / 255)


@pytest.mark.parametrize('head_name', HEAD_CHOICES)
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
