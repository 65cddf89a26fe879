"""LuNet, the from-scratch network of "In Defense of the Triplet Loss" (appendix).

Our reading of the paper's layer table: a 3×3 stem convolution with 128
channels, then pre-activation bottleneck residual blocks (batch norm and leaky
ReLU with slope 0.3 before each convolution, a 1×1 projection shortcut where
the depth changes) interleaved with 3×3 stride-2 max-pooling, growing from 128
to 256 to 512 channels. It ends, like every body here, with batch norm,
leaky ReLU and global average pooling; the paper's small embedding MLP is the
job of the head (`fc1024` or `direct`). Inputs are scaled by 1/255.
"""

import keras

from triplet_reid.layers import batch_norm

LEAK = 0.3
# Residual-block output depths; 'pool' is a 3×3 stride-2 max-pool.
LAYOUT = (128, 'pool', 128, 256, 'pool', 256, 256, 'pool', 512, 512, 'pool', 512, 'pool', 512)


def _bn_leaky(x, name):
    return keras.layers.LeakyReLU(LEAK, name=name + '_leaky')(batch_norm(x, name + '_bn'))


def _conv(x, filters, kernel_size, name):
    return keras.layers.Conv2D(filters, kernel_size, padding='same', use_bias=False,
                               kernel_initializer='he_normal', name=name)(x)


def res_block(x, depth, name):
    """A pre-activation bottleneck block with a bottleneck of `depth // 4` channels."""
    pre = _bn_leaky(x, name + '_preact')
    shortcut = x if x.shape[-1] == depth else _conv(pre, depth, 1, name + '_shortcut')
    r = _bn_leaky(_conv(pre, depth // 4, 1, name + '_conv1'), name + '_conv1')
    r = _bn_leaky(_conv(r, depth // 4, 3, name + '_conv2'), name + '_conv2')
    r = _conv(r, depth, 1, name + '_conv3')
    return keras.layers.Add(name=name + '_add')([shortcut, r])


def body():
    images = keras.Input((None, None, 3), name='images')
    x = keras.layers.Rescaling(1 / 255.0, name='scale')(images)
    x = _conv(x, 128, 3, 'conv1')
    pools = blocks = 0
    for item in LAYOUT:
        if item == 'pool':
            pools += 1
            x = keras.layers.MaxPooling2D(3, strides=2, padding='same',
                                          name='pool{}'.format(pools))(x)
        else:
            blocks += 1
            x = res_block(x, item, 'res{}'.format(blocks))
    x = _bn_leaky(x, 'final')
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name='lunet')
