"""The segment expression language: tokenizer and parser (see docs/segments.md).

``tag:母婴 and rfm:重要价值 and not tier:黑卡 and last_active < 30d and city:杭州``

This module only turns text into a small syntax tree and checks it; compiling the tree to
SQL is bot/customers/segments.py. Every error is a :class:`SegmentError` carrying the 0-based
character position of the problem, so a manager sees exactly where the expression broke.
Parsing is iterative over tokens with a depth limit: no ``eval``, no unbounded recursion.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = [
    "And",
    "Duration",
    "Not",
    "Or",
    "Predicate",
    "SegmentError",
    "TagScore",
    "fields_help",
    "parse",
]

MAX_LENGTH = 2000
MAX_DEPTH = 32

#: field → kind: "name" takes ``field:value``; "duration" and "number" take a comparison.
FIELDS: dict[str, str] = {
    "tag": "name",
    "rfm": "name",
    "tier": "name",
    "stage": "name",
    "city": "name",
    "locale": "name",
    "channel": "name",
    "group": "name",
    "segment": "name",
    "tagscore": "tagscore",
    "opt_out": "name",
    "last_active": "duration",
    "last_order": "duration",
    "created": "duration",
    "orders": "number",
    "spend": "number",
    "spend_12m": "number",
    "r": "number",
    "f": "number",
    "m": "number",
    "referrals": "number",
    "referred_by": "name",
}
COMPARISONS = ("<", "<=", ">", ">=", "=", "!=")


class SegmentError(ValueError):
    """A bad segment expression: what is wrong and at which character (0-based)."""

    def __init__(
        self,
        message: str,
        position: int,
        expression: str = "",
        *,
        key: str | None = None,
        **values: object,
    ) -> None:
        self.message, self.position, self.expression = message, position, expression
        self.key, self.values = key, values
        super().__init__(f"{message} (at position {position})")

    def line(self, locale: str | None) -> str:
        """The problem in the reader's locale on one line (no expression, no caret)."""
        if self.key is None:
            return self.message
        from bot.core.i18n import t

        return t(self.key, locale, position=self.position, **self.values)

    def text(self, locale: str | None) -> str:
        """The problem in the reader's locale (with the caret), English without a key."""
        if self.key is None:
            return self.pretty()
        line = self.line(locale)
        if not self.expression:
            return line
        return f"{line}\n  {self.expression}\n  {' ' * self.position}^"

    def pretty(self) -> str:
        """The message, the expression and a caret under the position."""
        if not self.expression:
            return str(self)
        return f"{self}\n  {self.expression}\n  {' ' * self.position}^"


@dataclass(frozen=True)
class Duration:
    """A time span written like ``30d`` or ``12h``."""

    seconds: int
    text: str


@dataclass(frozen=True)
class TagScore:
    """``tagscore:母婴 >= 3``: a tag and the number its interest score is compared with."""

    tag: str
    number: Decimal


@dataclass(frozen=True)
class Predicate:
    """One test on a customer: ``field op value`` (``:`` for name fields)."""

    field: str
    op: str
    value: str | Decimal | Duration | TagScore
    position: int


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node = Predicate | Not | And | Or


