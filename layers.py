"""Layers that nets and heads share: TF-slim's conventions in Keras, the fused batch
norm, pooling choices and the rebuilding of Keras applications."""

import keras
import tensorflow as tf


def conv2d_same(x, filters, kernel_size, stride, name, **kwargs):
    """A convolution with slim's 'SAME' rule for strided convolutions.

    TensorFlow's 'SAME' padding depends on the input size when the stride is
    larger than one; slim's `resnet_utils.conv2d_same` instead pads
    `kernel_size - 1` pixels, split as evenly as possible with the extra one
    at the end, and then convolves with 'VALID' padding.
    """
    if stride == 1:
        return keras.layers.Conv2D(filters, kernel_size, padding='same', name=name,
                                   **kwargs)(x)
    pad_total = kernel_size - 1
    pad_beg = pad_total // 2
    pad = ((pad_beg, pad_total - pad_beg),) * 2
    x = keras.layers.ZeroPadding2D(pad, name=name + '_pad')(x)
    return keras.layers.Conv2D(filters, kernel_size, strides=stride, padding='valid',
                               name=name, **kwargs)(x)


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' batch normalisation, computed by TensorFlow's fused kernel on
    channels-last images (B, H, W, C) and on features (B, C).

    Keras 3 composes batch norm from its moments and element-wise operations,
    each a pass over the activations forward and more backward; in the `tiny`
    net's training step on a CPU they took a third of the time. The fused
    kernel (oneDNN's on a CPU, cuDNN's on a GPU) makes one pass for the
    statistics and one for the output, as PyTorch's and TF-slim's fused batch
    norm in the original do. As theirs, it updates the moving variance with
    the batch's unbiased variance (n/(n-1) times the biased one, n the values
    per channel: 72 × 16 × 8 in the `tiny` net's last block at P=18, K=4,
    128×64, and the batch size, 72, in a head's); the output is Keras'.
    Features (B, C) go through the kernel as (B, 1, 1, C). With batch
    statistics synchronised across replicas (`training/distributed.py`) the layer
    trains on the global batch's moments, as Keras does, and keeps the same
    unbiased moving variance. Inputs of another rank, masked inputs and
    renormalisation take Keras' own path.

    The layer computes in float32, as Keras' does under mixed precision, and
    keeps Keras' variables, names and configuration, so checkpoints of either
    load into the other.
    """

    def call(self, inputs, training=None, mask=None):
        rank = len(inputs.shape)
        if (rank not in (2, 4) or self.axis not in (-1, rank - 1) or mask is not None or
                self.renorm):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        if rank == 2:
            x = x[:, None, None, :]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones_like(self.moving_mean)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros_like(
            self.moving_mean)
        train = bool(training) and self.trainable
        if train and self.synchronized:
            y = self._synchronized(x, scale, offset)
        else:
            # Training with an averaging factor, the kernel returns the updated moving
            # statistics; in inference it normalises with them and returns them as they are.
            y, mean, variance = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=self.epsilon,
                exponential_avg_factor=1.0 - self.momentum if train else 1.0,
                is_training=train)[:3]
            if train:
                self.moving_mean.assign(mean)
                self.moving_variance.assign(variance)
        if rank == 2:
            y = y[:, 0, 0, :]
        return tf.cast(y, self.compute_dtype)

    def _synchronized(self, x, scale, offset):
        """Training on the statistics of the whole global batch, (B, H, W, C) ->
        (B, H, W, C), whose moving variance, as the fused kernel's, averages the
        unbiased variance: a distributed step updates what one device would."""
        mean, variance = keras.ops.moments(x, axes=[0, 1, 2], synchronized=True)
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None:
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + unbiased * (1.0 - self.momentum))
        return tf.nn.batch_normalization(x, mean, variance, offset, scale, self.epsilon)


def batch_norm(x, name, momentum=0.9, epsilon=1e-5):
    """Batch normalisation with slim's decay/epsilon naming (decay == momentum),
    fused (`FusedBatchNormalization`)."""
    return FusedBatchNormalization(momentum=momentum, epsilon=epsilon, name=name)(x)


def torch_default_initializer():
    """PyTorch's default for convolution and dense kernels (`kaiming_uniform_` with
    a=√5): uniform within ±1/√fan_in.

    Under batch norm a kernel's scale does not change the output, but with Adam
    it sets how fast the kernel learns: each step moves every weight by about
    the learning rate, a larger share of a smaller weight. This initialisation
    is √6 times smaller than He's; from scratch, `tiny` + `fc1024` reached the
    PyTorch reference's accuracy only with it (bench/RESULTS.md, "Parity").
    """
    return keras.initializers.VarianceScaling(1 / 3, 'fan_in', 'uniform')


def conv_bn(x, filters, kernel_size, stride, name, activation='relu', epsilon=1e-5,
            kernel_initializer='he_normal'):
    """slim's `conv2d` with `normalizer_fn=batch_norm`: conv (no bias, slim's
    padding rule), BN, activation. The batch-norm layer is named `<name>_bn`."""
    x = conv2d_same(x, filters, kernel_size, stride, name, use_bias=False,
                    kernel_initializer=kernel_initializer)
    x = batch_norm(x, name + '_bn', epsilon=epsilon)
    if activation is not None:
        x = keras.layers.Activation(activation, name=name + '_act')(x)
    return x


# The batch-norm momentum of the Keras applications in a body: PyTorch's default
# (its momentum 0.1 is 1 - 0.9), which torchreid, fast-reid and BoT fine-tune with.
# The applications' own (0.999 in MobileNetV2, 0.99 in ResNet50) suits months of
# ImageNet training; after 1500 iterations of fine-tuning a quarter of MobileNetV2's
# moving statistics were still ImageNet's, and the embeddings used them (real-data
# mAP 9.8%; with the statistics of the new data 12.1%; bench/RESULTS.md).
APPLICATION_MOMENTUM = 0.9


def fused_application(application, momentum=APPLICATION_MOMENTUM):
    """`application`'s layers rebuilt from its configuration, its batch norms as
    `FusedBatchNormalization` with `momentum` (faster, as in the other nets);
    the weights are fresh, in the same order (`load_application_weights`)."""
    config = application.get_config()
    for layer in config['layers']:
        if layer['class_name'] == 'BatchNormalization':
            layer.update(class_name='FusedBatchNormalization', module=None,
                         registered_name='FusedBatchNormalization')
            layer['config']['momentum'] = momentum
    return keras.Model.from_config(
        config, custom_objects={'FusedBatchNormalization': FusedBatchNormalization})


def load_application_weights(body, layer_name, build, path):
    """Loads a Keras application's weights into the layer `layer_name` of `body`.

    The file is read into the application as Keras builds it, whose layers it
    names, and copied over in order, so that the body's own layers (such as
    `fused_application`'s) may differ in class.

    Args:
        body: A body that wraps a `keras.applications` model.
        layer_name (str): The application's name inside the body.
        build: `build(weights)` makes the application with `weights=weights`.
        path (str): A Keras weights file of the application, or `imagenet` to
            let Keras download its ImageNet weights.
    """
    source = build('imagenet' if path == 'imagenet' else None)
    if path != 'imagenet':
        source.load_weights(path)
    body.get_layer(layer_name).set_weights(source.get_weights())


class GeneralizedMeanPooling(keras.layers.Layer):
    """GeM pooling (Radenović et al. 2018): (mean of x^p over the positions)^(1/p)
    per channel, with one learnable exponent p (initially 3); p = 1 is average
    pooling and p → ∞ max pooling. Inputs are clipped at `epsilon` first, as
    fast-reid does, so that the power is defined.

    (B, H, W, C) -> (B, C).
    """

    def __init__(self, p=3.0, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.initial_p, self.epsilon = float(p), float(epsilon)

    def build(self, input_shape):
        self.p = self.add_weight(name='p', shape=(), dtype='float32',
                                 initializer=keras.initializers.Constant(self.initial_p))

    def call(self, x):
        p = keras.ops.cast(self.p, x.dtype)
        x = keras.ops.power(keras.ops.maximum(x, self.epsilon), p)
        return keras.ops.power(keras.ops.mean(x, axis=(1, 2)), 1.0 / p)

    def get_config(self):
        return dict(super().get_config(), p=self.initial_p, epsilon=self.epsilon)


def pooling_layer(pooling, name=None):
    """The global pooling layer named by `pooling`, one of `flags.POOLINGS`,
    called `name` (by default after its kind)."""
    if pooling == 'gem':
        return GeneralizedMeanPooling(name=name or 'gem_pool')
    if pooling == 'max':
        return keras.layers.GlobalMaxPooling2D(name=name or 'global_max_pool')
    return keras.layers.GlobalAveragePooling2D(name=name or 'global_avg_pool')
