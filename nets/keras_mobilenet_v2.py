"""Keras' MobileNetV2 (`keras.applications`, width 1.0), inputs scaled to [-1, 1].

`--initial_checkpoint imagenet` downloads Keras' ImageNet weights (where the
network allows), or pass a local weights file of
`keras.applications.MobileNetV2(include_top=False)`.
"""

import keras

from nets._layers import load_application_weights


def _application(weights=None):
    return keras.applications.MobileNetV2(include_top=False, weights=weights,
                                          input_shape=(None, None, 3), name='mobilenet_v2')


def body():
    images = keras.Input((None, None, 3), name='images')
    # keras.applications.mobilenet_v2.preprocess_input: x / 127.5 - 1.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name='scale')(images)
    x = _application()(x)
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name='keras_mobilenet_v2')


def load_weights(body, path):
    """Loads `path` (a Keras weights file, or `imagenet`) into the application."""
    load_application_weights(body, 'mobilenet_v2', _application, path)
