"""CLIP-ReID's ViT-B/16 image encoder (Syliz517/CLIP-ReID): CLIP's
(`clip_vit_base_16`), its class token after the last norm followed by that
token through CLIP's 512-wide projection to the text space, 1280 values, as
CLIP-ReID concatenates them at test time. CLIP's files initialise it with
their projection (--initial_checkpoint); CLIP-ReID's trained models import
(`import_model.py --config`, `models/clipreid.py`). No JPM: its parts have no
projection."""

from triplet_reid.nets._vit import vit_body

# The width of CLIP ViT-B/16's projection to the text space.
PROJECTION = 512


def body(input_size=(256, 128), patch_stride=16, drop_path_rate=0.1, jpm=0, sie=0,
         sie_weight=3.0):
    return vit_body('clipreid_vit_base_16', 768, 12, 12, input_size, patch_stride,
                    drop_path_rate, jpm=jpm, clip=True, projection=PROJECTION, sie=sie,
                    sie_weight=sie_weight)
