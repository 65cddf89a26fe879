"""BNNeck (Luo et al. 2019, "Bag of Tricks"): batch norm without shift on the pooled features.

The triplet and center losses train the features before the batch norm
(`metric_emb`); the identity classifier, `embed.py` and `export.py` use the
features after it (`emb`). When `embedding_dim` equals the body's width (2048
for ResNet-50, 1024 for `tiny`) the features are used as they are, as in BoT;
any other `embedding_dim` adds a bias-free linear reduction to that size
before the batch norm.
"""

import keras

from triplet_reid.heads._layers import bnneck
from triplet_reid.layers import torch_default_initializer


def head(features, embedding_dim):
    x = features
    if features.shape[-1] != embedding_dim:
        x = keras.layers.Dense(embedding_dim, use_bias=False,
                               kernel_initializer=torch_default_initializer(),
                               name='reduction')(x)
    x = keras.layers.Activation('linear', dtype='float32', name='metric_emb')(x)
    emb = bnneck(x)
    return {'emb_raw': emb, 'emb': emb, 'metric_emb': x}
