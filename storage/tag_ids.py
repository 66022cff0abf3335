"""Tag ids by name, cached per database (the hot path tags on most messages).

Tags are never renamed or deleted, so an id found in a committed row holds for the life of
the process. A tag created by the current transaction is kept in that session only (the
transaction may roll back, and other transactions, in other threads, share the process
cache) and joins the process cache once that transaction commits; :func:`forget_cached_ids`
drops a database's cache after a rollback.
"""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from storage.db import insert_ignore
from storage.models import Tag

__all__ = ["find_tag_id", "forget_cached_ids", "tag_id"]

_TAG_IDS: dict[str, dict[str, int]] = {}
#: ``session.info`` key: ids of the tags the session's transaction created (not committed).
_CREATED = "siyu_created_tag_ids"


def _cache(session: Session) -> dict[str, int]:
    return _TAG_IDS.setdefault(str(session.get_bind().engine.url), {})


def find_tag_id(session: Session, name: str) -> int | None:
    """The id of an existing tag, or None."""
    cache = _cache(session)
    if (found := cache.get(name)) is not None:
        return found
    created: dict[str, int] = session.info.get(_CREATED, {})
    if (found := created.get(name)) is not None:
        return found
    found = session.scalar(select(Tag.id).where(Tag.name == name))
    if found is not None:  # a committed row (this transaction's own are in ``created``)
        cache[name] = found
    return found


def tag_id(session: Session, name: str) -> int:
    """The id of a tag by name, created if new."""
    found = find_tag_id(session, name)
    if found is not None:
        return found
    inserted = insert_ignore(session, Tag, {"name": name}, ["name"])
    found = session.execute(select(Tag.id).where(Tag.name == name)).scalar_one()
    if inserted:
        created = session.info.get(_CREATED)
        if created is None:  # the first tag this transaction creates
            created = session.info[_CREATED] = {}
            event.listen(session, "after_commit", _publish_created, once=True)
        created[name] = found
    else:  # another transaction committed it meanwhile
        _cache(session)[name] = found
    return found


def _publish_created(session: Session) -> None:
    """After the commit, the tags the transaction created are ids for everyone."""
    created = session.info.pop(_CREATED, None)
    if created:
        _cache(session).update(created)


def forget_cached_ids(engine: Engine, session: Session | None = None) -> None:
    """Drop the ids cached for a database after a rollback (and, after a savepoint's
    rollback, the tags ``session``'s transaction created): they must be looked up again."""
    _TAG_IDS.pop(str(engine.url), None)
    if session is not None:
        session.info.pop(_CREATED, None)