@dataclass(frozen=True)
class _Token:
    kind: str  # word, string, op, lparen, rparen, end
    text: str
    position: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<op><=|>=|!=|<|>|=|:)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<unterminated>")
  | (?P<word>[^\s()<>=!:"]+)
  | (?P<bad>.)
    """,
    re.VERBOSE,
)
_DURATION = re.compile(r"^(\d{1,6})([dh])$")
_UNIT_SECONDS = {"d": 86400, "h": 3600}


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "space":
            continue
        if kind == "unterminated":
            raise SegmentError('unterminated quoted value (missing closing ")', m.start(), text)
        if kind == "bad":
            raise SegmentError(f"unexpected character {m.group()!r}", m.start(), text)
        value = m.group()
        assert kind is not None  # every alternative of the pattern is a named group
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append(_Token(kind, value, m.start()))
    out.append(_Token("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    def fail(self, message: str, position: int) -> SegmentError:
        return SegmentError(message, position, self.text)

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def keyword(self, word: str) -> bool:
        return self.tok.kind == "word" and self.tok.text.lower() == word

    def describe(self, tok: _Token) -> str:
        return "the end of the expression" if tok.kind == "end" else repr(tok.text)

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.fail("empty expression", 0)
        node = self.or_expr()
        if self.tok.kind != "end":
            expected = "'and', 'or' or ')'" if self.tok.kind != "rparen" else "no ')' here"
            if self.tok.kind == "rparen":
                raise self.fail("unbalanced ')'", self.tok.position)
            raise self.fail(
                f"expected {expected}, got {self.describe(self.tok)}", self.tok.position
            )
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.keyword("or"):
            self.i += 1
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.keyword("and"):
            self.i += 1
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        negations = 0
        while self.keyword("not"):
            self.i += 1
            negations += 1
        node = self.atom()
        for _ in range(negations):
            node = Not(node)
        return node

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind == "lparen":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"nested deeper than {MAX_DEPTH} parentheses", tok.position)
            self.i += 1
            node = self.or_expr()
            if self.tok.kind != "rparen":
                raise self.fail(
                    f"expected ')' to close the '(' at position {tok.position}, "
                    f"got {self.describe(self.tok)}",
                    self.tok.position,
                )
            self.i += 1
            self.depth -= 1
            return node
        if tok.kind != "word" or tok.text.lower() in ("and", "or", "not"):
            raise self.fail(
                f"expected a condition such as tag:母婴, got {self.describe(tok)}", tok.position
            )
        return self.predicate()

    def predicate(self) -> Predicate:
        name_tok = self.tok
        field = name_tok.text.lower()
        kind = FIELDS.get(field)
        if kind is None:
            close = difflib.get_close_matches(field, list(FIELDS), n=1, cutoff=0.5)
            raise SegmentError(
                f"unknown field {name_tok.text!r} (known: {', '.join(FIELDS)})",
                name_tok.position,
                self.text,
                key="segment.error.unknown_field_suggest"
                if close
                else "segment.error.unknown_field",
                field=name_tok.text[:40],
                known=", ".join(FIELDS),
                suggestion=close[0] if close else "",
            )
        self.i += 1
        op_tok = self.tok
        if op_tok.kind != "op":
            want = "':'" if kind in ("name", "tagscore") else "a comparison (<, <=, >, >=, =, !=)"
            raise self.fail(
                f"expected {want} after {field!r}, got {self.describe(op_tok)}", op_tok.position
            )
        op = op_tok.text
        if kind == "tagscore":
            return self.tag_score(op_tok)
        if kind == "name" and op not in (":", "=", "!="):
            raise self.fail(
                f"{field!r} takes ':' (e.g. {field}:value), not {op!r}", op_tok.position
            )
        if kind != "name" and op == ":":
            raise self.fail(f"{field!r} needs a comparison such as {field} < 30d", op_tok.position)
        if kind == "duration" and op in ("=", "!="):
            raise self.fail(f"{field!r} compares with <, <=, > or >=", op_tok.position)
        self.i += 1
        value_tok = self.tok
        if value_tok.kind not in ("word", "string") or (
            value_tok.kind == "word" and value_tok.text.lower() in ("and", "or", "not")
        ):
            raise self.fail(
                f"expected a value after {field}{op}, got {self.describe(value_tok)}",
                value_tok.position,
            )
        self.i += 1
        raw = value_tok.text
        value: str | Decimal | Duration
        if kind == "duration":
            m = _DURATION.match(raw.lower())
            if not m:
                raise self.fail(
                    f"expected a duration such as 30d or 12h, got {raw!r}", value_tok.position
                )
            value = Duration(int(m.group(1)) * _UNIT_SECONDS[m.group(2)], raw)
        elif kind == "number":
            try:
                value = Decimal(raw)
            except InvalidOperation:
                raise self.fail(f"expected a number, got {raw!r}", value_tok.position) from None
            if not value.is_finite() or abs(value) > Decimal("1e12"):
                raise self.fail(f"number {raw!r} is out of range", value_tok.position)
        else:
            if not raw:
                raise self.fail(f"empty value for {field!r}", value_tok.position)
            value = raw
        if op == "=" and kind == "name":
            op = ":"
        if field == "tag" and op == ":" and self.tok.kind == "op" and self.tok.text != ":":
            return self.score_comparison(str(value), value_tok.position)  # tag:母婴 >= 3
        return Predicate(field, op, value, value_tok.position)

    def tag_score(self, op_tok: _Token) -> Predicate:
        """``tagscore:<tag> <comparison> <number>``."""
        if op_tok.text not in (":", "="):
            raise self.fail(
                f"write tagscore:<tag> >= <number>, e.g. tagscore:母婴 >= 3, got {op_tok.text!r}",
                op_tok.position,
            )
        self.i += 1
        tag_tok = self.tok
        if tag_tok.kind not in ("word", "string") or not tag_tok.text:
            raise self.fail(
                f"expected a tag after tagscore:, got {self.describe(tag_tok)}", tag_tok.position
            )
        self.i += 1
        return self.score_comparison(tag_tok.text, tag_tok.position)

    def score_comparison(self, tag: str, position: int) -> Predicate:
        """The ``>= 3`` after a tag, for an interest-score condition on it."""
        op_tok = self.tok
        if op_tok.kind != "op" or op_tok.text not in ("<", "<=", ">", ">="):
            got = self.describe(op_tok) if op_tok.kind != "op" else repr(op_tok.text)
            raise self.fail(
                f"an interest score compares with <, <=, > or >= (e.g. tagscore:{tag} >= 3), "
                f"got {got}",
                op_tok.position,
            )
        self.i += 1
        num_tok = self.tok
        if num_tok.kind != "word":
            raise self.fail(
                f"expected a number after {op_tok.text}, got {self.describe(num_tok)}",
                num_tok.position,
            )
        try:
            number = Decimal(num_tok.text)
        except InvalidOperation:
            raise self.fail(f"expected a number, got {num_tok.text!r}", num_tok.position) from None
        if not number.is_finite() or abs(number) > Decimal("1e9"):
            raise self.fail(f"number {num_tok.text!r} is out of range", num_tok.position)
        self.i += 1
        return Predicate("tagscore", op_tok.text, TagScore(tag, number), position)


def parse(text: str) -> Node:
    """Parse a segment expression; raises :class:`SegmentError` with the position."""
    if not isinstance(text, str):
        raise SegmentError("the expression must be text", 0)
    if len(text) > MAX_LENGTH:
        raise SegmentError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH, "")
    return _Parser(text).parse()


def fields_help() -> str:
    """A one-line list of the fields, for error replies and --help."""
    return ", ".join(FIELDS)
