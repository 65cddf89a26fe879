"""torchreid's ResNet-50 (`resnet50`, and the body of `resnet50_fc512`): torchvision's
ResNet-50 v1.5, padding as PyTorch pads; see `nets/_fastreid.py`."""

from triplet_reid.nets._fastreid import fastreid_resnet


def body(last_stride=2):
    return fastreid_resnet(50, 'torchreid_resnet50', last_stride=last_stride, ceil_pool=False)
