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

A vision transformer (`TRANSFORMER_NETS`) learns position embeddings for
the grid of patches of the experiment's input size, cut every
`--patch_stride` pixels, and drops residual branches in training
(`--drop_path_rate`): it takes `body(input_size, patch_stride,
drop_path_rate, jpm, sie, sie_weight)`. Its feature is the class token's,
so it pools only as `avg` says (the class token) and keeps its last stride.
With `sie` cameras (TransReID's side information embedding) its input is
{'images': (B, H, W, 3), 'cameras': (B,) int32}.

A net of several branches, each with its own heads that pool parts of
its feature maps (fast-reid's MGN: `POOLING_NETS`), pools as the model's
`pooling` says inside itself: it takes `body(last_stride=2, pooling='avg')`
and returns the joined features of its heads.

`_resnet_v1.py`, `_osnet.py`, `_fastreid.py` and `_vit.py` are shared building blocks, not choices;
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
    'fastreid_s50',
    'fastreid_mgn_r50',
    'fastreid_mgn_r50_ibn',
    'torchreid_resnet50',
    'vit_small_16',
    'vit_base_16',
    'clip_vit_base_16',
    'clipreid_vit_base_16',
)

# fast-reid's ResNets, which its configs name by depth, IBN and non-local blocks, and its
# ResNeSt-50.
FASTREID_NETS = tuple(name for name in NET_CHOICES if name.startswith('fastreid_'))

LAST_STRIDE_NETS = ('resnet_v1_50', 'resnet_v1_101', 'resnet_v1_152',
                    'keras_resnet50', 'torchreid_resnet50') + FASTREID_NETS

# The nets that pool inside themselves, each head its part of the feature
# maps (see above), and the stripes of each of MGN's branches.
POOLING_NETS = ('fastreid_mgn_r50', 'fastreid_mgn_r50_ibn')

PADDING_NETS = ('osnet', 'osnet_x0_75', 'osnet_x0_5', 'osnet_x0_25', 'osnet_ain', 'osnet_ain_x0_75',
                'osnet_ain_x0_5', 'osnet_ain_x0_25', 'osnet_ibn')

PADDINGS = ('torch', 'keras')

TRANSFORMER_NETS = ('vit_small_16', 'vit_base_16', 'clip_vit_base_16', 'clipreid_vit_base_16')

# Their widths: the size of each token's features.
TRANSFORMER_WIDTHS = {'vit_small_16': 384, 'vit_base_16': 768, 'clip_vit_base_16': 768,
                      'clipreid_vit_base_16': 768}

# The transformers of CLIP's image encoder, which CLIP's files initialise.
CLIP_NETS = ('clip_vit_base_16', 'clipreid_vit_base_16')

# The transformer whose feature adds CLIP's projection of its class token
# (1280 values), which JPM's parts would lack.
PROJECTED_NETS = ('clipreid_vit_base_16',)

# The heads that keep the parts of a JPM transformer's features apart, each
# part with its own losses.
JPM_HEADS = ('bnneck', 'pooled')

# A transformer's patch size, and the most tokens it attends over: each
# image's attention holds tokens² weights a head (TransReID's stride 12 at
# 384×128 has 311 tokens).
PATCH_SIZE = 16
MAX_TOKENS = 4096

# TransReID's jigsaw patch module (--jpm) shifts the patches by this many
# before shuffling them.
JPM_SHIFT = 5

# MGN (Wang et al. 2018, "Learning Discriminative Features with Multiple
# Granularities"), fast-reid's `MGN` meta architecture (`nets/_fastreid.py`): a ResNet-50 trunk to
# the first block of its third stage, then three branches, each a copy of the
# rest (stage 3's other blocks and a stage 4): the global branch's stage 4 at
# the last stride, the part branches' at stride 1. Each branch has a head on
# its whole feature map, and the second and third one on each of 2 and 3
# horizontal stripes as `torch.chunk` cuts them.
MGN_PARTS = (1, 2, 3)

# The width of each head's reduction (fast-reid's MGN configs' EMBEDDING_DIM),
# and so of each of its eight features.
MGN_REDUCTION = 256

# The order of the heads in MGN's test feature (fast-reid's `pred_feat`):
# each branch's whole map, then the stripes.
MGN_HEADS = ('b1', 'b2', 'b3', 'b21', 'b22', 'b31', 'b32', 'b33')


# The most cameras a side information embedding (--sie) learns one row
# for: real camera networks have tens (MSMT17: 15), and a camera regex that
# finds something else (a frame number) would make a table of thousands.
MAX_SIE_CAMERAS = 1000


def check_last_stride(name, last_stride):
    """Refuses a last stride other than 2 for a net that cannot take it.

    Raises:
        cli.UserError naming the nets that can.
    """
    from triplet_reid import cli
    if last_stride != 2 and name not in LAST_STRIDE_NETS:
        raise cli.UserError('--last_stride {} works with the nets {}, not with `{}`.'.format(
            last_stride, ', '.join(LAST_STRIDE_NETS), name))


def mgn_rows(height):
    """The rows of MGN's part branches' feature maps for images `height`
    pixels high: the stem's convolution and max-pool (rounding up) and the
    first blocks of stages 2 and 3 each halve them."""
    rows = (height - 1) // 2 + 1
    rows = (rows - 2) // 2 + 1
    for _ in range(2):
        rows = (rows - 1) // 2 + 1
    return rows


def chunks_fill(rows, parts):
    """Whether `torch.chunk` cuts `rows` into `parts` stripes (of ceil(rows /
    parts) rows): 4 rows make only 2 stripes of 2, and MGN's thirds need 3."""
    return (parts - 1) * -(-rows // parts) < rows


def check_stripes(name, input_size):
    """Refuses an input size whose feature maps MGN cannot cut into its
    stripes (thirds of 4 rows are 2 stripes, as `torch.chunk` cuts them).

    Raises:
        cli.UserError naming the height that fits.
    """
    from triplet_reid import cli
    if name not in POOLING_NETS:
        return
    if not all(chunks_fill(mgn_rows(input_size[0]), parts) for parts in MGN_PARTS):
        fits = next(height for height in range(input_size[0], 10 ** 6)
                    if all(chunks_fill(mgn_rows(height), parts) for parts in MGN_PARTS))
        raise cli.UserError('the net input height {} gives `{}` feature maps of {} rows, '
                            'which its branches cannot cut into {} stripes; give a '
                            '--net_input_height such as {} (fast-reid\'s MGN: 384).'.format(
                                input_size[0], name, mgn_rows(input_size[0]),
                                ' and '.join(str(p) for p in MGN_PARTS[1:]), fits))


def check_transformer(name, pooling='avg', input_size=(256, 128), patch_stride=16, jpm=0,
                      sie=0):
    """Refuses what the transformer `name` cannot take: another pooling than
    its class token, a patch stride beyond the patch, an input smaller than
    a patch or cut into more than `MAX_TOKENS` tokens, more JPM parts than
    its patches fill (each part takes one at least, after TransReID's shift
    of `JPM_SHIFT`), a camera embedding (`sie` cameras) of more than
    `MAX_SIE_CAMERAS`. Other nets pass, but for JPM and SIE, which they
    cannot take.

    Raises:
        cli.UserError naming the flag and what would fit.
    """
    from triplet_reid import cli
    if name not in TRANSFORMER_NETS:
        if jpm or sie:
            what = ('--jpm cuts a vision transformer\'s tokens into parts' if jpm else
                    '--sie adds each camera\'s embedding to a vision transformer\'s tokens')
            raise cli.UserError('{}; `{}` has none: use it with {}.'.format(
                what, name, ', '.join(TRANSFORMER_NETS)))
        return
    if not 0 <= sie <= MAX_SIE_CAMERAS:
        raise cli.UserError('--sie learns an embedding per camera, and the cameras found number '
                            '{}, more than the {} it takes; check that --camera_regex\'s first '
                            'group (or the `camera` column) is the camera alone.'.format(
                                sie, MAX_SIE_CAMERAS))
    if jpm and name in PROJECTED_NETS:
        raise cli.UserError('--jpm cuts the tokens of a transformer into parts, which `{}` '
                            'would have to project as it projects its class token; use '
                            'clip_vit_base_16 for JPM on CLIP\'s image encoder.'.format(name))
    if pooling != 'avg':
        raise cli.UserError('`{}` takes its class token as the feature; --pooling {} pools a '
                            'CNN\'s feature map, so leave it at avg.'.format(name, pooling))
    if not isinstance(patch_stride, int) or not 1 <= patch_stride <= PATCH_SIZE:
        raise cli.UserError('--patch_stride `{}` does not fit `{}`: it takes a whole number '
                            'of pixels from 1 to its patch size, {}.'.format(
                                patch_stride, name, PATCH_SIZE))
    if min(input_size) < PATCH_SIZE:
        raise cli.UserError('the net input size {}x{} is smaller than one {}×{} patch of `{}`; '
                            'give --net_input_height and --net_input_width of at least '
                            '{}.'.format(*input_size, PATCH_SIZE, PATCH_SIZE, name, PATCH_SIZE))
    rows, columns = ((side - PATCH_SIZE) // patch_stride + 1 for side in input_size)
    if rows * columns > MAX_TOKENS:
        raise cli.UserError('--patch_stride {} cuts {}x{} images into {}×{} = {} patches, more '
                            'than the {} a transformer here attends over; use a larger stride '
                            '(TransReID: 12 or 16) or a smaller input.'.format(
                                patch_stride, *input_size, rows, columns, rows * columns,
                                MAX_TOKENS))
    if jpm and (not isinstance(jpm, int) or jpm < 0 or rows * columns < max(jpm, JPM_SHIFT)):
        raise cli.UserError('--jpm {} does not fit {}x{} images cut every {} pixels: their {} '
                            'patches fill at most {} parts (at least {} patches in all, for '
                            'TransReID\'s shift); use fewer parts (TransReID: 4), a smaller '
                            'stride or a larger input.'.format(
                                jpm, *input_size, patch_stride, rows * columns,
                                rows * columns, JPM_SHIFT))


def check_jpm_head(name, head_name, embedding_dim, jpm):
    """Refuses, for a transformer with `jpm` parts, a head that would mix the
    parts of its features (the global class token's, then each part's).

    Raises:
        cli.UserError naming the heads and the embedding size that fit.
    """
    from triplet_reid import cli
    if not jpm or name not in TRANSFORMER_NETS:
        return
    width = (1 + jpm) * TRANSFORMER_WIDTHS[name]
    if head_name not in JPM_HEADS or embedding_dim != width:
        raise cli.UserError(
            '--jpm {} embeds the global class token and {} parts of `{}`, {}×{} = {} values, '
            'each part with its own losses: give --head_name bnneck (TransReID\'s) or pooled '
            'with --embedding_dim {}.'.format(jpm, jpm, name, 1 + jpm,
                                              TRANSFORMER_WIDTHS[name], width, width))


def load(name, last_stride=2, padding='torch', input_size=(256, 128), patch_stride=16,
         drop_path_rate=0.1, jpm=0, sie=0, sie_weight=3.0, pooling='avg'):
    """The body of the net `name` (see the contract above), with its last
    stage at `last_stride` and, for `PADDING_NETS`, its strided layers
    padding as `padding` says (one of `PADDINGS`; other nets ignore it); a
    transformer's embeddings learnt for `input_size` (height, width) cut
    every `patch_stride` pixels, with stochastic depth up to `drop_path_rate`
    and `jpm` parts of TransReID's jigsaw patch module (0: none), and a
    side information embedding of `sie` cameras weighted `sie_weight` (0
    cameras: none). `pooling`
    is the model's (`flags.POOLINGS`), which replaces the body's own; a
    transformer takes only its class token.

    Raises:
        cli.UserError for a last stride, or anything of `check_transformer`,
        that the net cannot take.
    """
    from importlib import import_module
    check_last_stride(name, last_stride)
    check_transformer(name, pooling, input_size, patch_stride, jpm, sie)
    check_stripes(name, input_size)
    net = import_module('triplet_reid.nets.' + name)
    if name in POOLING_NETS:
        return net.body(last_stride=last_stride, pooling=pooling)
    if name in TRANSFORMER_NETS:
        return net.body(tuple(input_size), patch_stride, drop_path_rate, jpm, sie, sie_weight)
    if name in PADDING_NETS:
        return net.body(padding=padding)
    return net.body(last_stride=last_stride) if last_stride != 2 else net.body()
