"""Segments: saved expressions and their compilation to SQL (language: docs/segments.md).

A parsed expression (segment_language.py) becomes one SQL ``WHERE`` over ``customers``
left-joined to ``customer_scores``; counting and previewing run in the database, so no
customer is loaded into Python except the few a preview shows. Every compiled condition is
never NULL (a customer without scores gets the documented defaults), so ``not`` means
exactly the complement.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.customers.segment_language import (
    And,
    Duration,
    Node,
    Not,
    Or,
    Predicate,
    SegmentError,
    parse,
)
from storage.measures import Referral
from storage.models import (
    Customer,
    CustomerTag,
    Group,
    Identity,
    Membership,
    Tag,
)
from storage.scores import CustomerScore
from storage.segments import SavedSegment, delete_segment, list_segments, saved_expression
from storage.tag_scores import EPSILON, TagInterest, current_log2

__all__ = [
    "MAX_CONDITIONS",
    "MAX_SEGMENT_DEPTH",
    "STAGES",
    "CompiledSegment",
    "SegmentBudgetError",
    "compile_segment",
    "count_segment",
    "delete_segment",
    "iter_segment_ids",
    "list_segments",
    "preview_segment",
    "save_segment",
]

#: Lifecycle stages and the Chinese names accepted for them in expressions.
STAGES = {
    "new": "new",
    "activated": "activated",
    "retained": "retained",
    "dormant": "dormant",
    "churned": "churned",
    "新客": "new",
    "激活": "activated",
    "留存": "retained",
    "沉睡": "dormant",
    "流失": "churned",
}
_YES = {
    "yes": True,
    "true": True,
    "1": True,
    "是": True,
    "no": False,
    "false": False,
    "0": False,
    "否": False,
}


@dataclass(frozen=True)
class CompiledSegment:
    """An expression compiled to a condition over ``customers`` (joined to scores)."""

    expression: str
    where: ColumnElement[bool]

    def select_ids(self) -> Select:
        return (
            select(Customer.id)
            .select_from(Customer)
            .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
            .where(self.where)
        )

    def select_count(self) -> Select:
        return (
            select(func.count())
            .select_from(Customer)
            .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
            .where(self.where)
        )


#: Saved segments may refer to saved segments this many levels deep ...
MAX_SEGMENT_DEPTH = 4
#: ... and an expression, with every saved segment expanded, has at most this many tests.
MAX_CONDITIONS = 200


class SegmentBudgetError(SegmentError):
    """Saved segments expand too deep or too large; ``budget_key`` names the localized
    explanation (``budget.segment.depth`` / ``budget.segment.size``), ``limit`` the bound."""

    def __init__(self, kind: str, limit: int, position: int, expression: str) -> None:
        what = {
            "depth": f"saved segments nest more than {limit} levels deep",
            "size": f"with saved segments expanded the expression has more than {limit} tests",
        }[kind]
        super().__init__(what, position, expression)
        self.budget_key, self.limit = f"budget.segment.{kind}", limit


class _Compiler:
    def __init__(self, session: Session | None, config: Config, now: datetime, text: str):
        self.session, self.config, self.now, self.text = session, config, now, text
        self.tiers = [t.name for t in config.tiers.levels]
        self.groups = [g.name for g in config.rfm.groups]
        self.stack: list[str] = []
        self._saved: dict[str, tuple[str, Node] | None] = {}

    def saved_tree(self, name: str, position: int) -> tuple[str, Node]:
        """A saved segment's expression and syntax tree (read once per compile)."""
        if name not in self._saved:
            if self.session is None:
                raise self.fail("saved segments need a database session", position)
            expression = saved_expression(self.session, name)
            if expression is None:
                self._saved[name] = None
            else:
                try:
                    self._saved[name] = (expression, parse(expression))
                except SegmentError as exc:
                    raise self.fail(
                        f"saved segment {name!r} is invalid: {exc.message}", position
                    ) from None
        found = self._saved[name]
        if found is None:
            raise self.fail(f"no saved segment named {name!r}", position)
        return found

    def measure(self, tree: Node) -> None:
        """Check the expansion budget on the syntax trees alone, before any SQL is built:
        saved segments nest at most MAX_SEGMENT_DEPTH deep and the expanded expression has
        at most MAX_CONDITIONS tests (each saved segment is sized once, so this is cheap
        however often it is repeated)."""
        sizes: dict[str, tuple[int, int]] = {}

        def walk(node: Node, chain: tuple[str, ...]) -> tuple[int, int]:
            if isinstance(node, And | Or):
                size, depth = 0, 0
                for item in node.items:
                    s, d = walk(item, chain)
                    size, depth = size + s, max(depth, d)
                    if size > MAX_CONDITIONS:
                        break
                return size, depth
            if isinstance(node, Not):
                return walk(node.item, chain)
            if node.field != "segment":
                return 1, 0
            name = str(node.value)
            if name in chain:
                raise self.fail(
                    f"segment {name!r} refers to itself ({' → '.join([*chain, name])})",
                    node.position,
                )
            if len(chain) >= MAX_SEGMENT_DEPTH:
                raise SegmentBudgetError("depth", MAX_SEGMENT_DEPTH, node.position, self.text)
            if name not in sizes:
                _, saved = self.saved_tree(name, node.position)
                size, depth = walk(saved, (*chain, name))
                sizes[name] = (size, depth + 1)
            return sizes[name]

        size, depth = walk(tree, ())
        if depth > MAX_SEGMENT_DEPTH:
            raise SegmentBudgetError("depth", MAX_SEGMENT_DEPTH, 0, self.text)
        if size > MAX_CONDITIONS:
            raise SegmentBudgetError("size", MAX_CONDITIONS, 0, self.text)

    def fail(self, message: str, position: int) -> SegmentError:
        return SegmentError(message, position, self.text)

    def node(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(*(self.node(n) for n in node.items))
        if isinstance(node, Or):
            return or_(*(self.node(n) for n in node.items))
        if isinstance(node, Not):
            return not_(self.node(node.item))
        return self.predicate(node)

    # -- helpers -------------------------------------------------------------------------

    def _name(self, column, value: str, op: str, default: str | None) -> ColumnElement[bool]:
        """column = value, never NULL (a missing score row counts as ``default``)."""
        test = and_(column.is_not(None), column == value)
        if default is not None and default == value:
            test = or_(CustomerScore.customer_id.is_(None), test)
        return not_(test) if op == "!=" else test

    def _compare(self, column, op: str, value, default) -> ColumnElement[bool]:
        """column <op> value, never NULL; NULL counts as ``default`` (None: never true)."""
        ops = {
            "<": column < value,
            "<=": column <= value,
            ">": column > value,
            ">=": column >= value,
            "=": column == value,
            "!=": column != value,
        }
        test = and_(column.is_not(None), ops[op])
        if default is not None and _holds(default, op, value):
            test = or_(column.is_(None), test)
        return test

    def _age(self, column, op: str, span: Duration) -> ColumnElement[bool]:
        """``column < 30d``: happened less than 30 days ago. Never happened counts as
        infinitely long ago (so it matches ``>`` and ``>=``)."""
        cutoff = self.now - timedelta(seconds=span.seconds)
        if op == "<":
            return and_(column.is_not(None), column > cutoff)
        if op == "<=":
            return and_(column.is_not(None), column >= cutoff)
        if op == ">":
            return or_(column.is_(None), column < cutoff)
        return or_(column.is_(None), column <= cutoff)

    def _tag_score(self, tag: str, op: str, value: float) -> ColumnElement[bool]:
        """The customer's current interest score in ``tag`` <op> value (no row: 0)."""
        if op in ("<", "<="):  # the complement of >= / >
            return not_(self._tag_score(tag, ">=" if op == "<" else ">", value))
        strict = op == ">"
        if value < 0 or (value == 0 and not strict):
            return true()
        rows = (
            select(TagInterest.customer_id)
            .join(Tag, Tag.id == TagInterest.tag_id)
            .where(Tag.name == tag)
        )
        if value > 0:
            current, bound = current_log2(self.now), math.log2(value)
            rows = rows.where(current > bound + EPSILON if strict else current >= bound - EPSILON)
        return Customer.id.in_(rows)

    # -- predicates ----------------------------------------------------------------------

    def predicate(self, p: Predicate) -> ColumnElement[bool]:
        v: Any = p.value  # its type follows the field's kind (segment_language.FIELDS)
        negate = p.op == "!="
        test: ColumnElement[bool]
        if p.field == "tag":
            test = Customer.id.in_(
                select(CustomerTag.customer_id)
                .join(Tag, Tag.id == CustomerTag.tag_id)
                .where(Tag.name == v)
                .where(or_(CustomerTag.expires_at.is_(None), CustomerTag.expires_at > self.now))
            )
        elif p.field == "rfm":
            if v not in self.groups and v != "none":
                raise self.fail(
                    f"unknown RFM group {v!r} (known: {', '.join(self.groups)})", p.position
                )
            test = (
                or_(CustomerScore.customer_id.is_(None), CustomerScore.rfm_group.is_(None))
                if v == "none"
                else self._name(CustomerScore.rfm_group, v, ":", None)
            )
        elif p.field == "tier":
            if v not in self.tiers and v != "none":
                raise self.fail(
                    f"unknown tier {v!r} (known: {', '.join(self.tiers)}, none)", p.position
                )
            test = (
                or_(CustomerScore.customer_id.is_(None), CustomerScore.tier.is_(None))
                if v == "none"
                else self._name(CustomerScore.tier, v, ":", None)
            )
        elif p.field == "stage":
            stage = STAGES.get(str(v).lower(), STAGES.get(str(v)))
            if stage is None:
                known = ", ".join(k for k in STAGES)
                raise self.fail(f"unknown lifecycle stage {v!r} (known: {known})", p.position)
            test = self._name(CustomerScore.lifecycle, stage, ":", "new")
        elif p.field == "city":
            test = and_(Customer.city.is_not(None), Customer.city == v)
        elif p.field == "locale":
            test = Customer.locale == v
        elif p.field == "opt_out":
            flag = _YES.get(str(v).lower())
            if flag is None:
                raise self.fail(f"opt_out takes yes or no, got {v!r}", p.position)
            test = Customer.marketing_opt_out.is_(flag)
        elif p.field == "channel":
            test = exists().where(Identity.customer_id == Customer.id, Identity.channel == v)
        elif p.field == "group":
            test = exists().where(
                Membership.customer_id == Customer.id,
                Membership.active.is_(True),
                Membership.group_id.in_(
                    select(Group.id).where(or_(Group.external_id == v, Group.title == v))
                ),
            )
        elif p.field == "referred_by":
            try:
                referrer = int(str(v))
            except ValueError:
                raise self.fail(
                    f"referred_by takes a customer id (a number), got {v!r}", p.position
                ) from None
            test = exists().where(
                Referral.referred_id == Customer.id, Referral.referrer_id == referrer
            )
        elif p.field == "referrals":
            invited = (
                select(func.count())
                .select_from(Referral)
                .where(Referral.referrer_id == Customer.id)
                .scalar_subquery()
            )
            return self._compare(invited, p.op, int(v), 0)
        elif p.field == "tagscore":
            return self._tag_score(v.tag, p.op, float(v.number))
        elif p.field == "segment":
            test = self.saved(str(v), p.position)
        elif p.field == "last_active":
            return self._age(Customer.last_active_at, p.op, v)
        elif p.field == "last_order":
            return self._age(CustomerScore.last_order_at, p.op, v)
        elif p.field == "created":
            return self._age(Customer.created_at, p.op, v)
        elif p.field in ("orders", "r", "f", "m"):
            column = {
                "orders": CustomerScore.orders_total,
                "r": CustomerScore.r_score,
                "f": CustomerScore.f_score,
                "m": CustomerScore.m_score,
            }[p.field]
            if p.field == "orders":
                return self._compare(column, p.op, int(v), 0)
            return self._compare(column, p.op, int(v), None)
        elif p.field in ("spend", "spend_12m"):
            column = (
                CustomerScore.spend_total_cents
                if p.field == "spend"
                else CustomerScore.spend_12m_cents
            )
            cents = int((Decimal(v) * 100).to_integral_value())
            return self._compare(column, p.op, cents, 0)
        else:  # pragma: no cover - the parser only lets known fields through
            raise self.fail(f"unknown field {p.field!r}", p.position)
        return not_(test) if negate else test

    def saved(self, name: str, position: int) -> ColumnElement[bool]:
        if name in self.stack:
            raise self.fail(
                f"segment {name!r} refers to itself ({' → '.join([*self.stack, name])})", position
            )
        expression, tree = self.saved_tree(name, position)
        self.stack.append(name)
        outer_text, self.text = self.text, expression
        try:
            return self.node(tree)
        except SegmentError as exc:
            raise SegmentError(
                f"in saved segment {name!r}: {exc.message}", position, outer_text
            ) from None
        finally:
            self.text = outer_text
            self.stack.pop()


def _holds(default, op: str, value) -> bool:
    return {
        "<": default < value,
        "<=": default <= value,
        ">": default > value,
        ">=": default >= value,
        "=": default == value,
        "!=": default != value,
    }[op]


def compile_segment(
    expression: str, *, config: Config, now: datetime, session: Session | None = None
) -> CompiledSegment:
    """Parse and compile; raises :class:`SegmentError` (with position) on a bad expression,
    :class:`SegmentBudgetError` when saved segments expand beyond the budget."""
    tree = parse(expression)
    compiler = _Compiler(session, config, now, expression)
    compiler.measure(tree)
    where = compiler.node(tree)
    return CompiledSegment(expression, where if where is not None else true())


def count_segment(session: Session, expression: str, *, config: Config, now: datetime) -> int:
    """How many customers match (one COUNT query)."""
    compiled = compile_segment(expression, config=config, now=now, session=session)
    return int(session.scalar(compiled.select_count()) or 0)


def preview_segment(
    session: Session, expression: str, *, config: Config, now: datetime, limit: int = 10
) -> list[Customer]:
    """The first ``limit`` matching customers by id."""
    compiled = compile_segment(expression, config=config, now=now, session=session)
    ids = compiled.select_ids().order_by(Customer.id).limit(limit)
    return list(session.scalars(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)))


