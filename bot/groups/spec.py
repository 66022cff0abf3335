"""Reading a definition line shared by chat commands and the CLI.

``NAME words... key=value ... | free text``: the part before ``|`` is split like a shell
line (quotes group words), words before the first ``key=value`` are positional, and the
text after the first ``|`` is kept as written (line breaks included).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from bot.groups.errors import GroupsError

__all__ = ["Definition", "split_definition"]

MAX_LINE = 8000


@dataclass
class Definition:
    """Positional words, ``key=value`` options and the free text of a definition line."""

    words: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def split_definition(line: str, keys: frozenset[str]) -> Definition:
    """Split ``line``; an unknown ``key=`` or a key given twice is a :class:`GroupsError`."""
    if len(line) > MAX_LINE:
        raise GroupsError("groups.error.too_long", limit=MAX_LINE)
    head, bar, text = line.partition("|")
    try:
        tokens = shlex.split(head)
    except ValueError as exc:
        raise GroupsError("groups.error.quotes", problem=str(exc)) from None
    out = Definition(text=text.strip() if bar else "")
    for token in tokens:
        key, eq, value = token.partition("=")
        if eq and key.isascii() and key.isidentifier():
            key = key.lower()
            if key not in keys:
                raise GroupsError("groups.error.unknown_key", key=key, keys=", ".join(sorted(keys)))
            if key in out.options:
                raise GroupsError("groups.error.twice", key=key)
            out.options[key] = value.strip()
        elif out.options:
            raise GroupsError("groups.error.word_after_options", word=token)
        else:
            out.words.append(token)
    return out
