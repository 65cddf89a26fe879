"""fast-reid's ResNet-101 with IBN-a (the body of its configs with DEPTH 101x, WITH_IBN True and
WITH_NL False); see `nets/_fastreid.py`."""

from triplet_reid.nets._fastreid import fastreid_resnet


def body(last_stride=2):
    return fastreid_resnet(101, 'fastreid_r101_ibn', with_ibn=True, with_nl=False,
                           last_stride=last_stride)
