"""fast-reid's ResNet-101 with non-local blocks (the body of its configs with DEPTH 101x, WITH_IBN
False and WITH_NL True); see `nets/_fastreid.py`."""

from triplet_reid.nets._fastreid import fastreid_resnet


def body(last_stride=2):
    return fastreid_resnet(101, 'fastreid_r101_nl', with_ibn=False, with_nl=True,
                           last_stride=last_stride)
