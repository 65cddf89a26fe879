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

A plug-in whose strided layers can pad either as PyTorch does (on every
side alike) or as Keras' 'same' does takes it as `body(padding='torch')` (or
'keras') and is listed in `PADDING_NETS`; the other nets pad as the
reference they follow does.

`_resnet_v1.py`, `_osnet.py` and `_fastreid.py` are shared building blocks, not choices;
the layers that nets and heads share are in the top-level `layers.py`.
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
    'osnet',
    'osnet_x0_75',
    'osnet_x0_5',
    'osnet_x0_25',
    'osnet_ain',
    'osnet_ain_x0_75',
    'osnet_ain_x0_5',
    'osnet_ain_x0_25',
    'osnet_ibn',
    'fastreid_r50',
    'fastreid_r50_nl',
    'fastreid_r50_ibn',
    'fastreid_r50_ibn_nl',
    'fastreid_r101',
    'fastreid_r101_nl',
    'fastreid_r101_ibn',
    'fastreid_r101_ibn_nl',
    'torchreid_resnet50',
)

# fast-reid's ResNets, which its configs name by depth, IBN and non-local blocks.
FASTREID_NETS = tuple(name for name in NET_CHOICES if name.startswith('fastreid_'))

LAST_STRIDE_NETS = ('resnet_v1_50', 'resnet_v1_101', 'resnet_v1_152',
                    'keras_resnet50', 'torchreid_resnet50') + FASTREID_NETS

PADDING_NETS = ('osnet', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25', 'osnet_ain', 'osnet_ain_x0_75',
                'osnet_ain_x0_5', 'osnet_ain_x0_25', 'osnet_ibn')

PADDINGS = ('torch', 'keras')


def check_last_stride(name, last_stride):
    """Refuses a last stride other than 2 for a net that cannot take it.

    Raises:
        cli.UserError naming the nets that can.
    """
    from triplet_reid import cli
    if last_stride != 2 and name not in LAST_STRIDE_NETS:
        raise cli.UserError('--last_stride {} works with the nets {}, not with `{}`.'.format(
            last_stride, ', '.join(LAST_STRIDE_NETS), name))


def load(name, last_stride=2, padding='torch'):
    """The body of the net `name` (see the contract above), with its last
    stage at `last_stride` and, for `PADDING_NETS`, its strided layers
    padding as `padding` says (one of `PADDINGS`; other nets ignore it).

    Raises:
        cli.UserError for a last stride the net cannot take.
    """
    from importlib import import_module
    check_last_stride(name, last_stride)
    net = import_module('triplet_reid.nets.' + name)
    if name in PADDING_NETS:
        return net.body(padding=padding)
    return net.body(last_stride=last_stride) if last_stride != 2 else net.body()
