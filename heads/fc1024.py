"""The TriNet head: dense 1024 with batch norm and ReLU, then the linear embedding."""

from triplet_reid.heads._layers import emb, fc1024


def head(features, embedding_dim):
    emb_raw = emb(fc1024(features), embedding_dim)
    return {'emb_raw': emb_raw, 'emb': emb_raw}
