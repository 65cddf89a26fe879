"""OSNet-IBN x1.0 (torchreid's `osnet_ibn_x1_0`, after IBN-Net, Pan et al. 2018): OSNet
with instance norms in its stem and first stage, for features that transfer across
cameras; see `nets/_osnet.py`."""

from triplet_reid.nets._osnet import osnet_body


def body(padding='torch'):
    return osnet_body(1.0, 'osnet_ibn', padding, instance_norms='ibn')
