"""Siyu's storage: SQLAlchemy 2 models, the database, repositories and migrations."""
