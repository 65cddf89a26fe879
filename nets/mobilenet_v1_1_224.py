"""MobileNet v1 (depth multiplier 1.0) following TF-slim's `mobilenet_v1`.

Convolutions use TensorFlow's 'SAME' padding as slim's MobileNet does, every
convolution is followed by batch norm (decay 0.9 as the original training,
epsilon 0.001 as slim's MobileNet) and ReLU6. Inputs are scaled by 1/255.
"""

import keras

from triplet_reid.layers import batch_norm

# (stride, pointwise depth) of the 13 depthwise-separable layers Conv2d_1 … Conv2d_13.
SEPARABLE_LAYERS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
                    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))
EPSILON = 0.001


def _bn_relu6(x, name):
    x = batch_norm(x, name + '_bn', epsilon=EPSILON)
    return keras.layers.ReLU(6.0, name=name + '_relu6')(x)


def body():
    init = keras.initializers.TruncatedNormal(stddev=0.09)
    images = keras.Input((None, None, 3), name='images')
    x = keras.layers.Rescaling(1 / 255.0, name='scale')(images)
    x = keras.layers.Conv2D(32, 3, strides=2, padding='same', use_bias=False,
                            kernel_initializer=init, name='Conv2d_0')(x)
    x = _bn_relu6(x, 'Conv2d_0')
    for i, (stride, depth) in enumerate(SEPARABLE_LAYERS, start=1):
        name = 'Conv2d_{}_depthwise'.format(i)
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding='same', use_bias=False,
                                         depthwise_initializer=init, name=name)(x)
        x = _bn_relu6(x, name)
        name = 'Conv2d_{}_pointwise'.format(i)
        x = keras.layers.Conv2D(depth, 1, use_bias=False, kernel_initializer=init, name=name)(x)
        x = _bn_relu6(x, name)
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name='MobilenetV1')
