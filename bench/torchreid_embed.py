#!/usr/bin/env python3
"""torchreid's side of bench/torchreid.py: embed images with torchreid's own OSNet in PyTorch.

Runs in a PyTorch environment of its own (`torch numpy pillow`), never the
project's, and imports nothing of the project. Builds the net from
torchreid's `torchreid/models/osnet.py` (given by path, from a checkout or
a mirror of torchreid; its only dependency is torch), loads a model-zoo
state dict with `torch.load` (this side trusts the file: it is the
yardstick), and embeds every image of the CSVs as torchreid tests: the whole
image resized to 256×128 with PIL's bilinear filter, scaled to [0, 1],
normalised with ImageNet's mean and deviation, the output of the net in
evaluation mode (the 512-d features after its fc layer). Writes an `.npz`
with the features, the resized uint8 pixels (so that the other side can
embed exactly the same input) and the time per batch.
"""

import argparse
import csv
import importlib.util
import os
import time

import numpy as np
import torch
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--osnet_py', required=True, help="torchreid's models/osnet.py.")
    parser.add_argument('--net', required=True, help='The builder, such as osnet_x0_25.')
    parser.add_argument('--weights', help='The model-zoo .pth file; random weights without '
                        'it (for timing).')
    parser.add_argument('--image_root', required=True, help='Folder the CSV paths are under.')
    parser.add_argument('--csv', nargs='+', required=True, help='identity,path CSVs to embed.')
    parser.add_argument('--output', required=True, help='The .npz to write.')
    parser.add_argument('--batch_size', type=int, default=64, help='Images per forward pass.')
    parser.add_argument('--threads', type=int, default=2, help="torch's intra-op threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = importlib.util.spec_from_file_location('torchreid_osnet', args.osnet_py)
    osnet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(osnet)
    state = {'classifier.weight': torch.zeros(1000, 1)}
    if args.weights:
        state = torch.load(args.weights, map_location='cpu', weights_only=True)
        state = state.get('state_dict', state)
        state = {k[len('module.'):] if k.startswith('module.') else k: v
                 for k, v in state.items()}
    model = getattr(osnet, args.net)(num_classes=state['classifier.weight'].shape[0],
                                     pretrained=False, loss='softmax')
    if args.weights:
        model.load_state_dict(state)
    model.eval()

    fids = []
    for path in args.csv:
        with open(path, newline='') as f:
            fids += [row[1] for row in csv.reader(f) if row]
    pixels = np.stack([np.asarray(Image.open(os.path.join(args.image_root, fid)).convert(
        'RGB').resize((128, 256), Image.BILINEAR)) for fid in fids])
    features, seconds = [], []
    with torch.no_grad():
        model(torch.zeros(2, 3, 256, 128))
        for start in range(0, len(pixels), args.batch_size):
            batch = (pixels[start:start + args.batch_size].astype(np.float32) / 255 - MEAN) / STD
            tick = time.perf_counter()
            features.append(model(torch.from_numpy(batch.transpose(0, 3, 1, 2))).numpy())
            seconds.append((time.perf_counter() - tick, len(batch)))
    full = [(s, n) for s, n in seconds if n == args.batch_size] or seconds
    np.savez(args.output, fids=np.array(fids), features=np.concatenate(features),
             pixels=pixels, images_per_second=sum(n for _, n in full) / sum(s for s, _ in full),
             torch_version=torch.__version__)


if __name__ == '__main__':
    main()
