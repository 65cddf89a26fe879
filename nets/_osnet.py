"""OSNet, the omni-scale network of Zhou et al., "Omni-Scale Feature Learning
for Person Re-Identification" (ICCV 2019), at any width: the building blocks
of the `osnet*` plug-ins.

Each OSBlock is a bottleneck whose middle runs four streams of 1, 2, 3 and 4
lightweight 3×3 convolutions (a linear 1×1 convolution, then a depthwise
3×3 one with batch norm and ReLU), so that the streams see four receptive
field sizes; one channel gate, shared by the four streams, weighs each
stream's channels by their content before the streams are summed. Two
blocks per stage; the first two stages end with a 1×1 convolution and 2×2
average pooling; a 1×1 convolution closes the network before global average
pooling. The paper's 512-d fully connected layer after the pooling is the
head's job here (`fc1024` or `bnneck`), so that the body ends with global
average pooling as every body does; with it, OSNet x1.0 has the paper's
2.2 million parameters (`tests/test_nets.py` counts them).

Inputs are scaled to [0, 1] and normalised with ImageNet's mean and standard
deviation, as torchreid does.

`padding` says how the strided 7×7 stem convolution and the 3×3 max-pool
after it pad: `torch` pads 3 and 1 pixels on every side, as torchreid's
PyTorch layers do, so that its trained weights compute what they computed
there; `keras` is Keras' 'same' padding, which on even sizes puts the extra
pixel at the bottom and right only (2 and 3, 0 and 1), shifting every output
by a pixel: what experiments before the choice trained with. Every other
layer pads alike in both (stride 1 'same' is symmetric). The max-pool's zero
padding equals PyTorch's -inf, as it follows a ReLU.
"""

import keras

from triplet_reid.layers import batch_norm

# torchreid's widths: the stem's and the three stages' channels.
WIDTHS = {1.0: (64, 256, 384, 512), 0.75: (48, 192, 288, 384), 0.5: (32, 128, 192, 256),
          0.25: (16, 64, 96, 128)}
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
BOTTLENECK_REDUCTION = 4
GATE_REDUCTION = 16

# The instance-normalised variants (see above).
INSTANCE_NORMS = (None, 'ibn', 'ain')

# Which blocks of stages 2, 3 and 4 normalise per instance inside the
# residual branch in OSNet-AIN (torchreid's OSBlockINin).
AIN_BLOCKS = {2: (True, True), 3: (False, True), 4: (True, False)}


def _conv(x, filters, kernel_size, name, stride=1, groups=1, use_bias=False, padding='same'):
    # PyTorch's Kaiming normal initialisation over the fan-out, as torchreid's.
    initializer = keras.initializers.VarianceScaling(2.0, 'fan_out', 'untruncated_normal')
    if groups > 1:
        return keras.layers.DepthwiseConv2D(kernel_size, stride, padding=padding,
                                            use_bias=use_bias, name=name,
                                            depthwise_initializer=initializer)(x)
    return keras.layers.Conv2D(filters, kernel_size, stride, padding=padding, use_bias=use_bias,
                               kernel_initializer=initializer, name=name)(x)


def pad(x, pixels, name, padding):
    """(x, mode) for a strided layer: under `torch` padding, `x` padded by
    `pixels` on every side and the mode 'valid'; under `keras`, `x` as it is
    and the mode 'same'."""
    if padding == 'keras':
        return x, 'same'
    return keras.layers.ZeroPadding2D(pixels, name=name + '_pad')(x), 'valid'


def instance_norm(x, name):
    """PyTorch's `InstanceNorm2d(affine=True)`: per image and channel, the
    spatial mean and biased variance, epsilon 1e-5, a learnt scale and shift.
    (B, H, W, C) -> (B, H, W, C)."""
    return keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, name=name)(x)


