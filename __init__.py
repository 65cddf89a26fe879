"""triplet-reid for TensorFlow 2: person re-identification with the batch-hard
triplet loss (Hermans, Beyer, Leibe 2017).

`pip install .` installs this folder as the one package `triplet_reid`, and
the commands `reid-train`, `reid-embed`, `reid-evaluate`, `reid-search`,
`reid-export` and `reid-import-model`. In a checkout the commands run as they
did in the original, `python train.py …` (see checkout.py). The Python API:

    from triplet_reid import load_embedder
    embedder = load_embedder('experiments/demo')     # or a SavedModel of export.py
    embeddings = embedder(crops)                     # (N, D) float32

Importing the package imports nothing else: TensorFlow comes with the first
use of what needs it.
"""

__all__ = ('Embedder', 'load_embedder')


def __getattr__(name):
    # The API's names are looked up on first use, so that `import triplet_reid`
    # (and `--help` of every command) does not wait for TensorFlow.
    if name in __all__:
        from triplet_reid.models import inference
        return getattr(inference, name)
    raise AttributeError('module {!r} has no attribute {!r}'.format(__name__, name))
