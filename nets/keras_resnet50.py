"""Keras' own ResNet50 (`keras.applications`), with its caffe-style preprocessing.

Not the slim ResNet: its stride sits in the first unit of each block and its
convolutions have biases. Its ImageNet weights come from Keras:
`--initial_checkpoint imagenet` downloads them (where the network allows), or
pass a local weights file of `keras.applications.ResNet50(include_top=False)`.
"""

import keras

from triplet_reid.layers import fused_application, load_application_weights

# keras.applications.resnet50.preprocess_input: RGB to BGR, then this BGR mean.
BGR_MEAN = (103.939, 116.779, 123.68)


# The two convolutions that enter the last stage with stride 2.
LAST_STAGE_STRIDED = ('conv5_block1_0_conv', 'conv5_block1_1_conv')


def _application(weights=None, last_stride=2):
    application = keras.applications.ResNet50(include_top=False, weights=weights,
                                              input_shape=(None, None, 3), name='resnet50')
    if last_stride == 2:
        return application
    # The same layers with the last stage's stride changed; the weights keep their shapes.
    config = application.get_config()
    for layer in config['layers']:
        if layer['config']['name'] in LAST_STAGE_STRIDED:
            layer['config']['strides'] = (last_stride, last_stride)
    changed = keras.Model.from_config(config)
    changed.set_weights(application.get_weights())
    return changed


def body(last_stride=2):
    images = keras.Input((None, None, 3), name='images')
    bgr = keras.layers.Lambda(lambda x: x[..., ::-1], name='rgb_to_bgr')(images)
    x = keras.layers.Rescaling(1.0, offset=[-m for m in BGR_MEAN], name='mean_subtraction')(bgr)
    x = fused_application(_application(last_stride=last_stride))(x)
    features = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
    return keras.Model(images, features, name='keras_resnet50')


def load_weights(body, path):
    """Loads `path` (a Keras weights file, or `imagenet`) into the application."""
    load_application_weights(body, 'resnet50', _application, path)
