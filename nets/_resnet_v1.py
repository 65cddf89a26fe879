"""ResNet v1 as in TF-slim's `nets/resnet_v1.py`, shared by the resnet_v1_* plug-ins.

Differences from the Keras ResNet50 that matter for slim checkpoints: the
stride sits in the 3×3 convolution of the *last* unit of each block, strided
convolutions use slim's fixed 'SAME' padding, a unit whose input and output
depth agree has an identity (subsampled) shortcut, and batch norm uses
decay 0.9 and epsilon 1e-5 as the original triplet-reid training did.
"""

import keras

from triplet_reid.layers import batch_norm, conv_bn

# The ImageNet mean that slim's ResNet checkpoints expect to be subtracted.
RGB_MEAN = (123.68, 116.78, 103.94)


def bottleneck(x, depth, depth_bottleneck, stride, name):
    """slim's `bottleneck_v1` unit; layers are named `<name>_{shortcut,conv1,conv2,conv3}`."""
    depth_in = x.shape[-1]
    if depth == depth_in:
        # slim's `subsample`: a 1×1 max-pool with the stride, i.e. x[:, ::s, ::s].
        shortcut = x if stride == 1 else keras.layers.MaxPooling2D(
            1, strides=stride, name=name + '_shortcut_subsample')(x)
    else:
        shortcut = keras.layers.Conv2D(depth, 1, strides=stride, padding='same', use_bias=False,
                                       kernel_initializer='he_normal', name=name + '_shortcut')(x)
        shortcut = batch_norm(shortcut, name + '_shortcut_bn')
    residual = conv_bn(x, depth_bottleneck, 1, 1, name + '_conv1')
    residual = conv_bn(residual, depth_bottleneck, 3, stride, name + '_conv2')
    residual = conv_bn(residual, depth, 1, 1, name + '_conv3', activation=None)
    x = keras.layers.Add(name=name + '_add')([shortcut, residual])
    return keras.layers.Activation('relu', name=name + '_out')(x)


def resnet_v1(units_per_block, name, last_stride=2):
    """Builds a ResNet v1 body with the given number of units in each of the 4 blocks.

    slim puts each block's stride in its last unit, so the last stride of the
    network (into block 4) is block 3's; `last_stride` 1 removes it (BoT),
    which changes no variable.

    Returns:
        A keras.Model from (B, H, W, 3) images in [0, 255] to (B, 2048) features.
    """
    images = keras.Input((None, None, 3), name='images')
    x = keras.layers.Rescaling(1.0, offset=[-m for m in RGB_MEAN], name='mean_subtraction')(images)
    x = conv_bn(x, 64, 7, 2, 'conv1')
    x = keras.layers.MaxPooling2D(3, strides=2, padding='same', name='pool1')(x)
    for block, (base_depth, num_units, stride) in enumerate(
            zip((64, 128, 256, 512), units_per_block, (2, 2, last_stride, 1)), start=1):
        for unit in range(1, num_units + 1):
            x = bottleneck(x, base_depth * 4, base_depth, stride if unit == num_units else 1,
                           'block{}_unit_{}'.format(block, unit))
    features = keras.layers.GlobalAveragePooling2D(name='pool5')(x)
    return keras.Model(images, features, name=name)

