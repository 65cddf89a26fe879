"""A single linear layer from the pooled features to the embedding."""

from triplet_reid.heads._layers import emb


def head(features, embedding_dim):
    emb_raw = emb(features, embedding_dim)
    return {'emb_raw': emb_raw, 'emb': emb_raw}
