"""ResNet-101 v1 following TF-slim, with ImageNet mean subtraction and global average pooling."""

from triplet_reid.nets._resnet_v1 import resnet_v1


def body(last_stride=2):
    return resnet_v1((3, 4, 23, 3), name='resnet_v1_101', last_stride=last_stride)
