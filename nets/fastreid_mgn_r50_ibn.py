"""fast-reid's MGN on a ResNet-50 with IBN-a (the body of its configs with
META_ARCHITECTURE MGN and WITH_IBN True); see `nets/_fastreid.py`."""

from triplet_reid.nets._fastreid import fastreid_mgn


def body(last_stride=2, pooling='avg'):
    return fastreid_mgn('fastreid_mgn_r50_ibn', with_ibn=True, last_stride=last_stride,
                        pooling=pooling)
