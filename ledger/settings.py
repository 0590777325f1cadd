"""A database URL becomes eventsourcing's persistence settings.

``sqlite:///PATH`` (the embedded default: ``./var/ledger.db``) or
``postgresql://USER[:PASS]@HOST[:PORT]/DB``. Read models on SQLite live in files of their own
beside the event store (``ledger.<model>.db``), because eventsourcing's SQLite tracking table is
one per file; on PostgreSQL they share the database, each with its own tracking table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ledger.errors import InvalidInput

DEFAULT_DATABASE_URL = "sqlite:///var/ledger.db"
# Bounded pool: the executor never has more threads than connections to give them. A few are
# kept open; the rest open under load and close when idle, so several processes share a server.
DEFAULT_POOL_SIZE = 8
# The event store's setting (projections.pgpool) that bounds its connections' lock waits.
LOCK_WAIT_OPTION = "LEDGER_LOCK_WAIT_S"
IDLE_CONNECTIONS = 2
DEFAULT_LOCK_TIMEOUT_S = 5
DEFAULT_CONNECT_TIMEOUT_S = 5
DEFAULT_MAX_WAITING = 64
# Aggregates are kept in memory between commands as this process last recorded them
# (eventsourcing's cache, handed out as copies, not fast-forwarded): deciding reads nothing from
# the store. A decision made on a copy another process has since moved on from cannot be
# recorded (its version is taken) and is decided again from the store; one that records
# nothing (a refusal, a duplicate) is decided again from the store before it is answered.
CACHE = {"AGGREGATE_CACHE_MAXSIZE": "5000", "AGGREGATE_CACHE_FASTFORWARD": "n"}
SQLITE_FACTORY_TOPIC = "projections.store:DurableSQLiteFactory"
POSTGRES_FACTORY_TOPIC = "projections.pgpool:CheckedPostgresFactory"
# The recorders that seal each event as they record it (projections.store).
SQLITE_RECORDER_TOPIC = "projections.store:SealingSQLiteRecorder"
POSTGRES_RECORDER_TOPIC = "projections.store:SealingPostgresRecorder"
DEFAULT_CHAIN_KEY_FILE = Path("var/chain.key")


@dataclass(frozen=True)
class StoreSettings:
    url: str
    kind: str  # "sqlite" or "postgres"
    sqlite_path: Path | None = None
    postgres: dict[str, str] = field(default_factory=dict)
    pool_size: int = DEFAULT_POOL_SIZE  # the most connections the event store's pool opens
    # The key that seals the events (projections.seal); outside the database on purpose.
    chain_key_file: Path = DEFAULT_CHAIN_KEY_FILE
    # PostgreSQL: the longest any statement waits for a lock, in seconds (None: as each
    # transaction says); the commands that change the schema bound theirs (api.cli).
    lock_wait_s: int | None = None

    @classmethod
    def from_url(
        cls, url: str | None = None, *, pool_size: int = DEFAULT_POOL_SIZE,
        chain_key_file: Path = DEFAULT_CHAIN_KEY_FILE,
    ) -> StoreSettings:
        """The store at ``url`` (None: ``DEFAULT_DATABASE_URL``), sealed with the key in
        ``chain_key_file``; the service's configuration (``api.config``) gives both."""
        url = url or DEFAULT_DATABASE_URL
        key_file = chain_key_file
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (read to check it: the parser's refusal quotes the text)
        except ValueError:
            # Never the parser's words: "postgresql://u:pw/db" reads pw as the port, and says so
            raise InvalidInput("LEDGER_DATABASE_URL cannot be read as a URL (like "
                               "postgresql://USER:PASSWORD@HOST:PORT/DB)",
                               field="LEDGER_DATABASE_URL") from None
        if parts.query or parts.fragment:
            # Not read, so never dropped in silence: ?sslmode=verify-full would connect in
            # plain text. libpq's own environment says it, and is read by every connection.
            raise InvalidInput(
                "LEDGER_DATABASE_URL has a query (?...) or a fragment (#...), which the ledger "
                "does not read: give connection options in libpq's environment instead "
                "(PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY...)",
                field="LEDGER_DATABASE_URL",
            )
        if parts.scheme == "sqlite":
            # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
            if not path:
                raise InvalidInput("sqlite URL names no file", field="LEDGER_DATABASE_URL")
            return cls(
                url=url, kind="sqlite", sqlite_path=Path(path), pool_size=pool_size,
                chain_key_file=key_file,
            )
        if parts.scheme in ("postgresql", "postgres"):
            dbname = parts.path.lstrip("/")
            if not dbname or not parts.hostname:
                raise InvalidInput(
                    "postgresql URL needs a host and a database", field="LEDGER_DATABASE_URL"
                )
            postgres = {
                "POSTGRES_DBNAME": dbname,
                "POSTGRES_HOST": parts.hostname,
                "POSTGRES_PORT": str(parts.port or 5432),
                "POSTGRES_USER": unquote(parts.username or "postgres"),
                "POSTGRES_PASSWORD": unquote(parts.password or ""),
            }
            return cls(
                url=url, kind="postgres", postgres=postgres, pool_size=pool_size,
                chain_key_file=key_file,
            )
        raise InvalidInput(
            "LEDGER_DATABASE_URL is sqlite:///PATH or postgresql://USER@HOST/DB",
            field="LEDGER_DATABASE_URL",
        )

    def app_env(self) -> dict[str, str]:
        """The event store's settings."""
        return self.env_for(None)

    def pg_options(self) -> str | None:
        """The ``options`` of this store's PostgreSQL connections (libpq's)."""
        return None if self.lock_wait_s is None else f"-c lock_timeout={self.lock_wait_s}s"

    def env_for(self, read_model: str | None) -> dict[str, str]:
        """Settings for the event store (``None``) or one read model's view."""
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            path = self.sqlite_path
            if read_model is not None:
                path = path.with_name(f"{path.stem}.{read_model}{path.suffix or '.db'}")
            return {
                "PERSISTENCE_MODULE": SQLITE_FACTORY_TOPIC,
                "APPLICATION_RECORDER_TOPIC": SQLITE_RECORDER_TOPIC,
                "SQLITE_DBNAME": str(path),
                "SQLITE_LOCK_TIMEOUT": str(DEFAULT_LOCK_TIMEOUT_S),
                "CREATE_TABLE": "y",
                **CACHE,
            }
        return {
            "PERSISTENCE_MODULE": POSTGRES_FACTORY_TOPIC,
            "APPLICATION_RECORDER_TOPIC": POSTGRES_RECORDER_TOPIC,
            **self.postgres,
            "POSTGRES_POOL_SIZE": str(min(IDLE_CONNECTIONS, self.pool_size)),
            "POSTGRES_MAX_OVERFLOW": str(max(0, self.pool_size - IDLE_CONNECTIONS)),
            "POSTGRES_LOCK_TIMEOUT": str(DEFAULT_LOCK_TIMEOUT_S),
            "POSTGRES_CONNECT_TIMEOUT": str(DEFAULT_CONNECT_TIMEOUT_S),
            "POSTGRES_MAX_WAITING": str(DEFAULT_MAX_WAITING),
            # Checked when handed out, by a look at the socket first (projections.pgpool).
            "POSTGRES_PRE_PING": "y",
            # Off on purpose: with it on, the insert function takes no table lock (see FACTS.md).
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            "CREATE_TABLE": "y",
            **CACHE,
            **({} if self.lock_wait_s is None else {LOCK_WAIT_OPTION: str(self.lock_wait_s)}),
        }
