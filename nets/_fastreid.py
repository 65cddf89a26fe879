"""fast-reid's ResNet (JDAI-CV/fast-reid, `fastreid/modeling/backbones/resnet.py`), with
IBN-a and non-local blocks: the building blocks of the `fastreid_*` plug-ins.

The network of fast-reid's BoT, AGW and SBS models, laid out so that their
trained weights compute here what they computed there:

- torchvision's ResNet v1.5 bottleneck (the stride in the 3×3 convolution,
  a projection shortcut in each stage's first block), every strided layer
  padded on all sides alike as PyTorch pads, batch norm with epsilon 1e-5;
- fast-reid's stem: the 3×3 max-pool has no padding but rounds its output
  size up (`ceil_mode`), which equals one row and column of zeros at the
  bottom and right (its input follows a ReLU, so zero is never the maximum
  of more than zeros) and a 'valid' pool;
- IBN-a (Pan et al., "Two at Once", ECCV 2018), in stages 1 to 3: the first
  batch norm of each block normalises its first half of channels per
  instance (PyTorch's `InstanceNorm2d(affine=True)`) and the rest per batch;
- non-local blocks (Wang et al. 2018) after the last 2 blocks of stage 2 and
  the last 3 (ResNet-50) or 9 (ResNet-101) of stage 3, as fast-reid's AGW and
  SBS place them: embedded-Gaussian attention without the softmax (the
  product divided by the number of positions), through `g`, `theta` and
  `phi` 1×1 convolutions of fast-reid's width (`reduc_ratio //
  reduc_ratio`, one channel), added back through `W` (1×1 convolution and
  batch norm);
- the last stage at `last_stride` (fast-reid's models use 1).

torchreid's ResNet-50 (`resnet50`, `resnet50_fc512`) is the same network
with torchvision's stem, whose max-pool pads one pixel on every side
instead of rounding up (`ceil_pool=False`).

Inputs are RGB in [0, 255], normalised inside the net with fast-reid's
pixel mean and deviation (ImageNet's, times 255). Layers are named after
fast-reid's modules (`layer1.0.bn1.IN` is `layer1_0_bn1_IN`), which
`models/fastreid.py` maps its checkpoints by.
"""

import keras
import tensorflow as tf

from triplet_reid.layers import batch_norm, pooling_layer
from triplet_reid.nets import MGN_HEADS, MGN_PARTS, MGN_REDUCTION
from triplet_reid.nets._osnet import instance_norm

# fast-reid's MODEL.PIXEL_MEAN and PIXEL_STD, on RGB in [0, 255].
PIXEL_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
PIXEL_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# Blocks per stage, and non-local blocks after the last few blocks of each stage.
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
NON_LOCAL = {50: (0, 2, 3, 0), 101: (0, 2, 9, 0)}
EXPANSION = 4


class SplitChannels(keras.layers.Layer):
    """(B, H, W, C) -> [(B, H, W, first), (B, H, W, C - first)]: the channel
    halves that IBN-a normalises per instance and per batch."""

    def __init__(self, first, **kwargs):
        super().__init__(**kwargs)
        self.first = int(first)

    def call(self, x):
        return [x[..., :self.first], x[..., self.first:]]

    def get_config(self):
        return dict(super().get_config(), first=self.first)


class NonLocalAttention(keras.layers.Layer):
    """fast-reid's non-local product: [theta, phi, g], each (B, H, W, I), to
    (theta · phiᵀ / (H·W)) · g, (B, H, W, I), over the H·W positions."""

    def call(self, inputs):
        theta, phi, g = inputs
        shape = keras.ops.shape(g)
        flat = [keras.ops.reshape(t, (shape[0], -1, t.shape[-1])) for t in (theta, phi, g)]
        affinity = keras.ops.matmul(flat[0], keras.ops.transpose(flat[1], (0, 2, 1)))
        positions = keras.ops.cast(keras.ops.shape(affinity)[-1], affinity.dtype)
        return keras.ops.reshape(keras.ops.matmul(affinity / positions, flat[2]), shape)


def conv(x, filters, kernel_size, name, stride=1, use_bias=False):
    """A convolution padded by kernel_size // 2 on every side, as PyTorch's."""
    if kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=name + '_pad')(x)
    return keras.layers.Conv2D(filters, kernel_size, stride, use_bias=use_bias, name=name,
                               kernel_initializer=keras.initializers.HeNormal())(x)


