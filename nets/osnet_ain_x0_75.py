"""OSNet-AIN x0.75 (Zhou et al., TPAMI 2021; torchreid's `osnet_ain_x0_75`): OSNet with
instance norms where torchreid's architecture search put them, for features that
transfer across cameras; see `nets/_osnet.py`."""

from triplet_reid.nets._osnet import osnet_body


def body(padding='torch'):
    return osnet_body(0.75, 'osnet_ain_x0_75', padding, instance_norms='ain')
