"""State machines for persisted states: one StrEnum and one transition table each.

Every place that changes a persisted state asks its machine first (``transition(old,
new)``); an illegal move raises :class:`IllegalTransition` (or the machine's own subclass)
instead of writing a state no other part expects. Staying in the same state is not a move
and is always allowed. Bulk ``UPDATE ... WHERE status IN (...)`` statements check every
``old`` they name (:meth:`Machine.check_all`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["IllegalTransition", "Machine"]

S = TypeVar("S", bound=StrEnum)


class IllegalTransition(ValueError):
    """A state change the machine's transition table does not allow."""

    def __init__(self, machine: str, old: str, new: str, allowed: Iterable[str]) -> None:
        self.machine, self.old, self.new = machine, str(old), str(new)
        self.allowed = tuple(str(a) for a in allowed)
        reachable = ", ".join(self.allowed) or "nothing"
        super().__init__(
            f"{machine}: cannot go from {self.old} to {self.new} (from {self.old}: {reachable})"
        )


class Machine(Generic[S]):
    """A state type and its allowed moves; ``error`` is the exception class raised."""

    def __init__(
        self,
        name: str,
        states: type[S],
        table: Mapping[S, Iterable[S]],
        *,
        error: type[IllegalTransition] = IllegalTransition,
    ) -> None:
        self.name, self.states, self.error = name, states, error
        self.table: dict[S, frozenset[S]] = {s: frozenset(table.get(s, ())) for s in states}
        for source, targets in table.items():
            if source not in self.table or not set(targets) <= set(states):
                raise ValueError(f"{name}: the table names unknown states")

    def check(self, old: str, new: str, *, subject: str = "") -> S:
        """``new`` as a state if the move is allowed; raises ``error`` if it is not.
        ``subject`` names the thing in the error (``campaign 'spring'``)."""
        name = subject or self.name
        try:
            source, target = self.states(old), self.states(new)
        except ValueError:
            raise self.error(name, old, new, ()) from None
        if source != target and target not in self.table[source]:
            raise self.error(name, old, new, sorted(self.table[source]))
        return target

    def check_all(self, olds: Iterable[str], new: str) -> S:
        """Check the move to ``new`` from each of ``olds`` (for bulk updates)."""
        target = self.states(new)
        for old in olds:
            target = self.check(old, new)
        return target

    def sources(self, new: str) -> tuple[S, ...]:
        """The states ``new`` may be reached from (itself included), in declaration order."""
        target = self.states(new)
        return tuple(s for s in self.states if s == target or target in self.table[s])
