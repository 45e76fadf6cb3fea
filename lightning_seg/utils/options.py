"""Command-line options read as groups, for commands that pass some of their options on to another."""

from __future__ import annotations


def option_groups(argv: list[str]) -> list[list[str]]:
    """``argv`` as its options, in order: ``[--name=value]``, ``[--name, value]`` (a word that does not start
    with ``--`` is the value of the option before it) or ``[--flag]``; a stray word is a group of its own."""
    groups: list[list[str]] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        takes_value = "=" not in arg and index + 1 < len(argv) and not argv[index + 1].startswith("--")
        groups.append([arg, argv[index + 1]] if takes_value else [arg])
        index += len(groups[-1])
    return groups
