"""Embedding-head plug-ins.

Each choice is a module `heads/<name>.py` with one function

    head(features, embedding_dim) -> {'emb_raw': ..., 'emb': ...}

applied to the body's pooled Keras tensor `features` of shape (B, F). It
returns the raw embedding (B, embedding_dim) and the embedding that the loss
and the evaluation use (the raw one, or its L2-normalised version). The final
layer is named `emb` like the original's variable scope, and its output is
float32 whatever the mixed-precision policy. A head may also return
`metric_emb` (B, embedding_dim), float32: what the triplet and center losses
train when it is not `emb` (BNNeck's features before its batch norm). `_layers.py` holds the shared
layers and is not a choice.
"""

HEAD_CHOICES = (
    'bnneck',
    'direct',
    'direct_normalize',
    'fc1024',
    'fc1024_bnneck',
    'fc1024_normalize',
    'fc_bn_relu',
    'pooled',
)


def load(name):
    """The `head` function of the head `name` (see the contract above)."""
    from importlib import import_module
    return import_module('triplet_reid.heads.' + name).head
