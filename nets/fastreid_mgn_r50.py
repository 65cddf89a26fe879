"""fast-reid's MGN on a ResNet-50 (the body of its configs with
META_ARCHITECTURE MGN and WITH_IBN False); see `nets/_fastreid.py`."""

from triplet_reid.nets._fastreid import fastreid_mgn


def body(last_stride=2, pooling='avg'):
    return fastreid_mgn('fastreid_mgn_r50', with_ibn=False, last_stride=last_stride,
                        pooling=pooling)
