"""``/healthz`` is degraded (503 with a reason) when the database refuses writes."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from bot.app.assembly import build
from storage.db import Database


def health(config, db, clock):
    app = build(config, db=db, clock=clock)
    return TestClient(app.asgi).get("/healthz")


def test_healthy_database_is_ok(config, db, clock):
    r = health(config, db, clock)
    assert r.status_code == 200 and r.json()["status"] == "ok" and "reason" not in r.json()


def test_read_only_sqlite_file_is_degraded(config, sqlite_db, clock, tmp_path):
    path = sqlite_db.url.removeprefix("sqlite:///")
    read_only = Database(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with read_only.engine.connect() as conn:  # it reads fine ...
            assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 0
        r = health(config, read_only, clock)  # ... but refuses writes
        assert r.status_code == 503
        assert r.json() == {
            "status": "degraded",
            "channels": ["sandbox"],
            "reason": "database is read-only",
        }
    finally:
        read_only.close()


def test_read_only_postgresql_is_degraded(config, pg_url, clock):
    migrated = Database(pg_url)
    migrated.migrate()
    migrated.close()
    name = pg_url.rsplit("/", 1)[1]
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    admin.dispose()
    db = Database(pg_url)
    try:
        r = health(config, db, clock)
        assert r.status_code == 503 and r.json()["reason"] == "database is read-only"
    finally:
        db.close()
