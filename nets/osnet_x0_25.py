"""OSNet x0.25 (Zhou et al. 2019; torchreid's `osnet_x0_25`), trained from scratch; see
`nets/_osnet.py`."""

from triplet_reid.nets._osnet import osnet_body


def body(padding='torch'):
    return osnet_body(0.25, 'osnet_x0_25', padding)
