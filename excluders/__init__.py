"""Excluder plug-ins: which gallery entries a query must not be matched against.

Each choice is a module `excluders/<name>.py` with one function

    excluder(query_fids, gallery_fids) -> callable(query_indices) -> mask

that parses the file names once and returns a function giving, for the
queries at `query_indices` (an integer array of length b), a boolean (b, G)
mask that is True where a gallery entry is to be ignored. File names that the
excluder cannot parse raise `cli.UserError` naming the file and the
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
    'tracklets',
)


def load(name, query_fids, gallery_fids, camera_regex=None,
         flags=('--excluder', '--camera_regex')):
    """The mask function of the excluder `name` for these query and gallery
    file names, for evaluate.py and train.py's validation alike.

    Args:
        camera_regex (str or None): For `folders`: the regular expression
            whose first group is a file name's camera.
        flags: The command's names of the excluder and the regex, for messages.

    Raises:
        UserError for a regex that is not one, or that the excluder does
        not take.
    """
    import inspect
    from importlib import import_module

    from triplet_reid import cli
    from triplet_reid.cli import patterns
    plugin = import_module('triplet_reid.excluders.' + name).excluder
    if camera_regex is None:
        return plugin(query_fids, gallery_fids)
    if 'camera_regex' not in inspect.signature(plugin).parameters:
        raise cli.UserError('{} is for `{} folders`; `{}` knows its datasets\' file '
                            'names.'.format(flags[1], flags[0], name))
    patterns.compile(camera_regex, flags[1])
    return plugin(query_fids, gallery_fids, camera_regex=camera_regex)