def ibn(x, name):
    """IBN-a's norm: instance norm on the first half of the channels, batch
    norm on the rest."""
    first, rest = SplitChannels(x.shape[-1] // 2, name=name + '_split')(x)
    return keras.layers.Concatenate(name=name)([instance_norm(first, name + '_IN'),
                                                batch_norm(rest, name + '_BN')])


def bottleneck(x, planes, stride, name, with_ibn):
    """fast-reid's `Bottleneck`, `planes` × 4 channels out."""
    shortcut = x
    if stride != 1 or x.shape[-1] != planes * EXPANSION:
        shortcut = batch_norm(conv(x, planes * EXPANSION, 1, name + '_downsample_0', stride),
                              name + '_downsample_1')
    y = conv(x, planes, 1, name + '_conv1')
    y = ibn(y, name + '_bn1') if with_ibn else batch_norm(y, name + '_bn1')
    y = keras.layers.ReLU(name=name + '_relu1')(y)
    y = keras.layers.ReLU(name=name + '_relu2')(batch_norm(conv(y, planes, 3, name + '_conv2',
                                                                stride), name + '_bn2'))
    y = batch_norm(conv(y, planes * EXPANSION, 1, name + '_conv3'), name + '_bn3')
    return keras.layers.ReLU(name=name + '_out')(keras.layers.Add(name=name + '_add')(
        [y, shortcut]))


def non_local(x, name):
    """fast-reid's `Non_local` block on x (B, H, W, C), its sum with x."""
    inter = 2 // 2  # fast-reid's `reduc_ratio // reduc_ratio`, whatever the ratio.
    theta, phi, g = (keras.layers.Conv2D(inter, 1, name='{}_{}'.format(name, part))(x)
                     for part in ('theta', 'phi', 'g'))
    y = NonLocalAttention(name=name + '_attention')([theta, phi, g])
    y = keras.layers.Conv2D(x.shape[-1], 1, name=name + '_W_0')(y)
    y = batch_norm(y, name + '_W_1')
    return keras.layers.Add(name=name + '_add')([y, x])


def normalize(images):
    """RGB in [0, 255] normalised by fast-reid's pixel mean and deviation."""
    return keras.layers.Rescaling([1 / s for s in PIXEL_STD],
                                  [-m / s for m, s in zip(PIXEL_MEAN, PIXEL_STD)],
                                  name='normalize')(images)


def resnet_stem(images, ceil_pool=True):
    """fast-reid's ResNet stem on images (B, H, W, 3) in [0, 255]: the
    7×7 convolution at stride 2, batch norm, ReLU and the 3×3 max-pool,
    rounding up (`ceil_pool`) or padding one pixel (torchvision's)."""
    x = keras.layers.ReLU(name='relu')(batch_norm(conv(normalize(images), 64, 7, 'conv1', 2),
                                                  'bn1'))
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)) if ceil_pool else 1, name='maxpool_pad')(x)
    return keras.layers.MaxPooling2D(3, 2, name='maxpool')(x)


def fastreid_resnet(depth, name, with_ibn=False, with_nl=False, last_stride=2, ceil_pool=True):
    """fast-reid's ResNet-`depth` (50 or 101), or with `ceil_pool` False
    torchvision's stem (torchreid's ResNet): images (B, H, W, 3), RGB in
    [0, 255], to pooled features (B, 2048)."""
    images = keras.Input((None, None, 3), name='images')
    x = resnet_stem(images, ceil_pool)
    for stage, (blocks, non_locals) in enumerate(zip(BLOCKS[depth], NON_LOCAL[depth]), start=1):
        for block in range(blocks):
            stride = (1, 2, 2, last_stride)[stage - 1] if block == 0 else 1
            x = bottleneck(x, 64 * 2 ** (stage - 1), stride, 'layer{}_{}'.format(stage, block),
                           with_ibn and stage < 4)
            first_non_local = blocks - non_locals
            if with_nl and block >= first_non_local:
                x = non_local(x, 'NL_{}_{}'.format(stage, block - first_non_local))
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name=name)


# ResNeSt (Zhang et al. 2020), fast-reid's `build_resnest_backbone` (its
# `fastreid/modeling/backbones/resnest.py` and `layers/splat.py`): the body of
# its S50 configs, always with radix 2, cardinality 1, the deep stem, the
# average-pooled downsampling and the stride of each stage's first block taken
# by an average pool after its split attention.
RESNEST_BLOCKS = {50: (3, 4, 6, 3)}
RESNEST_STEM = {50: 32}
RADIX = 2


