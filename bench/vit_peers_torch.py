#!/usr/bin/env python3
"""The peers' side of bench/vit_peers.py: a ViT built by timm's or
TransReID's own code, given random weights, saved as they save it, and its
features of the given pixels; and, with --speed, the time it takes to embed
and to train.

Runs in a PyTorch environment of its own (`torch torchvision timm
open_clip_torch safetensors numpy yacs`), never the project's, and imports nothing of the
project. open_clip builds CLIP (`ViT-B-16-quickgelu`, OpenAI's shape);
TransReID's code is loaded from a checkout: its backbone
(`model/backbones/vit_pytorch.py`, `--kind transreid`) or its whole model
(`model.make_model` from a YAML config, `--kind transreid_model`, JPM and
BNNecks included, as its training saves it). Its `torch._six` import, gone
from PyTorch 2, is given the `collections.abc` it took from there.
CLIP-ReID's whole model comes from its checkout's `make_model_clipreid`
(`--kind clipreid_model`), around a CLIP of its own `CLIP` class.

The weights are the peer's initialisation with every layer norm and batch
norm made non-trivial (random scale and shift; a BNNeck's frozen shift
stays zero), the batch norms' statistics those of the images themselves,
so that a mapping that drops or swaps one shows. Pixels (N, H, W, 3) uint8
come in an .npz, with their cameras (N,) from 0 for the whole models with a
camera embedding (SIE), and are normalised as TransReID and timm's ViTs
want them: mean and std 0.5.
"""

import argparse
import collections.abc
import importlib.util
import sys
import time
import types

import numpy as np
import torch


def randomise(model, generator, images=None, cameras=None):
    """Random layer and batch norms; the batch norms' statistics those of
    `images` (B, 3, H, W) when given (seen by `cameras`, for a model with a
    camera embedding)."""
    batch_norms = []
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm1d)):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                if module.bias.requires_grad:
                    module.bias.normal_(0, 0.1, generator=generator)
            if isinstance(module, torch.nn.BatchNorm1d):
                batch_norms.append(module)
        if images is not None and batch_norms:
            model.eval()
            for module in batch_norms:
                module.reset_running_stats()
                module.momentum = None
                module.train()
            model(images) if cameras is None else model(images, cam_label=cameras)
        model.eval()


def transreid_module(source):
    six = types.ModuleType('torch._six')
    six.container_abcs = collections.abc
    sys.modules['torch._six'] = six
    spec = importlib.util.spec_from_file_location(
        'transreid_vit', source + '/model/backbones/vit_pytorch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def transreid_model(args, images, cameras):
    """TransReID's model of the config `args.config`, built by its
    `make_model` (751 identities, as Market-1501), randomised."""
    transreid_module(args.source)
    # Its loss package imports what training needs; the model needs one file of it.
    loss = types.ModuleType('loss')
    loss.__path__ = []
    sys.modules['loss'] = loss
    load_file('loss.metric_learning', args.source + '/loss/metric_learning.py')
    sys.path.insert(0, args.source)
    from config import cfg
    from model.make_model import make_model
    cfg.merge_from_file(args.config)
    cfg.MODEL.PRETRAIN_CHOICE = 'none'
    model = make_model(cfg, num_class=751, camera_num=6, view_num=1)
    randomise(model, torch.Generator().manual_seed(args.seed), images,
              cameras if cfg.MODEL.SIE_CAMERA else None)
    return model


def clipreid_model(args, images, cameras):
    """CLIP-ReID's model of the config `args.config`, built by its own
    `make_model` (751 identities, as Market-1501) around a CLIP built by its
    own `CLIP` class with random weights (where CLIP-ReID would download
    OpenAI's), randomised; its prompt learner and text encoder are in it, as
    in the files its training saves."""
    sys.path.insert(0, args.source)
    from config import cfg
    from model import make_model_clipreid
    from model.clip.model import CLIP

    def load_clip_to_cpu(name, h_resolution, w_resolution, stride):
        clip = CLIP(512, 224, 12, 768, 16, stride, 77, 49408, 512, 8, 12, h_resolution,
                    w_resolution)
        # CLIP-ReID moves it to the GPU; here it stays on the CPU.
        clip.to = lambda *_, **__: clip
        return clip
    make_model_clipreid.load_clip_to_cpu = load_clip_to_cpu
    # Its prompt learner puts the tokenised prompt on the GPU.
    torch.Tensor.cuda = lambda self, *_, **__: self
    cfg.merge_from_file(args.config)
    model = make_model_clipreid.make_model(cfg, num_class=751, camera_num=6, view_num=1)
    randomise(model, torch.Generator().manual_seed(args.seed), images,
              cameras if cfg.MODEL.SIE_CAMERA else None)
    return model


def build(args):
    """(model to save, model to embed with): the same weights, the second
    for the embedding size (timm's with its position embeddings resized as
    timm resizes them, bicubic without antialiasing)."""
    if args.kind == 'timm':
        import timm
        from timm.layers import resample_abs_pos_embed
        saved = timm.create_model(args.net, pretrained=False, num_classes=0)
        randomise(saved, torch.Generator().manual_seed(args.seed))
        size = tuple(args.size)
        used = timm.create_model(args.net, pretrained=False, num_classes=0, img_size=size)
        state = dict(saved.state_dict())
        state['pos_embed'] = resample_abs_pos_embed(
            state['pos_embed'], used.patch_embed.grid_size, num_prefix_tokens=1,
            interpolation='bicubic', antialias=False)
        used.load_state_dict(state)
        return saved.eval(), used.eval()
    if args.kind == 'open_clip':
        import open_clip
        import torch.nn.functional as F
        saved = open_clip.create_model(args.net, pretrained=None)
        randomise(saved, torch.Generator().manual_seed(args.seed))
        used = open_clip.create_model(args.net, pretrained=None, force_image_size=tuple(args.size))
        state = dict(saved.state_dict())
        position = state['visual.positional_embedding']
        side = int(round((position.shape[0] - 1) ** 0.5))
        grid = used.visual.positional_embedding.shape[0] - 1
        rows = (args.size[0] - 16) // 16 + 1
        resized = F.interpolate(position[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2),
                                size=(rows, grid // rows), mode='bicubic', align_corners=False)
        state['visual.positional_embedding'] = torch.cat(
            [position[:1], resized.permute(0, 2, 3, 1).reshape(grid, -1)])
        used.load_state_dict(state)
        # The class token after the last norm: CLIP's projection left out.
        used.visual.proj = None
        return saved.eval(), used.visual.eval()
    module = transreid_module(args.source)
    model = getattr(module, args.net)(img_size=tuple(args.size), stride_size=args.stride,
                                      drop_path_rate=0.1)
    randomise(model, torch.Generator().manual_seed(args.seed))
    return model.eval(), model.eval()


def normalised(pixels):
    """(N, 3, H, W) of uint8 pixels (N, H, W, 3), normalised with mean and std 0.5."""
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def features(model, pixels, batch=32, cameras=None):
    """The features of the pixels, with their cameras (as the peers' test
    code passes them, `cam_label`) when given."""
    x = normalised(pixels)
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) if cameras is None else
                          model(x[i:i + batch], cam_label=cameras[i:i + batch])
                          for i in range(0, len(x), batch)]).numpy()


