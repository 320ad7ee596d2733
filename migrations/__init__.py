"""Alembic migrations of Patron's schema (run by `patron init`)."""
