"""The TriNet head with an L2-normalised embedding."""

from triplet_reid.heads._layers import emb, fc1024, l2_normalize


def head(features, embedding_dim):
    emb_raw = emb(fc1024(features), embedding_dim)
    return {'emb_raw': emb_raw, 'emb': l2_normalize(emb_raw)}
