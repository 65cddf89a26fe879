"""Layers shared by the heads."""

import keras

from triplet_reid.layers import FusedBatchNormalization, batch_norm, torch_default_initializer


def emb(x, embedding_dim, name='emb'):
    """The final linear embedding layer, orthogonally initialised as in the original."""
    return keras.layers.Dense(embedding_dim, kernel_initializer='orthogonal', dtype='float32',
                              name=name)(x)


def bnneck(x):
    """BoT's BNNeck: batch norm without shift (momentum 0.9, epsilon 1e-5), in
    float32, named `emb` as the final layer of every head; fused, so that its
    moving variance averages the unbiased one, as PyTorch's BatchNorm1d."""
    return FusedBatchNormalization(center=False, momentum=0.9, epsilon=1e-5, dtype='float32',
                                   name='emb')(x)


def fc1024(x):
    """slim's `fully_connected(x, 1024, normalizer_fn=batch_norm)`: dense without bias,
    batch norm (decay 0.9, epsilon 1e-5), ReLU. The kernel starts from PyTorch's
    default initialisation, as the PyTorch reference's, which learns faster under
    the batch norm than Glorot's (see `torch_default_initializer`)."""
    x = keras.layers.Dense(1024, use_bias=False, kernel_initializer=torch_default_initializer(),
                           name='fully_connected')(x)
    x = batch_norm(x, 'fully_connected_bn')
    return keras.layers.Activation('relu', name='fully_connected_relu')(x)


def l2_normalize(x):
    return keras.layers.UnitNormalization(axis=-1, name='out_emb')(x)
