"""Backbone plug-ins.

Each choice is a module `nets/<name>.py` with one function

    body() -> keras.Model

that maps float RGB images of shape (B, H, W, 3) with values in [0, 255] to
pooled features of shape (B, F). The body does its own input preprocessing
(mean subtraction or scaling) and ends with global average pooling, so it
accepts any image size. Its layers are named after the variables of the
TF-slim network it follows, so that slim checkpoints can be mapped onto it.

A plug-in whose weights come from elsewhere (the Keras applications) may also
define `load_weights(body, path)`, which `--initial_checkpoint` then uses for
Keras weights files and for `imagenet`.

A plug-in whose last stage can run at stride 1 instead of 2 (BoT's "last
stride 1", which doubles the final feature map's size and keeps pretrained
weights usable) takes it as `body(last_stride=2)` and is listed in
`LAST_STRIDE_NETS`.

`_layers.py` and `_resnet_v1.py` are shared building blocks, not choices.
"""

NET_CHOICES = (
    'resnet_v1_50',
    'resnet_v1_101',
    'resnet_v1_152',
    'mobilenet_v1_1_224',
    'tiny',
    'lunet',
    'keras_resnet50',
    'keras_mobilenet_v2',
    'keras_mobilenet_v2_035',
)

LAST_STRIDE_NETS = ('resnet_v1_50', 'resnet_v1_101', 'resnet_v1_152', 'keras_resnet50')
