"""Vision transformer weights from the files users have, read as data: the
state dicts of timm's and DeiT's ViTs (and TransReID's backbones, which are
timm's), `.pth` through the restricted reader of `models/torch_weights.py`
and `.safetensors` through the safetensors library (which bounds its header
and checks every tensor against the file before reading it), mapped onto
the layers of `nets/_vit.py`.

The position embeddings of a file made for another grid of patches (timm's
14×14 at 224×224) are resized to the body's grid bicubically, as timm does;
a distilled DeiT's distillation token is left out, as TransReID leaves it.
"""

import math
import os

import numpy as np

from triplet_reid.cli import UserError
from triplet_reid.models import torch_weights
from triplet_reid.storage import files

# The largest weights file believed: ViT-L/16 is 1.2 GB in float32.
MAX_FILE_BYTES = 4 << 30

# What a ViT file holds beside the body: its classifiers (timm's `head`,
# DeiT's distilled `head_dist`, TransReID's backbone's `fc`) and, in DeiT's
# distilled files, the distillation token.
IGNORED = ('head.', 'head_dist.', 'dist_token', 'pre_logits.', 'fc.')


def read_safetensors(path):
    """The tensors of a `.safetensors` file as float32 NumPy arrays by name.

    Raises:
        UserError naming the file when it is no readable safetensors file.
    """
    import safetensors
    files.check_regular(path, 'the weights', 'pass a .safetensors file')
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise UserError('`{}` holds {:,} bytes, more than any vision transformer this project '
                        'builds ({:,} at most).'.format(path, size, MAX_FILE_BYTES))
    try:
        with safetensors.safe_open(path, framework='numpy') as f:
            return {key: np.asarray(f.get_tensor(key), np.float32) for key in f.keys()}
    except (safetensors.SafetensorError, OSError, ValueError, TypeError) as e:
        raise UserError('`{}` is not a readable safetensors file ({}); is it damaged or '
                        'truncated?'.format(path, str(e).splitlines()[0][:200]))


def read_weights(path):
    """The state dict of a `.safetensors` file or of a PyTorch file."""
    if path.endswith('.safetensors'):
        return read_safetensors(path)
    return torch_weights.read_state_dict(path)


def patch_count(pos_embed, path):
    """The number of patches n whose embeddings timm's `pos_embed` (1, 1 + n,
    D) holds.

    Raises:
        UserError for an array of another shape.
    """
    shape = np.shape(pos_embed)
    if len(shape) != 3 or shape[0] != 1 or shape[1] < 2:
        raise UserError('`{}` holds position embeddings of shape {}, where a ViT holds (1, 1 + '
                        'patches, width); is it the state dict of a ViT?'.format(path, shape))
    return shape[1] - 1


def check_config_grid(pos_embed, experiment, path, config):
    """Refuses a peer's checkpoint `path` whose position embeddings (timm's
    `pos_embed`, None when missing) are not of the grid that its `config`
    makes at the `experiment`'s input size and patch stride, before
    anything is built.

    Raises:
        UserError naming the file, the config and the grid.
    """
    from triplet_reid.nets._vit import grid_size
    if pos_embed is None:
        raise UserError('`{}` lacks its position embeddings; is it the checkpoint of `{}`?'
                        .format(path, config))
    grid = grid_size(experiment.net_input_size, experiment.patch_stride)
    count = patch_count(pos_embed, path)
    if count != grid[0] * grid[1]:
        raise UserError('`{}` holds position embeddings for {} patches, but `{}` makes a {}×{} '
                        'grid of them; is it the checkpoint of this config?'.format(
                            path, count, config, *grid))


def position_embeddings(pos_embed, grid, path):
    """timm's `pos_embed` (1, 1 + n, D) for the body's `grid` (rows,
    columns): as it is when it has the grid's patches, else its square grid
    of n patches resized.

    Raises:
        UserError when the embeddings are of another shape, or of no square
        grid and not of this one.
    """
    count = patch_count(pos_embed, path)
    if count == grid[0] * grid[1]:
        return pos_embed
    from triplet_reid.nets._vit import resize_grid
    side = math.isqrt(count)
    if side * side != count:
        raise UserError('`{}` holds position embeddings for {} patches, which is neither the '
                        '{}×{} grid of this input size and --patch_stride nor a square grid to '
                        'resize; give the input size and stride the file was trained '
                        'with.'.format(path, count, grid[0], grid[1]))
    resized = resize_grid(pos_embed[0, 1:].reshape(side, side, -1), grid).numpy()
    return np.concatenate([pos_embed[:, :1], resized.reshape(1, -1, pos_embed.shape[-1])], 1)


def body_state(state, path):
    """The tensors of a timm ViT state dict that a body holds, by timm's
    names: without the classifiers, the distillation token taken out of the
    position embeddings."""
    state = dict(state)
    if 'dist_token' in state and 'pos_embed' in state:
        patch_count(state['pos_embed'], path)
        state['pos_embed'] = np.concatenate([state['pos_embed'][:, :1],
                                             state['pos_embed'][:, 2:]], 1)
    return {key: value for key, value in state.items() if not key.startswith(IGNORED)}