class GroupedConv2D(keras.layers.Conv2D):
    """Keras' `Conv2D` with `groups`, padding 'valid', computed as one
    convolution per group: Keras computes a grouped convolution on a CPU
    through XLA, whose compiled call neither tf2onnx nor the TFLite
    converter can read. Its kernel is Conv2D's, (kh, kw, C / groups, F)."""

    def call(self, inputs):
        outputs = tf.concat([
            tf.nn.conv2d(x, kernel, self.strides, 'VALID', dilations=self.dilation_rate)
            for x, kernel in zip(tf.split(inputs, self.groups, axis=-1),
                                 tf.split(self.kernel, self.groups, axis=-1))], axis=-1)
        return tf.nn.bias_add(outputs, self.bias) if self.use_bias else outputs


class RadixSoftmax(keras.layers.Layer):
    """ResNeSt's `rSoftMax` for cardinality 1: the attention logits (B, 1, 1,
    radix·C), as `radix` groups of C channels, softmaxed across the groups."""

    def call(self, x):
        shape = keras.ops.shape(x)
        split = keras.ops.reshape(x, (shape[0], 1, 1, RADIX, -1))
        return keras.ops.reshape(keras.ops.softmax(split, axis=3), shape)


def split_attention(x, channels, name, stride=1, dilation=1):
    """fast-reid's `SplAtConv2d` (radix 2, cardinality 1, reduction 4): a 3×3
    convolution in `RADIX` groups to `RADIX`·`channels`, batch norm and ReLU;
    the groups' sum pooled, through `fc1`, batch norm, ReLU and `fc2` to one
    softmax weight per group and channel, which weigh the groups' sum."""
    y = keras.layers.ZeroPadding2D(dilation, name=name + '_conv_pad')(x)
    y = GroupedConv2D(channels * RADIX, 3, stride, groups=RADIX, dilation_rate=dilation,
                      use_bias=False, name=name + '_conv',
                      kernel_initializer=keras.initializers.HeNormal())(y)
    y = keras.layers.ReLU(name=name + '_relu0')(batch_norm(y, name + '_bn0'))
    groups = SplitChannels(channels, name=name + '_split')(y)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + '_gap')(
        keras.layers.Add(name=name + '_sum')(groups))
    inter = max(x.shape[-1] * RADIX // 4, 32)
    a = keras.layers.Conv2D(inter, 1, name=name + '_fc1')(pooled)
    a = keras.layers.ReLU(name=name + '_relu1')(batch_norm(a, name + '_bn1'))
    a = RadixSoftmax(name=name + '_rsoftmax')(keras.layers.Conv2D(
        channels * RADIX, 1, name=name + '_fc2')(a))
    weights = SplitChannels(channels, name=name + '_attention_split')(a)
    return keras.layers.Add(name=name + '_out')([
        keras.layers.Multiply(name='{}_weigh{}'.format(name, i))([w, g])
        for i, (w, g) in enumerate(zip(weights, groups))])


def resnest_block(x, planes, stride, name, avd, dilation=1):
    """fast-reid's ResNeSt `Bottleneck` (`planes` × 4 channels out): with
    `avd`, its stride is a 3×3 average pool (padding counted) after the
    split attention; the shortcut of a block that changes the shape is
    average-pooled by the stride (ceil mode, padding not counted: Keras'
    'same' average pool), then projected."""
    shortcut = x
    if stride != 1 or x.shape[-1] != planes * EXPANSION:
        if stride != 1:
            shortcut = keras.layers.AveragePooling2D(stride, stride, padding='same',
                                                     name=name + '_downsample_0')(x)
        shortcut = batch_norm(conv(shortcut, planes * EXPANSION, 1, name + '_downsample_1'),
                              name + '_downsample_2')
    y = keras.layers.ReLU(name=name + '_relu1')(batch_norm(conv(x, planes, 1, name + '_conv1'),
                                                           name + '_bn1'))
    y = split_attention(y, planes, name + '_conv2', 1 if avd else stride, dilation)
    if avd:
        y = keras.layers.ZeroPadding2D(1, name=name + '_avd_pad')(y)
        y = keras.layers.AveragePooling2D(3, stride, name=name + '_avd_layer')(y)
    y = batch_norm(conv(y, planes * EXPANSION, 1, name + '_conv3'), name + '_bn3')
    return keras.layers.ReLU(name=name + '_out')(keras.layers.Add(name=name + '_add')(
        [y, shortcut]))


def fastreid_resnest(depth, name, last_stride=2):
    """fast-reid's ResNeSt-`depth` (50): images (B, H, W, 3), RGB in [0,
    255], to pooled features (B, 2048). At `last_stride` 1, as fast-reid
    builds it, the last stage's later blocks dilate their 3×3 convolution by
    2 and its first block's average pool keeps the size."""
    images = keras.Input((None, None, 3), name='images')
    x = normalize(images)
    stem = RESNEST_STEM[depth]
    x = keras.layers.ReLU(name='conv1_2')(batch_norm(conv(x, stem, 3, 'conv1_0', 2), 'conv1_1'))
    x = keras.layers.ReLU(name='conv1_5')(batch_norm(conv(x, stem, 3, 'conv1_3'), 'conv1_4'))
    x = keras.layers.ReLU(name='relu')(batch_norm(conv(x, 2 * stem, 3, 'conv1_6'), 'bn1'))
    x = keras.layers.ZeroPadding2D(1, name='maxpool_pad')(x)
    x = keras.layers.MaxPooling2D(3, 2, name='maxpool')(x)
    for stage, blocks in enumerate(RESNEST_BLOCKS[depth], start=1):
        for block in range(blocks):
            first = block == 0
            stride = (1, 2, 2, last_stride)[stage - 1] if first else 1
            # fast-reid's ResNeSt pools the first block of every stage but the
            # first (`is_first`), and dilates the last stage at stride 1.
            avd = first and stage > 1
            dilation = 2 if stage == 4 and last_stride == 1 and not first else 1
            x = resnest_block(x, 64 * 2 ** (stage - 1), stride,
                              'layer{}_{}'.format(stage, block), avd, dilation)
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name=name)


