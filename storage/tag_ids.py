"""Tag ids by name, cached per database (the hot path tags on most messages).

Tags are never renamed or deleted, so an id found in a committed row holds for the life of
the process. An id a transaction looks up or creates is kept in that session until the
transaction commits, and only then joins the process cache: the row may be the
transaction's own and roll back with it, and other transactions, in other threads, share
the process cache. :func:`forget_cached_ids` drops a database's cache after a rollback.
"""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from storage.db import insert_ignore
from storage.models import Tag

__all__ = ["find_tag_id", "forget_cached_ids", "tag_id"]

_TAG_IDS: dict[str, dict[str, int]] = {}
#: ``session.info`` key: the tag ids the session's transaction looked up or created; they
#: join the process cache when it commits.
_SEEN = "siyu_seen_tag_ids"


def _cache(session: Session) -> dict[str, int]:
    return _TAG_IDS.setdefault(str(session.get_bind().engine.url), {})


def _seen(session: Session) -> dict[str, int]:
    seen = session.info.get(_SEEN)
    if seen is None:
        seen = session.info[_SEEN] = {}
        if not event.contains(session, "after_commit", _publish_seen):
            event.listen(session, "after_commit", _publish_seen)
    return seen


def find_tag_id(session: Session, name: str) -> int | None:
    """The id of an existing tag, or None."""
    if (found := _cache(session).get(name)) is not None:
        return found
    seen = _seen(session)
    if (found := seen.get(name)) is not None:
        return found
    # The row may be this transaction's own, not committed yet (created by another path,
    # or before a savepoint that failed): shared only once the transaction commits.
    found = session.scalar(select(Tag.id).where(Tag.name == name))
    if found is not None:
        seen[name] = found
    return found


def tag_id(session: Session, name: str) -> int:
    """The id of a tag by name, created if new."""
    found = find_tag_id(session, name)
    if found is not None:
        return found
    insert_ignore(session, Tag, {"name": name}, ["name"])
    found = session.execute(select(Tag.id).where(Tag.name == name)).scalar_one()
    _seen(session)[name] = found
    return found


def _publish_seen(session: Session) -> None:
    """After the transaction's commit, what it saw is committed: ids for everyone. (Fired
    for a savepoint's release too, when nothing is committed yet: that one waits.)"""
    if session.in_nested_transaction():
        return
    seen = session.info.pop(_SEEN, None)
    if seen:
        _cache(session).update(seen)


def forget_cached_ids(engine: Engine, session: Session | None = None) -> None:
    """Drop the ids cached for a database after a rollback (and, after a savepoint's
    rollback, those ``session``'s transaction saw): they must be looked up again."""
    _TAG_IDS.pop(str(engine.url), None)
    if session is not None:
        session.info.pop(_SEEN, None)
