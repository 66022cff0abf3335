"""A transaction is all or nothing on both backends, whatever its first statement.

On SQLite the driver's own transaction handling used to emit BEGIN only before an
INSERT/UPDATE/DELETE: a transaction that opened with a savepoint ran outside any BEGIN and
releasing the savepoint committed it, so a customers import committed row by row. The
engine now emits BEGIN itself (storage/db.py); write transactions take SQLite's write lock
at BEGIN, so one that reads before it writes never fails on a snapshot another process
made stale.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from bot.customers.import_customers import import_customers
from storage.db import Database
from storage.models import Customer, Identity

NOW = datetime(2026, 3, 6, 1, 0, tzinfo=UTC)


class Abandoned(Exception):
    """What a test raises to abandon its transaction."""


def customers(db: Database) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(Customer)) or 0


def new_customer(name: str) -> Customer:
    return Customer(display_name=name, locale="zh-CN", timezone="Asia/Shanghai", created_at=NOW)


def test_a_transaction_that_opens_with_a_savepoint_is_rolled_back_whole(db):
    with pytest.raises(Abandoned), db.transaction() as session:
        with session.begin_nested():  # the transaction's very first statement
            session.add(new_customer("a"))
        with session.begin_nested():
            session.add(new_customer("b"))
        raise Abandoned
    assert customers(db) == 0
    with db.transaction() as session, session.begin_nested():
        session.add(new_customer("kept"))
    assert customers(db) == 1  # and a committed one is kept


def test_an_import_abandoned_midway_leaves_nothing(db):
    text = "customer,name,birthday\n" + "".join(
        f"telegram:{i},客户{i},1990-01-{i:02d}\n" for i in range(1, 21)
    )
    with pytest.raises(Abandoned), db.transaction() as session:
        report = import_customers(
            session,
            text,
            now=NOW,
            today=date(2026, 3, 6),
            default_locale="zh-CN",
            default_timezone="Asia/Shanghai",
        )
        assert report.created == 20 and not report.errors
        raise Abandoned  # e.g. the process stops before the import's commit
    assert customers(db) == 0
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Identity)) == 0


def test_sqlite_write_transactions_that_read_first_wait_for_each_other(sqlite_url):
    first, second = Database(sqlite_url), Database(sqlite_url)  # two processes' engines
    failures: list[BaseException] = []
    started = threading.Event()

    def write_from_the_other_process() -> None:
        started.set()
        try:
            with second.transaction() as session:
                session.add(new_customer("other"))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    try:
        with first.transaction() as session:
            assert session.scalar(select(func.count()).select_from(Customer)) == 0  # a read
            other = threading.Thread(target=write_from_the_other_process)
            other.start()
            assert started.wait(10)
            # The other writer waits for the write lock this transaction holds; with a
            # deferred BEGIN it would commit now and make this transaction's snapshot stale.
            other.join(0.5)
            assert other.is_alive()
            session.add(new_customer("this"))  # the write after the read: no "locked"
        other.join(15)
        assert not other.is_alive()
        assert failures == []
        assert customers(first) == 2
    finally:
        first.close()
        second.close()
