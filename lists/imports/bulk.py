"""Bulk SQL for imports, on SQLite and PostgreSQL, through the DBAPI cursor.

The ORM inserts ~7k rows/s and Core executemany ~44k; an import of a million rows needs more,
so the hot path writes pre-formatted tuples: ``executemany`` on SQLite, one ``unnest`` statement
per batch on PostgreSQL. Values are given in each backend's storage format (see :meth:`Bulk.ts`).
Table and column names in the SQL built here come from the importers' constants, never from input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

# SQLite's default limit of bound variables is 32766; stay well under it with the extra ones.
_SQLITE_IN_CHUNK = 10_000


class Bulk:
    """Write helpers bound to one connection inside one transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.cur: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    @classmethod
    @contextmanager
    def transaction(cls, engine: Engine) -> Iterator[Bulk]:
        """One committed transaction. On SQLite it takes the write lock at once (BEGIN
        IMMEDIATE), so what a batch reads cannot change before it writes; on PostgreSQL the
        callers' writes are conditional (ON CONFLICT DO NOTHING, ``WHERE status = …``) and
        RETURNING says which took effect."""
        with engine.begin() as conn:
            bulk = cls(conn)
            if not bulk.pg:
                bulk.cur.execute("BEGIN IMMEDIATE")
            try:
                yield bulk
            finally:
                bulk.cur.close()

    # Values in storage format -------------------------------------------------------------

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as stored: UTC text without offset on SQLite (as SQLAlchemy writes it),
        an aware datetime on PostgreSQL."""
        if value is None or self.pg:
            return value
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def ts_out(self, value: Any) -> datetime | None:
        """A stored timestamp back as an aware UTC datetime."""
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)

    @staticmethod
    def json(value: Any) -> str:
        return json.dumps(value)

    @staticmethod
    def json_out(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    # Statements ----------------------------------------------------------------------------

    def sql(self, text: str) -> str:
        """Our SQL is written with ``?`` placeholders; psycopg wants ``%s``."""
        return text.replace("?", "%s") if self.pg else text

    def execute(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(self.sql(text), tuple(params))
        return list(self.cur.fetchall()) if self.cur.description else []

    def fetch_in(
        self, text: str, values: Sequence[Any], *, pg_type: str = "text", params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Rows of ``text``, whose ``{in}`` marker becomes a membership test on ``values``
        (bound after ``params``)."""
        if not values:
            return []
        if self.pg:
            query = self.sql(text).replace("{in}", f"= ANY(%b::{pg_type}[])")
            self.cur.execute(query, (*params, list(values)))
            return list(self.cur.fetchall())
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(values), _SQLITE_IN_CHUNK):
            chunk = values[i : i + _SQLITE_IN_CHUNK]
            query = text.replace("{in}", f"IN ({','.join('?' * len(chunk))})")
            self.cur.execute(query, (*params, *chunk))
            out.extend(self.cur.fetchall())
        return out

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        pg_types: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        on_conflict: str = "",
        returning: str = "",
    ) -> list[tuple[Any, ...]] | None:
        """Insert ``rows``. With ``returning`` on PostgreSQL, the rows actually inserted;
        None on SQLite, where the write lock held by the transaction makes the caller's own
        existence check exact."""
        if not rows:
            return [] if self.pg else None
        cols = ", ".join(columns)
        if not self.pg:
            marks = ", ".join("?" * len(columns))
            self.cur.executemany(
                f"INSERT INTO {table} ({cols}) VALUES ({marks}) {on_conflict}",  # noqa: S608
                rows,
            )
            return None
        names = [f"c{i}" for i in range(len(columns))]
        select = ", ".join(_pg_cast(n, t) for n, t in zip(names, pg_types, strict=True))
        arrays = ", ".join(f"%b::{_pg_array(t)}[]" for t in pg_types)
        query = (
            f"INSERT INTO {table} ({cols}) SELECT {select} "  # noqa: S608
            f"FROM unnest({arrays}) AS u({', '.join(names)}) {on_conflict}"
        )
        if returning:
            query += f" RETURNING {returning}"
        self.cur.execute(query, _columns(rows, len(columns)))
        return list(self.cur.fetchall()) if returning else None

    def insert_new(
        self,
        table: str,
        columns: Sequence[str],
        pg_types: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        key: str,
    ) -> dict[Any, int]:
        """Insert rows that this transaction found missing; their ``id`` by the value of the
        unique column ``key``. On SQLite the write lock makes the new ids the next ones after
        the current maximum, checked rather than read back (a second lookup per row); on
        PostgreSQL RETURNING gives them, and a row another writer inserted meanwhile is looked
        up."""
        if not rows:
            return {}
        at = list(columns).index(key)
        lookup = f"SELECT {key}, id FROM {table} WHERE {key} {{in}}"  # noqa: S608
        if self.pg:
            returned = self.insert(
                table, columns, pg_types, rows, on_conflict=f"ON CONFLICT ({key}) DO NOTHING",
                returning=f"{key}, id",
            )
            ids = dict(returned or [])
            missing = [r[at] for r in rows if r[at] not in ids]
            ids.update(self.fetch_in(lookup, missing))
            return ids
        top = f"SELECT coalesce(max(id), 0) FROM {table}"  # noqa: S608
        newest = f"SELECT count(*), max(id) FROM {table} WHERE id > ?"  # noqa: S608
        ((before,),) = self.execute(top)
        self.insert(table, columns, pg_types, rows)
        check = self.execute(newest, (before,))
        if check[0] == (len(rows), before + len(rows)):
            return {r[at]: before + 1 + i for i, r in enumerate(rows)}
        return dict(self.fetch_in(lookup, [r[at] for r in rows]))

    def update(
        self,
        table: str,
        key: str,
        columns: Sequence[str],
        pg_types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """``UPDATE table SET columns… WHERE key = …`` for each row (values first, key last)."""
        if not rows:
            return
        if not self.pg:
            sets = ", ".join(f"{c} = ?" for c in columns)
            self.cur.executemany(f"UPDATE {table} SET {sets} WHERE {key} = ?", rows)  # noqa: S608
            return
        names = [f"c{i}" for i in range(len(columns))]
        sets = ", ".join(
            f"{c} = {_pg_cast('u.' + n, t)}"
            for c, n, t in zip(columns, names, pg_types, strict=True)
        )
        arrays = ", ".join(f"%b::{_pg_array(t)}[]" for t in (*pg_types, "int8"))
        query = (
            f"UPDATE {table} SET {sets} FROM unnest({arrays}) "  # noqa: S608
            f"AS u({', '.join(names)}, k) "
            f"WHERE {table}.{key} = u.k"
        )
        self.cur.execute(query, _columns(rows, len(columns) + 1))


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    cols = [list(c) for c in zip(*rows, strict=True)]
    assert len(cols) == width, "row width does not match the columns"
    return cols


def _pg_array(pg_type: str) -> str:
    # JSON travels as text and is cast per element: psycopg adapts lists of str as text[].
    return "text" if pg_type == "jsonb" else pg_type


def _pg_cast(name: str, pg_type: str) -> str:
    return f"{name}::jsonb" if pg_type == "jsonb" else name
