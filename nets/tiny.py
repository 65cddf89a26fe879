"""A tiny from-scratch net for CPUs, tests and users without pretrained weights.

Four blocks of 3×3 convolution (stride 1, no bias), batch norm (momentum 0.9,
epsilon 1e-5), ReLU and 2×2 max-pooling, with 32, 64, 128 and 1024 channels,
then global average pooling. Inputs are scaled by 1/255. The kernels start
from PyTorch's default initialisation (see `torch_default_initializer`).
"""

import keras

from triplet_reid.layers import conv_bn, torch_default_initializer


def body():
    images = keras.Input((None, None, 3), name='images')
    x = keras.layers.Rescaling(1 / 255.0, name='scale')(images)
    for i, channels in enumerate((32, 64, 128, 1024), start=1):
        x = conv_bn(x, channels, 3, 1, 'conv{}'.format(i),
                    kernel_initializer=torch_default_initializer())
        x = keras.layers.MaxPooling2D(2, name='pool{}'.format(i))(x)
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name='tiny')
