"""The regular expressions that users write: --camera_regex of train.py,
evaluate.py and data/convert.py, and search.py's --pattern.

Python's `re` backtracks: `^(.+)+X$` takes minutes on a name of thirty
characters, and such a pattern ran over every gallery name while holding
the gallery's lock. RE2 (Google's engine, the `google-re2` package) matches
in time linear in the name and bounds the memory a pattern may compile to,
so no pattern can hang a command. It lacks what needs backtracking
(backreferences such as `\\1`, lookarounds such as `(?=…)`); those patterns
are refused with RE2's reason. The project's own fixed patterns (dataset
naming schemes) stay with `re`.

A compiled pattern has `re`'s methods (`search`, `match`, `fullmatch`) and
`groups`; its matches have `group` and `groups`.
"""

import argparse

from triplet_reid.cli import UserError

# The longest pattern taken: a camera regex or a name filter is a few dozen characters.
MAX_PATTERN_LENGTH = 1000


def compile(pattern, flag):
    """`pattern` compiled by RE2.

    Raises:
        UserError naming `flag` for a pattern that is too long, malformed, or
        uses what RE2 does not match (backreferences, lookarounds).
    """
    import re2
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UserError('{} has {} characters; a pattern may have {} at most.'.format(
            flag, len(pattern), MAX_PATTERN_LENGTH))
    options = re2.Options()
    # RE2 would also print its reason to stderr, beside our one message.
    options.log_errors = False
    if encodable(pattern) != pattern:
        raise UserError('{} `{}` holds bytes that are not UTF-8 text; write the pattern in '
                        'UTF-8.'.format(flag, encodable(pattern)))
    try:
        return Pattern(re2.compile(pattern, options))
    except re2.error as e:
        reason = e.args[0].decode('utf-8', 'replace') if e.args and isinstance(
            e.args[0], bytes) else str(e)
        raise UserError('{} `{}` is not a regular expression that can be matched safely: {} '
                        '(RE2 syntax, which leaves out backreferences and lookarounds).'.format(
                            flag, pattern, reason))


class Pattern:
    """A compiled RE2 pattern that takes any name Python holds: a file name
    that is not valid UTF-8 reaches Python with surrogates, which RE2 cannot
    encode; such bytes are matched as their escapes (`\\udcff`)."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.groups = compiled.groups

    def search(self, text):
        return self.compiled.search(encodable(text))

    def match(self, text):
        return self.compiled.match(encodable(text))

    def fullmatch(self, text):
        return self.compiled.fullmatch(encodable(text))


def encodable(text):
    """`text`, its surrogates (bytes that were not UTF-8) written as escapes."""
    try:
        text.encode('utf-8')
        return text
    except UnicodeEncodeError:
        return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def argument(flag, groups=0, remedy=''):
    """An argparse type that takes a pattern `compile` accepts, with at least
    `groups` groups (`remedy` says how to add them), and returns it as text."""
    def check(arg):
        try:
            compiled = compile(arg, flag)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e))
        if compiled.groups < groups:
            raise argparse.ArgumentTypeError('`{}` has no group; {}'.format(arg, remedy))
        return arg
    check.__name__ = 'regular expression'
    return check
