#!/usr/bin/env python3
"""The peers' side of bench/peers.py: build a net with torchreid's or fast-reid's own code,
give it random weights, save it as they save it, and embed images with it.

Runs in a PyTorch environment of its own (`torch numpy pillow`, and
`pyyaml yacs termcolor tabulate` for fast-reid), never the project's, and
imports nothing of the project. The peer's code comes from a checkout (or a
mirror) of its repository: torchreid's `torchreid/models/osnet.py`,
`osnet_ain.py` or `resnet.py` loaded by path, fast-reid's `fastreid` package with its
`build_model` and config. The weights are the peer's initialisation with
every batch, instance and layer norm made non-trivial (random scale and shift;
fast-reid's non-local blocks, initialised to add nothing, then add
something), GeM's exponent moved off 3, and the batch norms' statistics
those of the images themselves (one pass with the norms in training mode;
random statistics let a deep net's activations grow to infinity), so that
a mapping that drops or swaps any of them shows. The file is saved as the peer's training
saves it: torchreid's `{'state_dict', 'epoch', 'optimizer', ...}`, fast-reid's
`{'model', 'optimizer', 'scheduler', 'iteration'}`.

Images are embedded as the peer tests: torchreid resizes to 256×128 with
PIL's bilinear filter and scales to [0, 1] before ImageNet's normalisation;
fast-reid resizes to INPUT.SIZE_TEST with PIL's bicubic filter and
normalises [0, 255] inside its model. Writes an `.npz` with the features and
the resized uint8 pixels, so that the other side embeds the same input.
"""

import argparse
import csv
import importlib.util
import os
import sys
import types

import numpy as np
import torch
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def randomise(model, generator, images):
    """Non-trivial norms: random scale and shift, but for a shift the peer
    freezes (BNNeck's bias), which stays zero as in its files; the batch
    norms' statistics those of `images` (B, 3, H, W), the net's input."""
    batch_norms = []
    with torch.no_grad():
        for name, module in model.named_modules():
            norm = isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d,
                                       torch.nn.InstanceNorm2d, torch.nn.LayerNorm))
            if norm and module.weight is not None:
                module.weight.uniform_(0.5, 1.5, generator=generator)
                if name.endswith('.W.1'):
                    # A non-local block's output grows with the cube of its input,
                    # so that at full scale an image brighter than the calibration
                    # batch overflows float32 after a few blocks (trained blocks
                    # learn small weights here); a tenth keeps them adding.
                    module.weight.mul_(0.1)
                if module.bias.requires_grad:
                    module.bias.normal_(0, 0.1, generator=generator)
            if norm and getattr(module, 'running_mean', None) is not None:
                batch_norms.append(module)
            if type(module).__name__ == 'GeneralizedMeanPoolingP':
                module.p.fill_(2.5)
        # The rest of the net in evaluation mode (fast-reid's training mode
        # wants targets), its batch norms averaging the batch's statistics.
        model.eval()
        for module in batch_norms:
            module.reset_running_stats()
            module.momentum = None
            module.train()
        model(images)
        model.eval()


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torchreid_model(source, net):
    """torchreid's builder `net` (such as osnet_ain_x1_0), from its own file."""
    # Only its download of ImageNet weights imports gdown, which is not used.
    sys.modules.setdefault('gdown', types.ModuleType('gdown'))
    models = os.path.join(source, 'torchreid', 'models')
    module = load_file('torchreid_' + net, os.path.join(
        models, 'osnet_ain.py' if net.startswith('osnet_ain') else
        'resnet.py' if net.startswith('resnet') else 'osnet.py'))
    return getattr(module, net)(num_classes=751, pretrained=False, loss='softmax')


def fastreid_model(source, config):
    """fast-reid's model of `config`, built by its own `build_model`, and its test size."""
    sys.path.insert(0, source)
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = 751
    cfg.MODEL.DEVICE = 'cpu'
    return build_model(cfg), tuple(cfg.INPUT.SIZE_TEST)


def save(model, kind, path):
    """The file the peer's training writes."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [40, 90])
    if kind == 'torchreid':
        torch.save({'state_dict': model.state_dict(), 'epoch': 60, 'rank1': 0.5,
                    'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()},
                   path)
    else:
        torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                    'scheduler': scheduler.state_dict(), 'iteration': 12000}, path)


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--kind', required=True, choices=('torchreid', 'fastreid'),
                        help='Whose code builds the net.')
    parser.add_argument('--source', required=True, help="The peer's repository (a checkout).")
    parser.add_argument('--net', help="torchreid's builder, such as osnet_ain_x1_0 or "
                        'resnet50_fc512.')
    parser.add_argument('--config', help="fast-reid's YAML config.")
    parser.add_argument('--seed', type=int, default=0, help='Seed of the random weights.')
    parser.add_argument('--weights_out', required=True, help='The .pth file to write.')
    parser.add_argument('--image_root', required=True, help='Folder the CSV paths are under.')
    parser.add_argument('--csv', nargs='+', required=True, help='identity,path CSVs to embed.')
    parser.add_argument('--output', required=True, help='The .npz to write.')
    parser.add_argument('--threads', type=int, default=2, help="torch's intra-op threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.kind == 'torchreid':
        model, size, resample = torchreid_model(args.source, args.net), (256, 128), Image.BILINEAR
    else:
        (model, size), resample = fastreid_model(args.source, args.config), Image.BICUBIC
    fids = []
    for path in args.csv:
        with open(path, newline='') as f:
            fids += [row[1] for row in csv.reader(f) if row]
    pixels = np.stack([np.asarray(Image.open(os.path.join(args.image_root, fid)).convert(
        'RGB').resize(size[::-1], resample)) for fid in fids])

    def net_input(batch):
        batch = batch.astype(np.float32)
        if args.kind == 'torchreid':
            batch = (batch / 255 - MEAN) / STD
        return torch.from_numpy(batch.transpose(0, 3, 1, 2).copy())
    randomise(model, torch.Generator().manual_seed(args.seed), net_input(pixels[::7][:64]))
    save(model, args.kind, args.weights_out)
    features = []
    with torch.no_grad():
        for start in range(0, len(pixels), 32):
            features.append(model(net_input(pixels[start:start + 32])).numpy())
    np.savez(args.output, fids=np.array(fids), features=np.concatenate(features), pixels=pixels,
             torch_version=torch.__version__)


if __name__ == '__main__':
    main()
