"""TriNet's head with a BNNeck on its embedding, for nets trained from scratch.

The `fc1024` head (dense 1024, batch norm, ReLU, linear embedding) gives the
embedding that the triplet and center losses train (`metric_emb`); a batch
norm without shift on it (BoT's BNNeck) gives what the identity classifier,
`embed.py` and `export.py` use (`emb`). Unlike `bnneck`, which puts the batch
norm straight on the pooled features as BoT does with a pretrained ResNet,
it keeps TriNet's small MLP, which a shallow net such as `tiny` needs.
"""

from triplet_reid.heads._layers import bnneck, emb, fc1024


def head(features, embedding_dim):
    metric_emb = emb(fc1024(features), embedding_dim, name='metric_emb')
    normalized = bnneck(metric_emb)
    return {'emb_raw': normalized, 'emb': normalized, 'metric_emb': metric_emb}
