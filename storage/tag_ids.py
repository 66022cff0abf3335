"""Tag ids by name, cached per database (the hot path tags on most messages).

Tags are never renamed or deleted, so an id found in a committed row holds for the life of
the process. A tag created by the current transaction is not cached (the transaction may
roll back); :func:`forget_cached_ids` drops a database's cache after a rollback.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from storage.db import insert_ignore
from storage.models import Tag

__all__ = ["find_tag_id", "forget_cached_ids", "tag_id"]

_TAG_IDS: dict[str, dict[str, int]] = {}


def _cache(session: Session) -> dict[str, int]:
    return _TAG_IDS.setdefault(str(session.get_bind().engine.url), {})


def find_tag_id(session: Session, name: str) -> int | None:
    """The id of an existing tag, or None."""
    cache = _cache(session)
    if (found := cache.get(name)) is not None:
        return found
    found = session.scalar(select(Tag.id).where(Tag.name == name))
    if found is not None:
        cache[name] = found
    return found


def tag_id(session: Session, name: str) -> int:
    """The id of a tag by name, created if new."""
    found = find_tag_id(session, name)
    if found is not None:
        return found
    insert_ignore(session, Tag, {"name": name}, ["name"])
    return session.execute(select(Tag.id).where(Tag.name == name)).scalar_one()


def forget_cached_ids(engine: Engine) -> None:
    """Drop the ids cached for a database after a rollback: a tag found inside a transaction
    that did not commit (created earlier in the same batch) must be looked up again."""
    _TAG_IDS.pop(str(engine.url), None)
