"""Excluder plug-ins: which gallery entries a query must not be matched against.

Each choice is a module `excluders/<name>.py` with one function

    excluder(query_fids, gallery_fids) -> callable(query_indices) -> mask

that parses the file names once and returns a function giving, for the
queries at `query_indices` (an integer array of length b), a boolean (b, G)
mask that is True where a gallery entry is to be ignored. File names that the
excluder cannot parse raise `common.UserError` naming the file and the
expected pattern. An excluder whose datasets name cameras by a pattern of
the user's (`folders`) also takes `camera_regex`, which evaluate.py passes
from its `--camera_regex`.
"""

EXCLUDER_CHOICES = (
    'market1501',
    'duke',
    'msmt17',
    'cuhk03',
    'cuhk03_folders',
    'veri776',
    'diagonal',
    'folders',
)
