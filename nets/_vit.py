"""The vision transformer (ViT) of TransReID and timm, as a body: shared by
`vit_small_16` and `vit_base_16`.

Images in [0, 255] are scaled to [-1, 1] (mean and std 0.5, TransReID's and
CLIP-ReID's inputs), cut into 16×16 patches every `patch_stride` pixels
(TransReID's overlapping patch embedding when the stride is below 16: a
16×16 convolution at that stride, without padding), given a class token and
learnt position embeddings, and passed through pre-norm transformer blocks
(multi-head self-attention and a GELU MLP, each added back through
stochastic depth); the class token's output, after a final layer norm, is
the feature, as TransReID's `forward_features` returns it.

The position embeddings are learnt for the grid of patches of the
experiment's input size; images of another size (embedding at another size,
or weights made for another grid) see them resized by bicubic interpolation,
computed as PyTorch's `F.interpolate(mode='bicubic', align_corners=False)`
(`resize_grid`), which timm uses. The layers are named after timm's and
TransReID's modules (`blocks_3_attn_qkv` for `blocks.3.attn.qkv`), so that
their state dicts map onto them (`models/vit_weights.py`).
"""

import keras
import numpy as np
import tensorflow as tf

from triplet_reid.nets import PATCH_SIZE

# timm's and TransReID's layer norm epsilon for ViTs, and CLIP's (PyTorch's default).
EPSILON = 1e-6
CLIP_EPSILON = 1e-5


