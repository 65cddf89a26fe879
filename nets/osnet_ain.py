"""OSNet-AIN x1.0 (Zhou et al., TPAMI 2021; torchreid's `osnet_ain_x1_0`): OSNet with
instance norms where torchreid's architecture search put them, for features that
transfer across cameras; see `nets/_osnet.py`."""

from triplet_reid.nets._osnet import osnet_body


def body(padding='torch'):
    return osnet_body(1.0, 'osnet_ain', padding, instance_norms='ain')
