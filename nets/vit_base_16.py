"""ViT-Base/16 (timm's `vit_base_patch16_224`, TransReID's and DeiT-Base's shape): 12
blocks of width 768 with 12 heads, 86M weights; see `nets/_vit.py`.
ImageNet weights: timm's or DeiT's `.pth` or `.safetensors` files, through
--initial_checkpoint (`models/vit_weights.py`)."""

from triplet_reid.nets._vit import vit_body


def body(input_size=(256, 128), patch_stride=16, drop_path_rate=0.1, jpm=0, sie=0,
         sie_weight=3.0):
    return vit_body('vit_base_16', 768, 12, 12, input_size, patch_stride, drop_path_rate,
                    jpm=jpm, sie=sie, sie_weight=sie_weight)

