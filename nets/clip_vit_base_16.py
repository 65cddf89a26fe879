"""CLIP's ViT-B/16 image encoder (OpenAI's, which CLIP-ReID fine-tunes): 12
blocks of width 768 with 12 heads, a layer norm before them, QuickGELU; the
class token after the last norm is the feature (CLIP's projection to the
text space is left out). CLIP's weights (OpenAI's, open_clip's or Hugging
Face's files, `.pth` or `.safetensors`) through --initial_checkpoint
(`models/vit_weights.py`); see `nets/_vit.py`."""

from triplet_reid.nets._vit import vit_body


def body(input_size=(256, 128), patch_stride=16, drop_path_rate=0.1, jpm=0, sie=0,
         sie_weight=3.0):
    return vit_body('clip_vit_base_16', 768, 12, 12, input_size, patch_stride, drop_path_rate,
                    jpm=jpm, clip=True, sie=sie, sie_weight=sie_weight)
