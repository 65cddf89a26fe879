"""A single linear layer to the embedding, L2-normalised."""

from triplet_reid.heads._layers import emb, l2_normalize


def head(features, embedding_dim):
    emb_raw = emb(features, embedding_dim)
    return {'emb_raw': emb_raw, 'emb': l2_normalize(emb_raw)}