# MGN (Wang et al. 2018), fast-reid's `MGN` meta architecture: see
# `nets.MGN_PARTS`, whose constants describe it.


class RowChunks(keras.layers.Layer):
    """`torch.chunk(x, parts, dim=rows)`: (B, H, W, C) to `parts` maps of
    ceil(H / parts) rows, the last of what remains (6, 6 and 4 of 16)."""

    def __init__(self, parts, **kwargs):
        super().__init__(**kwargs)
        self.parts = int(parts)

    def call(self, x):
        size = (tf.shape(x)[1] + self.parts - 1) // self.parts
        return [x[:, i * size:(i + 1) * size] for i in range(self.parts)]

    def get_config(self):
        return dict(super().get_config(), parts=self.parts)


def mgn_head(x, name, pooling):
    """One of MGN's heads up to its batch norm: the map (B, H, W, 2048)
    pooled (its own GeM exponent), then reduced to `MGN_REDUCTION` (fast-reid's
    1×1 convolution), (B, 256)."""
    x = pooling_layer(pooling, name + '_pool')(x)
    return keras.layers.Dense(MGN_REDUCTION, use_bias=False, name=name + '_reduction',
                              kernel_initializer=keras.initializers.HeNormal())(x)


def fastreid_mgn(name, with_ibn=False, last_stride=2, pooling='avg'):
    """fast-reid's MGN on a ResNet-50 (with IBN-a in stages 1 to 3): images
    (B, H, W, 3), RGB in [0, 255], to its eight heads' reduced features,
    each pooled as `pooling` says (`flags.POOLINGS`), joined in
    `MGN_HEADS`' order: (B, 8 × 256). The model's head adds the batch norm
    (one over all eight: a batch norm is per channel). Layers are named
    after fast-reid's modules (see `models/fastreid.py`): `layer3_0` is the
    trunk's, `b2_layer3_1` the second branch's copy of stage 3's second block."""
    images = keras.Input((None, None, 3), name='images')
    x = resnet_stem(images)
    for stage, blocks in enumerate((3, 4, 1), start=1):
        for block in range(blocks):
            x = bottleneck(x, 64 * 2 ** (stage - 1), 2 if block == 0 and stage > 1 else 1,
                           'layer{}_{}'.format(stage, block), with_ibn)
    features = {}
    for branch, parts in enumerate(MGN_PARTS, start=1):
        y = x
        for block in range(1, BLOCKS[50][2]):
            y = bottleneck(y, 256, 1, 'b{}_layer3_{}'.format(branch, block), with_ibn)
        for block in range(BLOCKS[50][3]):
            stride = last_stride if parts == 1 and block == 0 else 1
            y = bottleneck(y, 512, stride, 'b{}_layer4_{}'.format(branch, block), False)
        features['b{}'.format(branch)] = mgn_head(y, 'b{}_head'.format(branch), pooling)
        if parts > 1:
            chunks = RowChunks(parts, name='b{}_chunks'.format(branch))(y)
            for part, chunk in enumerate(chunks, start=1):
                head = 'b{}{}'.format(branch, part)
                features[head] = mgn_head(chunk, head + '_head', pooling)
    joined = keras.layers.Concatenate(name='features')([features[head] for head in MGN_HEADS])
    return keras.Model(images, joined, name=name)
