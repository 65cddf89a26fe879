"""Keras' MobileNetV2 at width 0.35 (`keras.applications.MobileNetV2(alpha=0.35)`),
inputs scaled to [-1, 1]: 0.41 M body weights and 1280 features, the smallest
ImageNet-pretrained body here, quick enough to fine-tune on a CPU.

`--initial_checkpoint imagenet` downloads Keras' ImageNet weights for this
width (where the network allows), or pass a local weights file of
`keras.applications.MobileNetV2(alpha=0.35, include_top=False)`, such as the
one `python -m bench.tfjs_weights` makes from a TF.js export of that network.
"""

from triplet_reid.nets.keras_mobilenet_v2 import load_mobilenet_v2_weights, mobilenet_v2_body

ALPHA = 0.35


def body():
    return mobilenet_v2_body(ALPHA, 'keras_mobilenet_v2_035')


def load_weights(body, path):
    """Loads `path` (a Keras weights file, or `imagenet`) into the application."""
    load_mobilenet_v2_weights(body, path, ALPHA)
