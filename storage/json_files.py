"""JSON files read from users, bounded before they are believed: args.json and
best.json of an experiment root, a detailed log's description, a converter's
--splits file, and TF_CONFIG's text."""

import json

from triplet_reid.cli import UserError
from triplet_reid.storage.files import check_regular


# The deepest nesting and the most bytes of a JSON file read from a user
# (args.json is flat; a splits file is three deep): Python's parser recurses
# once a level, and a file of brackets 100,000 deep ran out of stack.
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 64 << 20


def parse_json(text):
    """The value of the JSON `text`, nested at most `MAX_JSON_DEPTH` deep.

    Raises:
        ValueError for text that is no JSON or nests deeper.
    """
    deeper = ValueError('nested deeper than {} levels'.format(MAX_JSON_DEPTH))
    try:
        value = json.loads(text)
    except RecursionError:
        raise deeper
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise deeper
            stack += [(child, depth + 1) for child in (
                item.values() if isinstance(item, dict) else item)]
    return value


def read_json(path, remedy):
    """The JSON object (a dict) that this project or a user wrote to `path`,
    read as `parse_json` bounds it.

    Raises:
        UserError saying the file is corrupt, ending with `remedy`, when it
        is no regular file, larger than `MAX_JSON_BYTES`, not valid JSON,
        not UTF-8, nested too deep, or not a JSON object.
    """
    return read_json_value(path, remedy, dict)


def read_json_value(path, remedy, kind=None):
    """The JSON value of the file `path` (of the type `kind` when given:
    dict or list), read as `read_json` reads it."""
    check_regular(path, 'the JSON file', remedy)
    try:
        with open(path, 'rb') as f:
            raw = f.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ValueError('more than {} MiB'.format(MAX_JSON_BYTES >> 20))
        value = parse_json(raw.decode('utf-8'))
        if kind is not None and not isinstance(value, kind):
            raise ValueError('not a JSON {}'.format('object' if kind is dict else 'list'))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError('`{}` is corrupt ({}); {}.'.format(path, e, remedy))
    except OSError as e:
        raise UserError('cannot read `{}`: {}; {}.'.format(path, e.strerror or e, remedy))
    return value
