"""The SQLAlchemy models and the Alembic migrations describe the same schema.

Each backend starts from an empty database, is upgraded to the head by the migrations, and
Alembic's autogenerate comparison then lists what the models have that the database lacks
(and the reverse). The list must be empty: a model changed without a migration (or a
migration without its model) fails here, not in production.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, inspect, text

from storage import schema  # noqa: F401  (registers every table on the metadata)
from storage.db import Database, alembic_config
from storage.models import Base


def schema_drift(url: str, metadata: MetaData) -> list:
    """Migrate an empty database at ``url`` and compare it with ``metadata``."""
    database = Database(url)
    try:
        database.migrate()
        with database.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend."""
    return request.getfixturevalue(f"empty_{'sqlite' if request.param == 'sqlite' else 'pg'}_url")


def test_the_migrated_schema_is_the_models_schema(empty_url):
    assert schema_drift(empty_url, Base.metadata) == []


def test_a_model_column_without_a_migration_is_reported(empty_url):
    models = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(models)
    models.tables["customers"].append_column(Column("nickname", String(64)))
    drift = schema_drift(empty_url, models)
    assert [(op, table, column.name) for op, _schema, table, column in drift] == [
        ("add_column", "customers", "nickname")
    ]


def test_every_test_gets_the_migrated_schema_and_no_rows(db):
    """The databases the fixtures hand out (copies of the session's template, reset between
    tests on PostgreSQL) hold the models' schema and nothing else: no rows, no extra tables."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        tables = inspect(conn).get_table_names()
        assert set(tables) == {*Base.metadata.tables, "alembic_version"}
        rows = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}
    assert {t: n for t, n in rows.items() if n} == {"alembic_version": 1}


def test_the_migration_history_is_one_line():
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(scripts.get_heads()) == 1, scripts.get_heads()
    assert len(scripts.get_bases()) == 1, scripts.get_bases()