def conv_bn(x, filters, kernel_size, name, stride=1, relu=True, padding='torch', norm='batch'):
    """A convolution, its normalisation (`norm`: 'batch', 'instance' or None)
    and (unless not `relu`) ReLU; a strided one pads as `padding` says."""
    mode = 'same'
    if stride > 1:
        x, mode = pad(x, kernel_size // 2, name, padding)
    x = _conv(x, filters, kernel_size, name + '_conv', stride, padding=mode)
    if norm == 'batch':
        x = batch_norm(x, name + '_bn')
    elif norm == 'instance':
        x = instance_norm(x, name + '_in')
    return keras.layers.ReLU(name=name + '_relu')(x) if relu else x


def light_conv(x, name):
    """The lightweight 3×3 convolution: a linear 1×1 one, then a depthwise 3×3
    one with batch norm and ReLU."""
    channels = x.shape[-1]
    x = _conv(x, channels, 1, name + '_pointwise')
    x = _conv(x, channels, 3, name + '_depthwise', groups=channels)
    return keras.layers.ReLU(name=name + '_relu')(batch_norm(x, name + '_bn'))


def channel_gate(channels, name):
    """The unified aggregation gate: a function that weighs a stream's
    channels by sigmoid(fc(relu(fc(global average)))), its layers shared by
    every stream it is applied to."""
    pool = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + '_pool')
    fc1 = keras.layers.Conv2D(channels // GATE_REDUCTION, 1, activation='relu', name=name + '_fc1')
    fc2 = keras.layers.Conv2D(channels, 1, activation='sigmoid', name=name + '_fc2')

    def gate(stream, index):
        weights = fc2(fc1(pool(stream)))
        return keras.layers.Multiply(name='{}_apply{}'.format(name, index))([stream, weights])
    return gate


def os_block(x, channels, name, in_residual=False, in_output=False):
    """The omni-scale residual block, `channels` out; `in_residual` normalises
    the residual branch per instance instead of per batch (OSNet-AIN),
    `in_output` the sum per instance before the ReLU (OSNet-IBN)."""
    middle = channels // BOTTLENECK_REDUCTION
    reduced = conv_bn(x, middle, 1, name + '_reduce')
    gate = channel_gate(middle, name + '_gate')
    streams = []
    for depth in range(1, 5):
        stream = reduced
        for layer in range(depth):
            stream = light_conv(stream, '{}_stream{}_{}'.format(name, depth, layer + 1))
        streams.append(gate(stream, depth))
    x3 = conv_bn(keras.layers.Add(name=name + '_sum')(streams), channels, 1, name + '_expand',
                 relu=False, norm=None if in_residual else 'batch')
    if in_residual:
        x3 = instance_norm(x3, name + '_in')
    shortcut = x if x.shape[-1] == channels else conv_bn(x, channels, 1, name + '_shortcut',
                                                          relu=False)
    x = keras.layers.Add(name=name + '_add')([x3, shortcut])
    if in_output:
        x = instance_norm(x, name + '_in')
    return keras.layers.ReLU(name=name + '_out')(x)


def osnet_body(width, name, padding='torch', instance_norms=None):
    """The body of OSNet at `width` (a key of `WIDTHS`) with `padding`
    (`torch` or `keras`) and `instance_norms` (one of `INSTANCE_NORMS`, see
    above): images (B, H, W, 3) in [0, 255] to pooled features (B, C),
    C = 512 × width."""
    stem, *stages = WIDTHS[width]
    images = keras.Input((None, None, 3), name='images')
    # (x - mean) / std as a scale and an offset, which the graph holds as
    # constants: Keras' Normalization layer keeps them as tensors captured
    # from outside, which tf2onnx turned into two more inputs of the ONNX model.
    x = keras.layers.Rescaling([1 / s for s in IMAGENET_STD],
                               [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
                               name='normalize')(images)
    x = conv_bn(x, stem, 7, 'conv1', stride=2, padding=padding,
                norm='instance' if instance_norms else 'batch')
    x, mode = pad(x, 1, 'pool1', padding)
    x = keras.layers.MaxPooling2D(3, strides=2, padding=mode, name='pool1')(x)
    for stage, channels in enumerate(stages, start=2):
        for block in range(2):
            x = os_block(x, channels, 'conv{}_{}'.format(stage, block + 1),
                         in_residual=instance_norms == 'ain' and AIN_BLOCKS[stage][block],
                         in_output=instance_norms == 'ibn' and stage == 2)
        if stage < 4:
            x = conv_bn(x, channels, 1, 'conv{}_transition'.format(stage))
            x = keras.layers.AveragePooling2D(2, name='pool{}'.format(stage))(x)
    x = conv_bn(x, stages[-1], 1, 'conv5')
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name=name)