def iter_segment_ids(
    session: Session, expression: str, *, config: Config, now: datetime, batch: int = 5000
) -> Iterator[int]:
    """Every matching customer id, streamed in batches by keyset (constant memory)."""
    compiled = compile_segment(expression, config=config, now=now, session=session)
    last = 0
    while True:
        ids = list(
            session.scalars(
                compiled.select_ids().where(Customer.id > last).order_by(Customer.id).limit(batch)
            )
        )
        if not ids:
            return
        yield from ids
        last = ids[-1]


def save_segment(
    session: Session,
    name: str,
    expression: str,
    *,
    config: Config,
    now: datetime,
    created_by: str = "",
) -> SavedSegment:
    """Save (or replace) a named segment after checking it compiles."""
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise SegmentError("a segment name is 1-64 characters without spaces", 0, name)
    compile_segment(expression, config=config, now=now, session=session)
    with session.begin_nested():  # rolled back if the new definition makes a loop
        row = session.scalars(select(SavedSegment).where(SavedSegment.name == name)).one_or_none()
        if row is None:
            row = SavedSegment(name=name, created_at=now, created_by=created_by)
            session.add(row)
        row.expression, row.updated_at = expression, now
        session.flush()
        compile_segment(f"segment:{_quote(name)}", config=config, now=now, session=session)
    return row


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
