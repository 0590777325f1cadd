"""Least privilege on PostgreSQL: who the service connects as, and what ``ledger migrate
--grant-to ROLE`` grants.

History's tables (the events, the chain and its key's fingerprint, the Merkle leaves, the
checkpoints) are granted to ROLE for SELECT and INSERT only: the database refuses ROLE any
UPDATE, DELETE or TRUNCATE of them, and only their owner can switch their guards (triggers) off.
Every other table of the schema (read models, tracking records, idempotency keys: state the
service rewrites) is granted SELECT, INSERT, UPDATE and DELETE, and the sequences USAGE and
SELECT. Tables are made by the owner (``ledger migrate``), never by ROLE.
"""

from __future__ import annotations

from psycopg.sql import SQL, Identifier

from ledger.settings import StoreSettings
from projections.pgpool import connect

HISTORY_TABLES = ("ledger_events", "ledger_chain", "ledger_chain_key",
                  "ledger_merkle_leaves", "ledger_checkpoints")
# The schema's version, which the owner records once it made every table (``mark_schema``):
# a least-privileged login makes none, so it starts only on a schema of this version or newer
# (``schema_behind``). Raise it with any change to the tables the owner makes.
# 2: ob_scans and ob_messages_by_customer (the outbox's heads); 3: ob_subscriptions.seal
SCHEMA_VERSION = 3
SCHEMA_DDL = "CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER PRIMARY KEY)"


def mark_schema(settings: StoreSettings) -> None:
    """Record that this store's schema is ``SCHEMA_VERSION`` (PostgreSQL; by the tables'
    owner, once every table is made)."""
    if settings.kind != "postgres":
        return
    with connect(settings) as connection:
        connection.execute(SCHEMA_DDL)
        connection.execute("INSERT INTO ledger_schema (version) VALUES (%s)"
                           " ON CONFLICT (version) DO NOTHING", (SCHEMA_VERSION,))


def schema_behind(settings: StoreSettings) -> str | None:
    """Why a least-privileged login may not serve this store: its schema is older than this
    ledger's (an upgrade the owner has not run: new tables and columns missing, and the
    service would half work); None when it may (or when this login makes the tables itself)."""
    if settings.kind != "postgres" or may_make_tables(settings):
        return None
    with connect(settings) as connection:
        found = connection.execute(
            "SELECT CASE WHEN to_regclass('ledger_schema') IS NULL THEN false"
            " ELSE has_table_privilege('ledger_schema', 'SELECT') END").fetchone()
        version = None
        if found is not None and found[0]:
            row = connection.execute("SELECT MAX(version) FROM ledger_schema").fetchone()
            version = None if row is None else row[0]
    if version is not None and version >= SCHEMA_VERSION:
        return None
    user = settings.postgres["POSTGRES_USER"]
    return (f"the schema is older than this ledger's (version {version or 'unrecorded'}; it "
            f"needs {SCHEMA_VERSION}), and {user} may not upgrade it: run ledger migrate "
            f"--grant-to {user} with the tables' owner's LEDGER_DATABASE_URL")


def excess_privilege(settings: StoreSettings) -> str | None:
    """Why the service's login could rewrite history (it is a superuser, or owns the events'
    table); None when it holds no more than it needs (or on SQLite: a file's owner is its
    owner)."""
    if settings.kind != "postgres":
        return None
    with connect(settings) as connection:
        row = connection.execute(
            "SELECT current_user, r.rolsuper,"
            " (SELECT pg_get_userbyid(c.relowner) FROM pg_class c"
            "  WHERE c.oid = to_regclass('ledger_events')) AS owner"
            " FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    assert row is not None
    user, superuser, owner = row
    if superuser:
        return f"the service connects as {user}, a superuser: it could rewrite history"
    if owner is None or owner == user:
        return (f"the service connects as {user}, the owner of the events' table: it could "
                "switch the guards off and rewrite history (ledger migrate --grant-to ROLE)")
    return None


def grant_to(settings: StoreSettings, role: str) -> list[str]:
    """Grant ``role`` what the service needs on the schema's tables and no more; the grants
    made, in words."""
    done = []
    with connect(settings) as connection:
        schema = connection.execute("SELECT current_schema()").fetchone()
        assert schema is not None
        names = {"schema": Identifier(schema[0]), "role": Identifier(role)}
        connection.execute(SQL("GRANT USAGE ON SCHEMA {schema} TO {role}").format(**names))
        tables = [r[0] for r in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " ORDER BY tablename").fetchall()]
        for table in tables:
            history = table in HISTORY_TABLES
            rights = "SELECT, INSERT" if history else "SELECT, INSERT, UPDATE, DELETE"
            connection.execute(SQL("REVOKE ALL ON {schema}.{table} FROM {role}").format(
                table=Identifier(table), **names))
            connection.execute(SQL(f"GRANT {rights} ON {{schema}}.{{table}} TO {{role}}").format(
                table=Identifier(table), **names))
            done.append(f"{table}: {rights}")
        connection.execute(SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema}"
                               " TO {role}").format(**names))
    return done


def role_exists(settings: StoreSettings, role: str) -> bool:
    """Whether the PostgreSQL server of ``settings`` knows ``role``."""
    with connect(settings) as connection:
        return connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  (role,)).fetchone() is not None


__all__ = ["HISTORY_TABLES", "excess_privilege", "grant_to", "role_exists"]


def may_make_tables(settings: StoreSettings) -> bool:
    """Whether this login makes and guards the tables (SQLite; the owner or a superuser on
    PostgreSQL, or a store with no events' table yet). A least-privileged login makes none."""
    if settings.kind != "postgres":
        return True
    if _MAKES_TABLES.get(settings.url):  # once a maker, always (a login's rights only grow)
        return True
    with connect(settings) as connection:
        row = connection.execute(
            "SELECT r.rolsuper OR c.oid IS NULL OR pg_get_userbyid(c.relowner) = current_user"
            " FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass('ledger_events')"
            " WHERE r.rolname = current_user").fetchone()
    makes = bool(row and row[0])
    _MAKES_TABLES[settings.url] = makes
    return makes


_MAKES_TABLES: dict[str, bool] = {}
