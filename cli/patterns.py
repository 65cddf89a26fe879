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

from cli import UserError

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
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode('utf-8', 'replace') if e.args and isinstance(
            e.args[0], bytes) else str(e)
        raise UserError('{} `{}` is not a regular expression that can be matched safely: {} '
                        '(RE2 syntax, which leaves out backreferences and lookarounds).'.format(
                            flag, pattern, reason))


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
