"""NumPy references of the vision transformers, shared by the tests of the
nets (test_vit.py) and of the peers' imports (test_transreid.py,
test_clipreid.py): random state dicts by timm's and CLIP's names, and a ViT
computed from timm's definition."""

import collections
import math

import numpy as np

# A small ViT, cheap to build: width 48, 3 heads, 2 blocks.
DIM, HEADS, DEPTH = 48, 3, 2


def timm_state(rng, dim=DIM, depth=DEPTH, grid=(4, 2), mlp=4):
    """A random state dict of timm's ViT names and shapes, with non-trivial
    norms, for a body of `grid` patches."""
    state = collections.OrderedDict()
    state['cls_token'] = rng.normal(0, 0.5, (1, 1, dim))
    state['pos_embed'] = rng.normal(0, 0.5, (1, 1 + grid[0] * grid[1], dim))
    state['patch_embed.proj.weight'] = rng.normal(0, 0.05, (dim, 3, 16, 16))
    state['patch_embed.proj.bias'] = rng.normal(0, 0.1, dim)
    for i in range(depth):
        block = 'blocks.{}.'.format(i)
        for norm in ('norm1', 'norm2'):
            state[block + norm + '.weight'] = rng.uniform(0.5, 1.5, dim)
            state[block + norm + '.bias'] = rng.normal(0, 0.1, dim)
        for name, shape in (('attn.qkv', (3 * dim, dim)), ('attn.proj', (dim, dim)),
                            ('mlp.fc1', (mlp * dim, dim)), ('mlp.fc2', (dim, mlp * dim))):
            state[block + name + '.weight'] = rng.normal(0, 1 / math.sqrt(shape[1]), shape)
            state[block + name + '.bias'] = rng.normal(0, 0.1, shape[0])
    state['norm.weight'] = rng.uniform(0.5, 1.5, dim)
    state['norm.bias'] = rng.normal(0, 0.1, dim)
    state['head.weight'] = rng.normal(0, 0.1, (10, dim))
    state['head.bias'] = np.zeros(10)
    return collections.OrderedDict((k, v.astype(np.float32)) for k, v in state.items())


def layer_norm(x, weight, bias, epsilon=1e-6):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * weight + bias


def numpy_vit(state, images, stride=16, heads=HEADS, clip=False, cameras=None):
    """timm's VisionTransformer.forward_features()[:, 0] in NumPy, in float64:
    images (B, H, W, 3) in [0, 255] to (B, D); with `clip`, CLIP's image
    encoder (its `ln_pre` as timm's `norm_pre`, QuickGELU, epsilon 1e-5) up
    to its last norm. `cameras` (B, D) are the images' weighted camera
    embeddings (SIE), added to every token as TransReID adds them, or with
    `clip` to the class token as CLIP-ReID does."""
    epsilon = 1e-5 if clip else 1e-6

    def layer_norm(x, weight, bias):
        return globals()['layer_norm'](x, weight, bias, epsilon)
    s = {k: v.astype(np.float64) for k, v in state.items()}
    x = images.astype(np.float64) / 127.5 - 1
    kernel = s['patch_embed.proj.weight']
    rows = (x.shape[1] - 16) // stride + 1
    cols = (x.shape[2] - 16) // stride + 1
    patches = np.stack([np.stack([x[:, r * stride:r * stride + 16, c * stride:c * stride + 16]
                                  for c in range(cols)], 1) for r in range(rows)], 1)
    tokens = np.einsum('brcijk,dkij->brcd', patches, kernel) + s.get('patch_embed.proj.bias', 0)
    tokens = tokens.reshape(len(x), rows * cols, -1)
    cls = np.repeat(s['cls_token'], len(x), 0)
    x = np.concatenate([cls, tokens], 1) + s['pos_embed']
    if cameras is not None and clip:
        x[:, 0] += cameras
    elif cameras is not None:
        x += cameras[:, None]
    if clip:
        x = layer_norm(x, s['norm_pre.weight'], s['norm_pre.bias'])
    b, n, d = x.shape
    for i in range(sum(1 for k in s if k.endswith('.attn.qkv.weight'))):
        p = 'blocks.{}.'.format(i)
        y = layer_norm(x, s[p + 'norm1.weight'], s[p + 'norm1.bias'])
        qkv = (y @ s[p + 'attn.qkv.weight'].T + s[p + 'attn.qkv.bias']).reshape(
            b, n, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) * (d // heads) ** -0.5
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        y = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(b, n, d)
        x = x + y @ s[p + 'attn.proj.weight'].T + s[p + 'attn.proj.bias']
        y = layer_norm(x, s[p + 'norm2.weight'], s[p + 'norm2.bias'])
        y = y @ s[p + 'mlp.fc1.weight'].T + s[p + 'mlp.fc1.bias']
        if clip:
            y = y / (1 + np.exp(-1.702 * y))
        else:
            y = 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
        x = x + y @ s[p + 'mlp.fc2.weight'].T + s[p + 'mlp.fc2.bias']
    return layer_norm(x, s['norm.weight'], s['norm.bias'])[:, 0]


def openai_clip_state(timm, rng):
    """A whole CLIP's state dict by OpenAI's and open_clip's names (its image
    encoder under `visual.`, a text tower beside it) of the image encoder
    `timm` (timm's names, with `norm_pre`)."""
    state = {'visual.class_embedding': timm['cls_token'].reshape(-1),
             'visual.positional_embedding': timm['pos_embed'][0],
             'visual.conv1.weight': timm['patch_embed.proj.weight'],
             'visual.proj': rng.normal(size=(DIM, 16)).astype(np.float32),
             'positional_embedding': rng.normal(size=(77, DIM)).astype(np.float32),
             'transformer.resblocks.0.ln_1.weight': np.ones(DIM, np.float32),
             'text_projection': rng.normal(size=(DIM, 16)).astype(np.float32)}
    names = {'norm1': 'ln_1', 'norm2': 'ln_2', 'attn.qkv': 'attn.in_proj_',
             'attn.proj': 'attn.out_proj', 'mlp.fc1': 'mlp.c_fc', 'mlp.fc2': 'mlp.c_proj'}
    for key, value in timm.items():
        if key.startswith('blocks.'):
            _, index, rest = key.split('.', 2)
            module, part = rest.rsplit('.', 1)
            name = names[module]
            key = 'transformer.resblocks.{}.{}'.format(index, name + part if name.endswith(
                '_') else name + '.' + part)
        elif key.startswith(('norm.', 'norm_pre.')):
            key = key.replace('norm_pre.', 'ln_pre.').replace('norm.', 'ln_post.')
        else:
            continue
        state['visual.' + key] = value
    return state
