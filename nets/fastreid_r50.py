"""fast-reid's ResNet-50 (the body of its configs with DEPTH 50x, WITH_IBN False and WITH_NL
False); see `nets/_fastreid.py`."""

from triplet_reid.nets._fastreid import fastreid_resnet


def body(last_stride=2):
    return fastreid_resnet(50, 'fastreid_r50', with_ibn=False, with_nl=False,
                           last_stride=last_stride)
