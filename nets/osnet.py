"""OSNet x1.0 (Zhou et al. 2019; torchreid's `osnet_x1_0`), trained from scratch; see
`nets/_osnet.py`."""

from triplet_reid.nets._osnet import osnet_body


def body(padding='torch'):
    return osnet_body(1.0, 'osnet', padding)
