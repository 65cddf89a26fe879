"""torchreid's embedding head: dense `embedding_dim` with bias, batch norm, ReLU.

OSNet's `fc` in torchreid (`Linear(512) -> BatchNorm1d -> ReLU`, with
`embedding_dim` 512), whose output is the feature torchreid tests with, so
that its trained models embed here as there. The batch norm is PyTorch's
(momentum 0.1, epsilon 1e-5, the unbiased moving variance); the ReLU, in
float32, is the final layer `emb`. The dense kernel starts as torchreid's,
normal with standard deviation 0.01, and the bias at zero.
"""

import keras

from triplet_reid.layers import batch_norm


def head(features, embedding_dim):
    x = keras.layers.Dense(embedding_dim, name='fc',
                           kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(features)
    emb = keras.layers.ReLU(dtype='float32', name='emb')(batch_norm(x, 'fc_bn'))
    return {'emb_raw': emb, 'emb': emb}