def assign_vit(body, state, path, source, pretrained=False):
    """Sets every weight of the ViT `body` from `state`, a dict of timm's
    names to arrays (`source` names what made it, for messages). A
    `pretrained` file (ImageNet's, CLIP's) has no camera embedding: a body
    with one keeps its own, as TransReID starts it from ImageNet weights.

    Raises:
        UserError naming the first tensor that is missing, left over or of
        another shape.
    """
    state = dict(state)
    tokens = body.get_layer('tokens')
    for key in ('cls_token', 'pos_embed'):
        if key not in state:
            raise UserError('`{}` lacks `{}`; is it a state dict of {}?'.format(
                path, key, source))
    cls_token = state.pop('cls_token')
    pos_embed = position_embeddings(state.pop('pos_embed'), tokens.grid, path)
    for array, weight in zip((cls_token, pos_embed), tokens.weights):
        if array.shape != tuple(weight.shape):
            raise UserError('`{}` holds token embeddings of shape {}, but `{}` takes {}; is it '
                            'another width of ViT?'.format(path, array.shape, body.name,
                                                           tuple(weight.shape)))
    weights = [cls_token, pos_embed]
    sie = state.pop('sie_embed', None)
    if tokens.cameras and sie is None and pretrained:
        weights.append(tokens.sie_embed.numpy())
    elif tokens.cameras:
        dim = pos_embed.shape[-1]
        if sie is None or np.size(sie) != tokens.cameras * dim:
            raise UserError('`{}` holds {}, where `{}` takes a camera embedding of {} cameras '
                            'of width {}; is it another model?'.format(
                                path, 'no camera embedding' if sie is None else
                                'a camera embedding of shape {}'.format(np.shape(sie)),
                                body.name, tokens.cameras, dim))
        weights.append(np.asarray(sie, np.float32).reshape(tokens.cameras, dim))
    elif sie is not None:
        raise UserError('`{}` holds a camera embedding (SIE) of shape {}, which `{}` has none '
                        'of; import it with the config that turns it on (SIE_CAMERA).'.format(
                            path, np.shape(sie), body.name))
    tokens.set_weights(weights)
    modules = {}
    for key, array in state.items():
        module, _, part = key.rpartition('.')
        modules.setdefault(module, {})[part] = array
    for layer in leaf_layers(body):
        if not layer.weights or layer is tokens:
            continue
        module = layer.name.replace('_', '.').replace('patch.embed', 'patch_embed').replace(
            'norm.pre', 'norm_pre')
        if module not in modules:
            raise UserError('`{}` lacks the weights of `{}`; is it a state dict of {} with '
                            '{} blocks?'.format(path, module, source, body.name))
        layer.set_weights([np.asarray(a, np.float32) for a in torch_weights.keras_weights(
            layer, modules.pop(module), path, module, body.name)])
    if modules:
        module, tensors = next(iter(modules.items()))
        raise UserError('`{}` holds `{}.{}`, which `{}` has no place for; is it another '
                        'architecture?'.format(path, module, next(iter(tensors)), body.name))


def leaf_layers(model):
    """The layers of `model` and of the models inside it (JPM's `b2`)."""
    for layer in model.layers:
        if hasattr(layer, 'layers'):
            yield from leaf_layers(layer)
        else:
            yield layer


def with_jpm_branches(state):
    """A timm state dict with TransReID's JPM branches `b1` and `b2` made as
    TransReID makes them from ImageNet weights: each a copy of the last block
    and of the final norm, which the branches then replace."""
    last = max((int(key.split('.')[1]) for key in state if key.startswith('blocks.')),
               default=0)
    prefix = 'blocks.{}.'.format(last)
    state = dict(state)
    for key in [key for key in state if key.startswith((prefix, 'norm.'))]:
        value = state.pop(key)
        for branch in ('b1', 'b2'):
            if key.startswith(prefix):
                state[branch + '.0.' + key[len(prefix):]] = value
            else:
                state[branch + '.1.' + key[len('norm.'):]] = value
    return state


