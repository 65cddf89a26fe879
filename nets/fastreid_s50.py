"""fast-reid's ResNeSt-50 (the body of its S50 configs, MODEL.BACKBONE.NAME
build_resnest_backbone: split attention of radix 2, the deep stem, average-pooled
downsampling); see `nets/_fastreid.py`."""

from triplet_reid.nets._fastreid import fastreid_resnest


def body(last_stride=2):
    return fastreid_resnest(50, 'fastreid_s50', last_stride=last_stride)
