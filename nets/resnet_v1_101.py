"""ResNet-101 v1 following TF-slim, with ImageNet mean subtraction and global average pooling."""

from nets._resnet_v1 import resnet_v1


def body():
    return resnet_v1((3, 4, 23, 3), name='resnet_v1_101')
