"""Running from a checkout: its folder is the package `triplet_reid`.

`pip install .` installs this folder as the package `triplet_reid`, so that
site-packages gains one name and none of the short ones (`evaluate`,
`models`, `training`) that other libraries use. A checkout keeps the
original's layout, with the commands at its root (`python train.py`), and
the modules import each other as `triplet_reid.…` in both. `register()`
makes the checkout's folder that package, whatever the folder is called;
the commands and scripts of a checkout call it first, and it does nothing
where `triplet_reid` is already imported (or installed and imported).
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))


def register():
    """Imports this checkout's folder as the package `triplet_reid`."""
    if 'triplet_reid' in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        'triplet_reid', os.path.join(ROOT, '__init__.py'), submodule_search_locations=[ROOT])
    package = importlib.util.module_from_spec(spec)
    sys.modules['triplet_reid'] = package
    spec.loader.exec_module(package)