def grid_size(input_size, patch_stride):
    """(rows, columns) of the patches of an image of `input_size` (height,
    width): those of a 16×16 convolution at `patch_stride`, without padding."""
    return tuple((side - PATCH_SIZE) // patch_stride + 1 for side in input_size)


def cubic_weights(out_size, in_size):
    """The (out_size, in_size) matrix of PyTorch's bicubic resampling along
    one axis (`align_corners=False`, a = -0.75, the taps beyond the edge
    clamped to it): row i holds the weights of the input samples that output
    sample i mixes. Sizes may be tensors, as in a model whose input size is
    known only when it runs (TensorFlow Lite's); float32 and the operations
    TensorFlow Lite has. The identity, exactly, when the sizes are equal."""
    a = -0.75
    out_size, in_size = tf.cast(out_size, tf.float32), tf.cast(in_size, tf.float32)
    source = (tf.range(out_size) + 0.5) * (in_size / out_size) - 0.5
    first = tf.floor(source)
    t = (source - first)[:, None]
    offsets = tf.constant([-1.0, 0.0, 1.0, 2.0])
    distance = tf.abs(t - offsets)
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    weights = tf.where(distance <= 1, near, far)
    taps = tf.clip_by_value(first[:, None] + offsets, 0, in_size - 1)
    columns = tf.one_hot(tf.cast(taps, tf.int32), tf.cast(in_size, tf.int32))
    return tf.reduce_sum(weights[..., None] * columns, axis=1)


def resize_grid(grid, size):
    """The position embeddings `grid` (h, w, D) resized to `size` (rows,
    columns), bicubically as PyTorch resizes them; `size` may be tensors."""
    grid = tf.convert_to_tensor(grid)
    h, w, dim = tf.shape(grid)[0], tf.shape(grid)[1], grid.shape[-1]
    rows = tf.cast(cubic_weights(size[0], h), grid.dtype)
    columns = tf.cast(cubic_weights(size[1], w), grid.dtype)
    # Rows, then columns, each as one matrix product.
    x = tf.matmul(rows, tf.reshape(grid, (h, -1)))
    x = tf.transpose(tf.reshape(x, (size[0], w, dim)), (1, 0, 2))
    x = tf.matmul(columns, tf.reshape(x, (w, -1)))
    return tf.transpose(tf.reshape(x, (size[1], size[0], dim)), (1, 0, 2))


class Tokens(keras.layers.Layer):
    """The patches' embeddings (B, h, w, D) as tokens (B, 1 + h·w, D): the
    class token first, then the patches row by row, each with its position
    embedding. `cls_token` (1, 1, D) and `pos_embed` (1, 1 + rows·columns, D)
    are timm's parameters of the same names, learnt for a `grid` of (rows,
    columns) patches and resized for another.

    With `cameras`, TransReID's side information embedding (SIE): a learnt
    embedding per camera, `sie_embed` (cameras, D), weighted by `weight` and
    added to every token (TransReID's) or, with `class_only`, to the class
    token alone (CLIP-ReID's); the layer then takes [patches, camera indices
    (B,)], and an index outside the table (-1: the camera is unknown) adds
    nothing."""

    def __init__(self, grid, cameras=0, weight=3.0, class_only=False, **kwargs):
        super().__init__(**kwargs)
        self.grid = tuple(grid)
        self.cameras, self.weight, self.class_only = cameras, weight, class_only

    def build(self, input_shape):
        dim = (input_shape[0] if self.cameras else input_shape)[-1]
        normal = keras.initializers.TruncatedNormal(stddev=0.02)
        self.cls_token = self.add_weight(shape=(1, 1, dim), initializer=normal,
                                         name='cls_token')
        self.pos_embed = self.add_weight(shape=(1, 1 + self.grid[0] * self.grid[1], dim),
                                         initializer=normal, name='pos_embed')
        if self.cameras:
            self.sie_embed = self.add_weight(shape=(self.cameras, dim), initializer=normal,
                                             name='sie_embed')

    def call(self, inputs):
        patches = inputs[0] if self.cameras else inputs
        batch, dim = tf.shape(patches)[0], patches.shape[-1]
        rows, columns = patches.shape[1], patches.shape[2]
        position = self.pos_embed[0, 1:]
        if (rows, columns) != self.grid:
            # Another input size than the one the embeddings were learnt for.
            size = tf.shape(patches)[1:3]
            position = tf.reshape(resize_grid(
                tf.reshape(position, (self.grid[0], self.grid[1], dim)), size), (-1, dim))
        tokens = tf.reshape(patches, (batch, -1, dim))
        cls = tf.tile(tf.cast(self.cls_token, tokens.dtype), (batch, 1, 1))
        position = tf.concat([self.pos_embed[0, :1], position], axis=0)
        tokens = tf.concat([cls, tokens], axis=1) + tf.cast(position, tokens.dtype)[None]
        if self.cameras:
            rows = tf.cast(self.camera_embeddings(inputs[1]), tokens.dtype)
            if self.class_only:
                rows *= tf.one_hot(0, tf.shape(tokens)[1], dtype=rows.dtype)[None, :, None]
            tokens += rows
        return tokens

    def camera_embeddings(self, cameras):
        """(B, 1, D): each image's weighted camera embedding, zero for an
        index outside the table."""
        cameras = tf.cast(tf.reshape(cameras, (-1,)), tf.int32)
        known = tf.logical_and(cameras >= 0, cameras < self.cameras)
        table = tf.concat([self.sie_embed, tf.zeros_like(self.sie_embed[:1])], axis=0)
        return self.weight * tf.gather(table, tf.where(known, cameras, self.cameras))[:, None]

    def compute_output_shape(self, input_shape):
        input_shape = input_shape[0] if self.cameras else input_shape
        rows, columns = input_shape[1], input_shape[2]
        count = None if rows is None or columns is None else 1 + rows * columns
        return (input_shape[0], count, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), 'grid': self.grid, 'cameras': self.cameras,
                'weight': self.weight, 'class_only': self.class_only}