def speed(model, size, batch, repeats):
    """Seconds per batch: embedding (no gradients), and a training step
    (forward, backward and an SGD update on the features' mean square)."""
    x = torch.rand(batch, 3, *size)
    with torch.no_grad():
        model.eval()
        model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        embed = (time.perf_counter() - start) / repeats
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return embed, (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--kind', required=True,
                        choices=('timm', 'transreid', 'transreid_model', 'open_clip',
                                 'clipreid_model'),
                        help="Whose code: timm's, TransReID's backbone or its whole model, "
                             "open_clip's CLIP, CLIP-ReID's whole model.")
    parser.add_argument('--net', help="timm's model name, or TransReID's builder.")
    parser.add_argument('--config', help="TransReID's or CLIP-ReID's YAML config (--kind "
                                         'transreid_model, clipreid_model).')
    parser.add_argument('--source', help="TransReID's or CLIP-ReID's checkout.")
    parser.add_argument('--size', type=int, nargs=2, default=(256, 128), help='Input size.')
    parser.add_argument('--stride', type=int, default=16, help="TransReID's patch stride.")
    parser.add_argument('--seed', type=int, default=0, help='Seed of the random weights.')
    parser.add_argument('--pixels', help='.npz with `pixels` (N, H, W, 3) uint8 to embed.')
    parser.add_argument('--weights_out', help='The weights file to write (.pth, .safetensors).')
    parser.add_argument('--output', help='The .npz of features to write.')
    parser.add_argument('--speed', type=int, nargs=2, metavar=('BATCH', 'REPEATS'),
                        help='Time embedding and training steps instead.')
    parser.add_argument('--threads', type=int, default=2, help="torch's intra-op threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.kind in ('transreid_model', 'clipreid_model'):
        loaded = np.load(args.pixels)
        pixels, cameras = loaded['pixels'], torch.from_numpy(loaded['cameras']).long()
        make = transreid_model if args.kind == 'transreid_model' else clipreid_model
        model = make(args, normalised(pixels[:32]), cameras[:32])
        torch.save(model.state_dict(), args.weights_out)
        sie = hasattr(model, 'cv_embed') or hasattr(getattr(model, 'base', None), 'sie_embed')
        np.savez(args.output, features=features(model, pixels,
                                                cameras=cameras if sie else None))
        return
    saved, used = build(args)
    if args.speed:
        embed, train = speed(used, tuple(args.size), *args.speed)
        print('{"embed_s": %.4f, "train_s": %.4f}' % (embed, train))
        return
    if args.weights_out.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, args.weights_out)
    else:
        torch.save(saved.state_dict(), args.weights_out)
    np.savez(args.output, features=features(used, np.load(args.pixels)['pixels']))


if __name__ == '__main__':
    main()
