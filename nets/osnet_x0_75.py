"""OSNet x0.75 (Zhou et al. 2019; torchreid's `osnet_x0_75`), trained from scratch; see
`nets/_osnet.py`."""

from triplet_reid.nets._osnet import osnet_body


def body(padding='torch'):
    return osnet_body(0.75, 'osnet_x0_75', padding)