class Attention(keras.layers.Layer):
    """Multi-head scaled dot-product attention over the tokens: (B, N, 3·D)
    queries, keys and values as timm's `qkv` layer gives them, to (B, N, D),
    before the output projection; with `class_only`, the class token's
    query alone, to (B, 1, D). Computed in float32."""

    def __init__(self, heads, class_only=False, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.class_only = heads, bool(class_only)

    def call(self, qkv):
        batch, count = tf.shape(qkv)[0], tf.shape(qkv)[1]
        dim = qkv.shape[-1] // 3
        qkv = tf.reshape(tf.cast(qkv, tf.float32), (batch, count, 3, self.heads,
                                                     dim // self.heads))
        q, k, v = tf.unstack(tf.transpose(qkv, (2, 0, 3, 1, 4)))
        if self.class_only:
            q, count = q[:, :, :1], 1
        # Scaling the queries, (B, heads, N, D / heads), costs less than
        # scaling the scores, (B, heads, N, N).
        scores = tf.matmul(q * (dim // self.heads) ** -0.5, k, transpose_b=True)
        out = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        out = tf.reshape(tf.transpose(out, (0, 2, 1, 3)), (batch, count, dim))
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1 if self.class_only else input_shape[1], input_shape[-1] // 3)

    def get_config(self):
        return {**super().get_config(), 'heads': self.heads, 'class_only': self.class_only}


class TokenDense(keras.layers.Dense):
    """Keras' `Dense` on tokens (B, N, D), computed as one matrix product of
    the B·N rows followed by its bias and activation, the pattern that
    TensorFlow's CPU kernels fuse into one (Keras' own multiplies a batch
    of matrices and adds the bias apart)."""

    def call(self, x):
        shape = tf.shape(x)
        y = tf.matmul(tf.reshape(x, (-1, x.shape[-1])), self.kernel)
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        if self.activation is not None:
            y = self.activation(y)
        return tf.reshape(y, tf.concat([shape[:-1], [self.units]], axis=0))


class DropPath(keras.layers.Layer):
    """Stochastic depth: in training, each sample's residual branch (B, …)
    is dropped with probability `rate` and the kept ones scaled by
    1 / (1 - rate), as timm's `DropPath`; the identity at inference."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0:
            return x
        keep = 1.0 - self.rate
        shape = tf.concat([tf.shape(x)[:1], tf.ones(tf.rank(x) - 1, tf.int32)], axis=0)
        mask = tf.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return x * tf.cast(mask / keep, x.dtype)

    def get_config(self):
        return {**super().get_config(), 'rate': self.rate}


def layer_norm(name, clip=False):
    """A layer norm with timm's epsilon, or CLIP's (PyTorch's default)."""
    return keras.layers.LayerNormalization(epsilon=CLIP_EPSILON if clip else EPSILON, name=name)


def quick_gelu(x):
    """CLIP's activation (OpenAI's models and CLIP-ReID's): x·σ(1.702·x)."""
    return x * tf.sigmoid(1.702 * x)


def gelu(x):
    """The exact GELU, x·Φ(x), as PyTorch's nn.GELU, written with erf, which
    ONNX has and TensorFlow Lite turns into its GELU (Keras' and
    TensorFlow's own use erfc, which neither has)."""
    return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))


def block(x, name, dim, heads, mlp_ratio, qkv_bias, drop_path, seed, clip=False,
          class_only=False):
    """One pre-norm transformer block of timm's ViT (tokens (B, N, D) in and
    out), its layers named `name` + timm's module names (`blocks_3_` +
    `attn_qkv`); with `clip`, CLIP's (its layer norms' epsilon and its
    activation). With `class_only`, the block's output for the class token
    alone, (B, 1, D): what the last block of a net whose feature is that
    token needs, at a fraction of the cost."""
    dense = keras.initializers.TruncatedNormal(stddev=0.02)
    y = layer_norm(name + 'norm1', clip)(x)
    y = TokenDense(3 * dim, use_bias=qkv_bias, kernel_initializer=dense,
                   name=name + 'attn_qkv')(y)
    y = Attention(heads, class_only, name=name + 'attn')(y)
    y = TokenDense(dim, kernel_initializer=dense, name=name + 'attn_proj')(y)
    if class_only:
        x = keras.layers.Lambda(lambda tokens: tokens[:, :1], name=name + 'class_token')(x)
    x = keras.layers.Add(name=name + 'add1')(
        [x, DropPath(drop_path, seed=2 * seed, name=name + 'drop_path1')(y)])
    y = layer_norm(name + 'norm2', clip)(x)
    y = TokenDense(int(dim * mlp_ratio), kernel_initializer=dense,
                   activation=quick_gelu if clip else gelu, name=name + 'mlp_fc1')(y)
    y = TokenDense(dim, kernel_initializer=dense, name=name + 'mlp_fc2')(y)
    return keras.layers.Add(name=name + 'add2')(
        [x, DropPath(drop_path, seed=2 * seed + 1, name=name + 'drop_path2')(y)])


def class_token(x, name):
    """(B, D): the class token of the tokens (B, N, D)."""
    return keras.layers.Lambda(lambda tokens: tokens[:, 0], name=name)(x)


class JigsawPatches(keras.layers.Layer):
    """TransReID's jigsaw patch module (`shuffle_unit` and the split of
    `build_transformer_local`): the patch tokens of (B, N, D) shifted by
    `shift`, shuffled in `groups` (2: the one count TransReID's code takes
    for any number of patches), cut into `parts` runs of (N - 1) // parts
    tokens, each after the class token: (B·parts, 1 + (N - 1) // parts, D),
    the images' parts in turn."""

    def __init__(self, parts, shift=5, groups=2, **kwargs):
        super().__init__(**kwargs)
        self.parts, self.shift, self.groups = parts, shift, groups

    def call(self, tokens):
        batch, count, dim = tf.shape(tokens)[0], tf.shape(tokens)[1], tokens.shape[-1]
        patches = count - 1
        shifted = tf.concat([tokens[:, self.shift:], tokens[:, 1:self.shift]], axis=1)
        # An odd number of patches repeats the last but one, as TransReID does.
        even = patches + tf.math.floormod(patches, self.groups)
        shifted = tf.concat([shifted, shifted[:, -2:-1]], axis=1)[:, :even]
        shuffled = tf.reshape(tf.transpose(tf.reshape(shifted, (batch, self.groups, -1, dim)),
                                           (0, 2, 1, 3)), (batch, -1, dim))
        length = patches // self.parts
        runs = tf.reshape(shuffled[:, :length * self.parts], (batch, self.parts, length, dim))
        token = tf.tile(tokens[:, None, :1], (1, self.parts, 1, 1))
        return tf.reshape(tf.concat([token, runs], axis=2), (batch * self.parts, -1, dim))

    def compute_output_shape(self, input_shape):
        count = input_shape[1]
        length = None if count is None else 1 + (count - 1) // self.parts
        batch = None if input_shape[0] is None else input_shape[0] * self.parts
        return (batch, length, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), 'parts': self.parts, 'shift': self.shift,
                'groups': self.groups}


def jpm_branches(x, parts, dim, heads, mlp_ratio, qkv_bias, drop_path, depth, clip=False):
    """TransReID's global branch `b1` and local branch `b2` (each a copy of
    the last block and the final norm) over the tokens (B, N, D) of the
    blocks before the last: (B, (1 + parts)·D), the global class token, then
    each part's, as they are (TransReID weighs the parts 1 / parts at test
    time, after the head; see `PartWeights`)."""
    args = (dim, heads, mlp_ratio, qkv_bias, drop_path)
    y = block(x, 'b1_0_', *args, seed=depth, clip=clip)
    features = [class_token(layer_norm('b1_1', clip)(y), 'class_token')]
    tokens = keras.Input((None, dim), name='part_tokens')
    y = block(tokens, 'b2_0_', *args, seed=depth + 1, clip=clip)
    y = layer_norm('b2_1', clip)(y)
    local = keras.Model(tokens, class_token(y, 'b2_class_token'), name='b2')
    runs = local(JigsawPatches(parts, name='jigsaw')(x))
    # (B·parts, D) to (B, parts·D), each image's parts in turn.
    features.append(keras.layers.Lambda(lambda x: tf.reshape(x, (-1, parts * dim)),
                                        output_shape=(parts * dim,), name='parts')(runs))
    return keras.layers.Concatenate(name='global_and_parts')(features)


class PartWeights(keras.layers.Layer):
    """TransReID's test-time weighting of a JPM embedding (B, (1 + parts)·D):
    the global part as it is, each local part divided by `parts`."""

    def __init__(self, parts, **kwargs):
        super().__init__(**kwargs)
        self.parts = parts

    def call(self, emb):
        dim = emb.shape[-1] // (1 + self.parts)
        weights = np.concatenate([np.ones(dim), np.full(self.parts * dim, 1.0 / self.parts)])
        return emb * tf.constant(weights, emb.dtype)

    def get_config(self):
        return {**super().get_config(), 'parts': self.parts}


def vit_body(name, dim, depth, heads, input_size=(256, 128), patch_stride=PATCH_SIZE,
             drop_path_rate=0.1, mlp_ratio=4.0, qkv_bias=True, jpm=0, clip=False, projection=0,
             sie=0, sie_weight=3.0):
    """A ViT body (see the module's docstring) of `depth` blocks of width
    `dim` with `heads` heads, its position embeddings learnt for images of
    `input_size` (height, width) cut every `patch_stride` pixels; the blocks'
    stochastic depth rises linearly from 0 to `drop_path_rate`, as timm's.
    With `jpm` parts, the last block and norm are TransReID's JPM branches
    (`jpm_branches`). With `clip`, the image encoder of CLIP (OpenAI's, as
    CLIP-ReID uses it): no bias in the patch embedding, a layer norm before
    the blocks (`norm_pre`), QuickGELU, and PyTorch's layer norm epsilon.
    With a `projection` width P, the class token is followed by itself
    projected (CLIP's projection to the text space, `proj`, without bias),
    as CLIP-ReID concatenates them; not with JPM. With `sie` cameras, the
    side information embedding of that many cameras weighted `sie_weight`
    (`Tokens`), on every token, or on the class token of CLIP's encoder as
    CLIP-ReID adds it.

    Returns:
        A keras.Model from images (B, H, W, 3) in [0, 255] (with `sie`, from
        {'images': those, 'cameras': (B,) int32 indices}) to (B, dim), or
        (B, (1 + jpm)·dim) with JPM, or (B, dim + P) with a projection.
    """
    images = keras.Input((None, None, 3), name='images')
    cameras = keras.Input((), dtype='int32', name='cameras') if sie else None
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name='scale')(images)
    # TransReID's overlapping patches start as its PatchEmbed_overlap does:
    # normal with std √(2 / (16·16·D)).
    x = keras.layers.Conv2D(
        dim, PATCH_SIZE, strides=patch_stride, padding='valid', name='patch_embed_proj',
        use_bias=not clip, kernel_initializer=keras.initializers.RandomNormal(
            stddev=float(np.sqrt(2.0 / (PATCH_SIZE * PATCH_SIZE * dim)))))(x)
    tokens = Tokens(grid_size(input_size, patch_stride), sie, sie_weight, class_only=clip,
                    name='tokens')
    x = tokens([x, cameras]) if sie else tokens(x)
    if clip:
        x = layer_norm('norm_pre', clip)(x)
    rates = [float(rate) for rate in np.linspace(0, drop_path_rate, depth)]
    for index in range(depth - 1 if jpm else depth):
        # Without JPM the feature is the class token's, which the last block
        # computes alone.
        x = block(x, 'blocks_{}_'.format(index), dim, heads, mlp_ratio, qkv_bias, rates[index],
                  seed=index, clip=clip, class_only=not jpm and index == depth - 1)
    if jpm:
        features = jpm_branches(x, jpm, dim, heads, mlp_ratio, qkv_bias, rates[-1], depth,
                                clip)
    else:
        x = layer_norm('norm', clip)(x)
        features = class_token(x, 'class_token')
        if projection:
            projected = keras.layers.Dense(projection, use_bias=False, name='proj')(features)
            features = keras.layers.Concatenate(name='features')([features, projected])
    inputs = {'images': images, 'cameras': cameras} if sie else images
    return keras.Model(inputs, features, name=name)
