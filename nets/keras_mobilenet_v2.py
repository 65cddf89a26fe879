"""Keras' MobileNetV2 (`keras.applications`, width 1.0), inputs scaled to [-1, 1].

`--initial_checkpoint imagenet` downloads Keras' ImageNet weights (where the
network allows), or pass a local weights file of
`keras.applications.MobileNetV2(include_top=False)`. The other widths are
plug-ins of their own (`keras_mobilenet_v2_035`) built by `mobilenet_v2_body`.
"""

import keras

from triplet_reid.layers import fused_application, load_application_weights


def _application(alpha, weights=None):
    return keras.applications.MobileNetV2(include_top=False, weights=weights, alpha=alpha,
                                          input_shape=(None, None, 3), name='mobilenet_v2')


def mobilenet_v2_body(alpha, name):
    """The body of the width multiplier `alpha` (a width Keras has ImageNet weights for)."""
    images = keras.Input((None, None, 3), name='images')
    # keras.applications.mobilenet_v2.preprocess_input: x / 127.5 - 1.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name='scale')(images)
    x = fused_application(_application(alpha))(x)
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name=name)


def load_mobilenet_v2_weights(body, path, alpha):
    """Loads `path` (a Keras weights file, or `imagenet`) into the application."""
    load_application_weights(body, 'mobilenet_v2',
                             lambda weights: _application(alpha, weights), path)


def body():
    return mobilenet_v2_body(1.0, 'keras_mobilenet_v2')


def load_weights(body, path):
    """Loads `path` (a Keras weights file, or `imagenet`) into the application."""
    load_mobilenet_v2_weights(body, path, 1.0)
