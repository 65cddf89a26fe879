#!/usr/bin/env python3
"""Import a trained torchreid or fast-reid model (a model-zoo `.pth`) as an experiment root.

    .venv/bin/python import_model.py --weights osnet_x0_25_msmt17.pth \\
        --experiment_root experiments/osnet_x0_25_msmt17
    .venv/bin/python import_model.py --weights market_sbs_R50-ibn.pth \\
        --config fast-reid/configs/Market1501/sbs_R50-ibn.yml \\
        --experiment_root experiments/market_sbs_R50-ibn

The experiment root then holds `args.json` and `checkpoint-0`, and embed.py,
search.py, export.py (SavedModel, ONNX, TensorFlow Lite) and evaluate.py work
on it as on a trained experiment; `train.py --initial_checkpoint ROOT
--model_name osnet_x0_25 ...` fine-tunes from it. The net is read from the
file: OSNet at any width (osnet, osnet_x0_75, osnet_x0_5, osnet_x0_25),
OSNet-AIN (osnet_ain, osnet_ain_x0_75, osnet_ain_x0_5, osnet_ain_x0_25) or
OSNet-IBN (osnet_ibn, torchreid's osnet_ibn_x1_0), or torchreid's ResNet-50
(torchreid_resnet50: resnet50, and resnet50_fc512 with its fc layer as the
fc_bn_relu head). A fast-reid checkpoint
comes with the YAML config it was trained with (--config, whose `_BASE_`
files are read beside it): BoT, AGW and SBS models on ResNet-50 or -101,
with or without IBN-a and non-local blocks, or on ResNeSt-50 (the fastreid_*
nets), and its ViT-Base (vit_base_16). A TransReID
checkpoint comes with its config too: ViT-B/16 or DeiT-S/16 at any stride,
with or without its jigsaw patch module (vit_base_16, vit_small_16). A
CLIP-ReID checkpoint comes with its config: its ViT-B-16 image encoder, with
CLIP's projection (clipreid_vit_base_16). Files are
read as data: PyTorch is not needed, nothing in the weights is run (a
pickle that names anything but tensors is refused) and the config is read
by YAML's safe loader.
"""

import argparse

if __package__ in (None, ''):
    # Run from a checkout (`python import_model.py`): its folder is the package triplet_reid.
    import checkout
    checkout.register()

from triplet_reid import cli
from triplet_reid.models import clipreid, fastreid, fastreid_vit, transreid, zoo
from triplet_reid.cli import startup
from triplet_reid.nets import PADDING_NETS

parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])

parser.add_argument(
    '--weights', required=True,
    help='A torchreid state dict (OSNet or ResNet-50; .pth or .pt; a plain state dict or a '
         'training checkpoint holding `state_dict`, PyTorch\'s legacy or zip format), such as '
         'osnet_x0_25_msmt17.pth from torchreid\'s model zoo, or a fast-reid checkpoint '
         '(holding `model`), a TransReID or a CLIP-ReID one (its model\'s state dict) with '
         '--config.')

parser.add_argument(
    '--config', default=None,
    help='The fast-reid, TransReID or CLIP-ReID YAML config that --weights was trained with, '
         'such as configs/Market1501/sbs_R50-ibn.yml of fast-reid\'s repository (with the '
         'files its `_BASE_` names, at their places relative to it), configs/Market/vit_jpm.yml '
         'of TransReID\'s or configs/person/vit_clipreid.yml of CLIP-ReID\'s. Only for these '
         'three peers\' models.')

parser.add_argument(
    '--experiment_root', required=True,
    help='The experiment root to create; it must not exist yet.')

parser.add_argument(
    '--model_name', default=None, choices=PADDING_NETS + ('torchreid_resnet50',),
    help='The net the file must hold (torchreid\'s osnet_x1_0 is osnet, osnet_ain_x1_0 '
         'osnet_ain, osnet_ibn_x1_0 osnet_ibn); read from the file when left out.')


def main(argv=None):
    args = parser.parse_args(argv)
    # TensorFlow comes only after the arguments parse, so that --help and a
    # mistyped flag answer at once (see startup.quiet_tensorflow).
    if args.config is not None and args.model_name is not None:
        parser.error("--model_name names torchreid's OSNets; a fast-reid model's net comes "
                     'from its --config')
    startup.quiet_tensorflow()
    settings = None if args.config is None else fastreid.read_config(args.config)
    if settings is not None and transreid.is_transreid_config(settings):
        stored = transreid.import_transreid(args.weights, args.config, args.experiment_root)
    elif settings is not None and clipreid.is_clipreid_config(settings):
        stored = clipreid.import_clipreid(args.weights, args.config, args.experiment_root)
    elif settings is not None and fastreid_vit.is_vit_config(settings):
        stored = fastreid_vit.import_fastreid_vit(args.weights, args.config, args.experiment_root)
    elif settings is not None:
        stored = fastreid.import_fastreid(args.weights, args.config, args.experiment_root)
    else:
        stored = zoo.import_torchreid(args.weights, args.experiment_root, args.model_name)
    print('Imported {} ({} + {}, {}-d embeddings at {}x{}{}) as {}.'.format(
        args.weights, stored['model_name'], stored['head_name'], stored['embedding_dim'],
        stored['net_input_height'], stored['net_input_width'],
        '' if stored['imported_classes'] is None else
        '; its classifier of {} training identities is left out'.format(
            stored['imported_classes']), args.experiment_root))
    return 0


def command():
    """`reid-import-model`, the command that `pip install .` installs (pyproject.toml)."""
    cli.run(main)


if __name__ == '__main__':
    command()