# CLIP's image encoder by the names of OpenAI's and open_clip's state dicts,
# and of Hugging Face's, as (pattern, timm's name).
CLIP_NAMES = (
    (r'conv1\.weight', 'patch_embed.proj.weight'),
    (r'ln_pre\.', 'norm_pre.'),
    (r'ln_post\.', 'norm.'),
    (r'transformer\.resblocks\.(\d+)\.ln_1\.', r'blocks.\1.norm1.'),
    (r'transformer\.resblocks\.(\d+)\.ln_2\.', r'blocks.\1.norm2.'),
    (r'transformer\.resblocks\.(\d+)\.attn\.in_proj_', r'blocks.\1.attn.qkv.'),
    (r'transformer\.resblocks\.(\d+)\.attn\.out_proj\.', r'blocks.\1.attn.proj.'),
    (r'transformer\.resblocks\.(\d+)\.mlp\.c_fc\.', r'blocks.\1.mlp.fc1.'),
    (r'transformer\.resblocks\.(\d+)\.mlp\.c_proj\.', r'blocks.\1.mlp.fc2.'),
    (r'embeddings\.patch_embedding\.weight', 'patch_embed.proj.weight'),
    (r'pre_layrnorm\.', 'norm_pre.'),
    (r'post_layernorm\.', 'norm.'),
    (r'encoder\.layers\.(\d+)\.layer_norm1\.', r'blocks.\1.norm1.'),
    (r'encoder\.layers\.(\d+)\.layer_norm2\.', r'blocks.\1.norm2.'),
    (r'encoder\.layers\.(\d+)\.self_attn\.out_proj\.', r'blocks.\1.attn.proj.'),
    (r'encoder\.layers\.(\d+)\.mlp\.', r'blocks.\1.mlp.'),
)

# The image encoder's prefix in the files of a whole CLIP (OpenAI's and
# open_clip's `visual.`, Hugging Face's `vision_model.`, CLIP-ReID's
# `image_encoder.`), whose text tower is left out.
CLIP_PREFIXES = ('visual.', 'vision_model.', 'image_encoder.')


def clip_state(state, path, projection=False):
    """A CLIP image encoder's state dict by timm's names: the class and
    position embeddings as timm shapes them, Hugging Face's separate query,
    key and value projections as one. CLIP's projection to the text space
    (OpenAI's `proj` (D, P), Hugging Face's `visual_projection.weight`
    (P, D)) is kept as `proj.weight` (P, D) with `projection`, else left
    out.

    Raises:
        UserError for a file without the image encoder, or without its
        projection when it is wanted.
    """
    import re
    whole = state
    prefix = next((p for p in CLIP_PREFIXES if any(k.startswith(p) for k in state)), '')
    state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    found = {}
    for key, value in state.items():
        if key in ('proj', 'class_embedding', 'positional_embedding') or key.startswith(
                ('embeddings.class_embedding', 'embeddings.position_embedding')):
            continue
        name = key
        for pattern, replacement in CLIP_NAMES:
            name = re.sub('^' + pattern, replacement, name)
        found[name] = value
    cls = state.get('class_embedding', state.get('embeddings.class_embedding'))
    position = state.get('positional_embedding',
                         state.get('embeddings.position_embedding.weight'))
    if cls is None or position is None:
        raise UserError('`{}` holds no CLIP image encoder (no class and position embeddings); '
                        "is it CLIP's ViT-B/16?".format(path))
    found['cls_token'] = np.asarray(cls).reshape(1, 1, -1)
    found['pos_embed'] = np.asarray(position)[None]
    for index in sorted({int(k.split('.')[2]) for k in state
                         if k.startswith('encoder.layers.') and '.self_attn.q_proj.' in k}):
        block = 'encoder.layers.{}.self_attn.'.format(index)
        for part in ('weight', 'bias'):
            qkv = [found.pop(block + name + '_proj.' + part, None) for name in 'qkv']
            if all(value is not None for value in qkv):
                found['blocks.{}.attn.qkv.{}'.format(index, part)] = np.concatenate(qkv)
    if projection:
        if 'proj' in state and np.ndim(state['proj']) == 2:
            found['proj.weight'] = np.asarray(state['proj']).T
        elif np.ndim(whole.get('visual_projection.weight')) == 2:
            found['proj.weight'] = np.asarray(whole['visual_projection.weight'])
        else:
            raise UserError("`{}` lacks CLIP's projection of the image features to the text "
                            "space (`{}proj`, or Hugging Face's `visual_projection.weight`), "
                            'which `clipreid_vit_base_16` takes; initialise '
                            '`clip_vit_base_16` from it instead.'.format(path, prefix))
    return found


def assign_pretrained(body, state, path, source):
    """`assign_vit` for a pretrained file's `state`, whose last block and
    norm start both branches of a body with TransReID's JPM."""
    if any(layer.name == 'b2' for layer in body.layers):
        state = with_jpm_branches(state)
    assign_vit(body, state, path, source, pretrained=True)


def load_clip_weights(body, path):
    """Initialises a CLIP ViT body from CLIP's image encoder in a file of
    OpenAI's, open_clip's, Hugging Face's or CLIP-ReID's (`.pth`, `.pt`,
    `.bin` or `.safetensors`)."""
    projection = any(layer.name == 'proj' for layer in body.layers)
    assign_pretrained(body, clip_state(read_weights(path), path, projection), path,
                      "CLIP's ViT-B/16 image encoder")


def load_timm_weights(body, path):
    """Initialises the ViT `body` from a timm, DeiT or TransReID-backbone
    weights file (`.pth`, `.pt`, `.bin` or `.safetensors`); a body with
    TransReID's JPM starts both branches from the file's last block."""
    assign_pretrained(body, body_state(read_weights(path), path), path, "timm's ViT")
