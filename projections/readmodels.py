"""The read side: queries over the read models, answered only once they are current, and the
keeper that keeps them current.

``ReadModels`` is the one face the API sees: each read model's queries live in its own module
(``projections.accounts`` …) beside its tables and its projection, and it calls them.

``ReadModels.wait_current()`` takes the log position current when it is called and waits (bounded)
until the read models have processed it, so a read reflects every write acknowledged before it
began, whichever process served the write; past the bound it raises ``NotReady``.

``ReadModelKeeper`` keeps them, in whichever ``ledger serve`` process holds the leadership lock
(``projections.leadership``), so exactly one process keeps them at a time and another takes
over within seconds when it dies. One loop on both stores: it reads a bounded batch of events,
applies it to every read model and commits it (``projections.batches``): on PostgreSQL one
transaction for all read models and their tracking records, on SQLite one per read model. It
reads again at once after a full batch; otherwise it waits for a NOTIFY of new events
(PostgreSQL), a write of its own process, or a short poll interval, so a lost NOTIFY costs at most
that interval; on PostgreSQL, while no one reads them, it then holds until its pace has passed
since the last batch began, unless a reader asks for the read models (``projections.wakeup``:
the reads' look at where the log and the read models stand asks, in the same statement, when it
finds them behind). A failure is logged and the keeper starts again, never left dead.

With ``in_child_process`` (``ledger serve`` on PostgreSQL, ``LEDGER_KEEPER``) that loop runs in a
child process spawned by the leading process, which keeps the lock meanwhile: the batches' Python
never holds the GIL that the server's requests wait for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from multiprocessing import connection as mp_connection
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, IntegrityError, Notification
from eventsourcing.utils import Environment

from ledger import policy
from ledger.application import LedgerApplication
from ledger.clock import rfc3339, utc_now
from ledger.errors import HistoryDamaged, NotReady
from ledger.journal import MONEY_EVENTS
from ledger.settings import StoreSettings
from projections import (
    accounts,
    children,
    journal,
    orders,
    outbox,
    reconciliation,
    refund_requests,
    return_cases,
    unmatched,
)
from projections.accounts import AccountsProjection
from projections.batches import BatchApplier
from projections.chain import Damage, SealWatch, look_after
from projections.checkpoints import b64, notification_leaf
from projections.events import own_fields
from projections.journal import JournalProjection
from projections.leadership import GENERATION_TABLE, GenerationMoved, LeaderLock, SwapFence
from projections.orders import OrdersProjection
from projections.outbox import OutboxProjection
from projections.paging import MAX_PAGE, Page, cursor, page_size, paged
from projections.pgpool import StoreRefusesConnections, refused_in_outage
from projections.privileges import mark_schema, may_make_tables
from projections.reconciliation import reconcile
from projections.refund_requests import RefundRequestsProjection
from projections.return_cases import ReturnCasesProjection
from projections.seal import read_key
from projections.store import application_env, qualified_events_table, schema_lock
from projections.views import (
    BrokenReadModel,
    ReadModelProjection,
    ReadModelView,
    one_snapshot,
    view_class,
)
from projections.wakeup import NUDGE, READERS_GONE_S, Doorbell, PostgresDoorbell

log = logging.getLogger(__name__)

PROJECTIONS: tuple[type[ReadModelProjection], ...] = (
    AccountsProjection,
    OrdersProjection,
    RefundRequestsProjection,
    ReturnCasesProjection,
    JournalProjection,
    OutboxProjection,
)
APP_NAME = LedgerApplication.name
# PostgreSQL: the longest one statement of a read waits for a read model's table while another
# holds it (a rebuild's swap holds every one of them while it applies its last events): the
# reads' bound (API.md), past which it is refused (503), as a read the keeper is late for is.
READ_LOCK_WAIT_S = 5.0
MAX_READ_LOCK_WAIT_S = 60.0
# wait_caught_up's pauses between looks: from half a millisecond, doubling, to 10 ms.
CAUGHT_UP_FIRST_PAUSE_S = 0.0005
CAUGHT_UP_MAX_PAUSE_S = 0.01
# The topics of the events the journal posts (who did them: ReadModels.journal).
_MONEY_TOPICS = tuple(sorted(kind.TOPIC for kind in MONEY_EVENTS))


def open_view(
    settings: StoreSettings,
    projection: type[ReadModelProjection],
    *,
    pool_size: int = 2,
    sqlite_file: str | None = None,
) -> ReadModelView:
    """One read model's view; ``sqlite_file`` puts it in another file than its own (SQLite: a
    rebuild's fresh read model, ``projections.replay``)."""
    settings_env = view_env(settings, projection, pool_size=pool_size)
    if sqlite_file is not None:
        assert settings.kind == "sqlite"
        settings_env["SQLITE_DBNAME"] = sqlite_file
    if not may_make_tables(settings):  # issue 10: `ledger migrate` made them; this login may not
        settings_env["CREATE_TABLE"] = "n"
    env = Environment(projection.name, settings_env)
    cls = view_class(settings.kind, projection.name, projection.ddl)
    factory = InfrastructureFactory[ReadModelView].construct(env)
    return factory.tracking_recorder(cls)


def open_views(
    settings: StoreSettings, *, pool_size: int, lock_wait_s: float | None = None
) -> dict[str, ReadModelView]:
    """Every read model's view. On PostgreSQL they share one pool of at most ``pool_size``
    connections (one idle), whose statements wait at most ``lock_wait_s`` for a table's lock
    (None: as long as it is held); on SQLite each has its file (WAL: readers wait for none)."""
    if settings.kind != "postgres":
        return {p.name: open_view(settings, p, pool_size=pool_size) for p in PROJECTIONS}
    env = settings.env_for(None)
    env.update(
        POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW=str(max(0, pool_size - 1)), CREATE_TABLE="n"
    )
    factory: Any = InfrastructureFactory[ReadModelView].construct(Environment("read_models", env))
    datastore = factory.datastore
    if lock_wait_s is not None:  # set before the pool opens its first connection
        assert 0 < lock_wait_s <= MAX_READ_LOCK_WAIT_S
        datastore.pool.kwargs["options"] = f"-c lock_timeout={round(lock_wait_s * 1000)}"
    return {
        p.name: view_class(settings.kind, p.name, p.ddl)(  # type: ignore[call-arg]
            datastore=datastore, tracking_table_name=f"{p.name}_tracking"
        )
        for p in PROJECTIONS
    }


def view_env(
    settings: StoreSettings, projection: type[ReadModelProjection], *, pool_size: int
) -> dict[str, str]:
    """A view's settings: on PostgreSQL a pool of one idle and at most ``pool_size`` open."""
    env = settings.env_for(projection.name)
    if settings.kind == "postgres":
        env.update(POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW=str(max(0, pool_size - 1)))
    return env


class ReadModels:
    def __init__(
        self,
        settings: StoreSettings,
        app: LedgerApplication,
        *,
        pool_size: int = 8,
        unresolved_after_days: int = policy.DEFAULT_UNRESOLVED_AFTER_DAYS,
        lock_wait_s: float = READ_LOCK_WAIT_S,
    ) -> None:
        self.app = app
        self.unresolved_after_days = unresolved_after_days
        prepare_read_models(settings)
        # A read behind a read model's table held (a rebuild's swap, an operator's DDL) is
        # refused (503) once it has waited ``lock_wait_s``, not held for as long as the lock is.
        self.views = open_views(settings, pool_size=pool_size, lock_wait_s=lock_wait_s)
        self._tracked_sql: str | None = None
        self._positions_sql: str | None = None
        if settings.kind == "postgres":
            # Names from the projections' own classes and the store's settings, never from input.
            tracked = ", ".join(
                f"(SELECT MAX(notification_id) FROM {view.tracking_table}"  # noqa: S608
                f" WHERE application_name = '{APP_NAME}') AS {name}"
                for name, view in self.views.items()
            )
            self._tracked_sql = f"SELECT {tracked}"
            # The log's head beside them: the events table is in the read models' database.
            events = qualified_events_table(app.recorder).as_string()  # type: ignore[arg-type]
            # A look that finds them behind asks the keeper for them (``projections.wakeup``).
            behind = " OR ".join(f"COALESCE({name}, 0) < head_" for name in self.views)
            self._positions_sql = (
                f"SELECT *, CASE WHEN {behind} THEN {NUDGE} END AS nudged_"  # noqa: S608
                f" FROM (SELECT (SELECT MAX(notification_id) FROM {events}) AS head_,"
                f" {tracked}) AS p"
            )
        self._accounts = self.views[AccountsProjection.name]
        self._orders = self.views[OrdersProjection.name]
        self._requests = self.views[RefundRequestsProjection.name]
        self._cases = self.views[ReturnCasesProjection.name]
        self._journal = self.views[JournalProjection.name]
        self._outbox = self.views[OutboxProjection.name]

    def close(self) -> None:
        close_views(self.views)

    def one_snapshot(self) -> contextlib.AbstractContextManager[None]:
        """Meanwhile, this thread's queries of the read models see them at one moment
        (PostgreSQL: ``projections.views.one_snapshot``; SQLite: each read model's file as it
        stands at each query, the keeper committing them in turn)."""
        if self._tracked_sql is None:
            return contextlib.nullcontext()
        return one_snapshot(next(iter(self.views.values())).datastore, GENERATION_TABLE)

    # -- currency -----------------------------------------------------------------------------

    def log_position(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def tracked(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Where each read model stands (or those ``names``: on SQLite, a read each)."""
        if self._tracked_sql is not None:  # PostgreSQL: every read model in one round trip
            row = next(iter(self.views.values())).query(self._tracked_sql)[0]
            return {name: int(row[name] or 0) for name in self.views}
        return {name: self.views[name].max_tracking_id(APP_NAME) or 0
                for name in (names or self.views)}

    def positions(self) -> tuple[int, dict[str, int]]:
        """The log's head and where each read model stands: on PostgreSQL in one statement (a
        current read that finds them there costs one round trip, not two)."""
        if self._positions_sql is not None:
            row = next(iter(self.views.values())).query(self._positions_sql)[0]
            return int(row["head_"] or 0), {name: int(row[name] or 0) for name in self.views}
        return self.log_position(), self.tracked()

    def wait_current(self, timeout_s: float = 5.0) -> int:
        """Wait until every read model has reached the log position current now; return it."""
        target, seen = self.positions()
        deadline = time.monotonic() + timeout_s
        pause_s = 0.001
        while True:
            behind = [name for name, at in seen.items() if at < target]
            if not behind:
                return target
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                self._refuse_damaged(min(seen.values()))
                raise NotReady(f"read models {behind} did not reach position {target} in time")
            time.sleep(min(pause_s, remaining_s))
            pause_s = min(pause_s * 2, 0.02)
            seen = self.tracked()

    def wait_caught_up(self, stall_timeout_s: float = 30.0, limit_s: float = 900.0) -> int:
        """Wait until every read model has reached the log position current now; return it.

        Unlike ``wait_current`` (a request's bound: slow counts as not ready), this waits as
        long as the read models make progress, and raises ``NotReady`` only when none of them
        has moved for ``stall_timeout_s`` (stuck, not slow), or after ``limit_s`` in all."""
        target, seen = self.positions()
        started = last_move = time.monotonic()
        # A short first pause that grows: the keeper mostly needs a millisecond or two, and a
        # fixed 10 ms pause made every step of the model tests wait 10 ms.
        pause_s = CAUGHT_UP_FIRST_PAUSE_S
        while True:
            behind = [name for name, at in seen.items() if at < target]
            if not behind:
                return target
            now = time.monotonic()
            if now - last_move > stall_timeout_s or now - started > limit_s:
                self._refuse_damaged(min(seen.values()))
                raise NotReady(
                    f"read models {behind} are stuck short of position {target}: "
                    f"at {[seen[name] for name in behind]}, no progress for "
                    f"{now - last_move:.0f} s"
                )
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, CAUGHT_UP_MAX_PAUSE_S)
            tracked = self.tracked()
            if tracked != seen:
                seen, last_move = tracked, time.monotonic()

    def _refuse_damaged(self, after: int) -> None:
        damage, _ = self._look_after(after)
        if damage is not None:
            raise HistoryDamaged(
                f"the history is damaged at {damage.describe()}; the read models stop before "
                "it until an operator restores the store",
                position=damage.position,
            )

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """The log's position, each read model's, the lag in events and in seconds, and the
        damage (if any) that stops the read models: an event after their position without a
        valid seal.

        The lag in seconds is the age, at ``now`` (the wall clock that stamps events), of the
        oldest event the furthest-behind read model has not applied: under a steady stream of
        writes the read models are rarely at the head at any one moment, but never far behind
        it. None when that event's seal does not hold (its time cannot be trusted)."""
        position = self.log_position()
        tracked = self.tracked()
        lag = max((position - t for t in tracked.values()), default=0)
        damage: Damage | None = None
        lag_s: float | None = 0.0
        if lag:
            damage, oldest = self._look_after(min(tracked.values()))
            lag_s = None if oldest is None else _age_s(self.app, oldest, now)
        return {
            "log_position": position,
            "read_models": tracked,
            "lag": lag,
            "lag_seconds": lag_s,
            "damage": None if damage is None else {"position": damage.position,
                                                   "what": damage.what},
        }

    def _look_after(self, after: int) -> tuple[Damage | None, Notification | None]:
        key = getattr(self.app.recorder, "chain_key", None)
        assert key is not None, "the application was not opened on a sealing store"
        return look_after(self.app.recorder, key, after)

    # -- each read model's queries (in its module) --------------------------------------------

    def account(self, username: str) -> dict[str, Any] | None:
        return accounts.account(self._accounts, username)

    def customers(
        self,
        *,
        prefix: str | None,
        currency: str | None,
        with_balance: bool | None,
        limit: int,
        after: str | None,
    ) -> Page:
        return accounts.customers(
            self._accounts, prefix=prefix, currency=currency, with_balance=with_balance,
            limit=limit, after=after,
        )

    def history(self, username: str, *, limit: int, after: str | None) -> Page:
        return accounts.history(self._accounts, username, limit=limit, after=after)

    def balance(
        self, username: str, *, at_position: int | None = None, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        """The balances as they stood at a log position or a moment (the latest event at or
        before it); None when the account did not exist yet."""
        return accounts.balance(self._accounts, username, at_position=at_position, as_of=as_of)

    def orders(self, username: str, *, limit: int, after: str | None) -> Page:
        return orders.orders(self._orders, username, limit=limit, after=after)

    def journal(
        self,
        *,
        account: str | None,
        limit: int,
        after: str | None,
        currency: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page:
        """Balanced postings per money event, in log order; ``account`` keeps the events that
        post to that chart account (all their postings shown); ``currency``, ``since`` and
        ``until`` (a time range, ``until`` excluded) keep the rest."""
        page = journal.entries(
            self._journal, account=account, limit=limit, after=after, currency=currency,
            since=None if since is None else rfc3339(since),
            until=None if until is None else rfc3339(until),
        )
        self._add_actors(page.items)
        return page

    def _add_actors(self, entries: list[dict[str, Any]]) -> None:
        """Who did each entry's event (``role:person``), read from the event store: the
        journal's table keeps postings, not people (issue 11)."""
        if not entries:
            return
        first, last = entries[0]["position"], entries[-1]["position"]
        wanted = {entry["position"] for entry in entries}
        actors: dict[int, str | None] = {}
        for notification in self.app.recorder.select_notifications(
            first, last - first + 1, stop=last, topics=_MONEY_TOPICS
        ):
            if notification.id in wanted:
                event: Any = self.app.mapper.to_domain_event(notification)
                actors[notification.id] = getattr(event, "actor", None)
        for entry in entries:
            entry["actor"] = actors.get(entry["position"])

    def journal_entries(self, *, currency: str | None = None) -> Iterator[dict[str, Any]]:
        """Every journal entry in log order (of one currency, if given), a page at a time,
        each with who did it (the exports' actor)."""
        page: list[dict[str, Any]] = []
        for entry in journal.all_entries(self._journal, currency=currency):
            page.append(entry)
            if len(page) == MAX_PAGE:
                self._add_actors(page)
                yield from page
                page = []
        self._add_actors(page)
        yield from page

    def case_briefs(self, case_ids: list[str]) -> dict[str, dict[str, Any]]:
        return return_cases.briefs(self._cases, case_ids)

    def return_case(self, case_id: UUID) -> dict[str, Any] | None:
        found = return_cases.case(
            self._cases,
            case_id,
            today=self.app.today(),
            unresolved_after_days=self.unresolved_after_days,
        )
        if found is not None:  # what the customer was told, and when (projections.outbox)
            found["messages"] = outbox.messages_of(self._outbox, case_id=str(case_id))
        return found

    def return_cases(
        self,
        *,
        state: str | None,
        username: str | None,
        overdue: bool | None,
        limit: int,
        after: str | None,
    ) -> Page:
        return return_cases.cases(
            self._cases,
            state=state,
            username=username,
            overdue=overdue,
            limit=limit,
            after=after,
            today=self.app.today(),
            unresolved_after_days=self.unresolved_after_days,
        )

    def return_case_counts(
        self, *, state: str | None, username: str | None, overdue: bool | None
    ) -> list[dict[str, Any]]:
        return return_cases.counts(
            self._cases,
            state=state,
            username=username,
            overdue=overdue,
            today=self.app.today(),
            unresolved_after_days=self.unresolved_after_days,
        )

    def refund_requests(
        self,
        *,
        status: str | None,
        username: str | None,
        limit: int,
        after: str | None,
        currency: str | None = None,
    ) -> Page:
        return refund_requests.requests(
            self._requests, status=status, username=username, limit=limit, after=after,
            currency=currency,
        )

    def refund_request_totals(
        self, *, status: str | None, username: str | None, currency: str | None
    ) -> list[dict[str, Any]]:
        return refund_requests.totals(
            self._requests, status=status, username=username, currency=currency
        )

    def refund_request(self, request_id: UUID) -> dict[str, Any] | None:
        found = refund_requests.request(self._requests, request_id)
        if found is not None:  # what the customer was told, and when (projections.outbox)
            found["messages"] = outbox.messages_of(self._outbox, request_id=str(request_id))
        return found

    def outbox(self, *, status: str | None, limit: int, after: str | None,
               configured: Sequence[str] = (),
               usable: Callable[[str], bool] = lambda url: True) -> Page:
        """The outbox's messages with their deliveries (``projections.outbox``); ``configured``:
        the receivers ``LEDGER_WEBHOOK_URL`` names; ``usable``: the subscriptions sent to."""
        return outbox.outbox(self._outbox, status=status, limit=limit, after=after,
                             key=self.app.recorder.chain_key,  # type: ignore[attr-defined]
                             configured=configured, usable=usable)

    # -- the log -------------------------------------------------------------------------------

    def events(self, *, limit: int, after: str | None) -> Page:
        """The global log in order, straight from the event store (``log_page``)."""
        return log_page(self.app, limit=limit, after=after)

    # -- finance --------------------------------------------------------------------------------

    def reconciliation(self, currency: str, at_position: int | None = None) -> dict[str, Any]:
        """Reconciled at a position (default: the one both read models it uses have reached,
        so a write landing meanwhile cannot show in one of them only)."""
        if at_position is None:
            at_position = min(self.tracked([JournalProjection.name, AccountsProjection.name])
                              .values())
        position = at_position
        return reconcile(self._journal, self._accounts, currency, position)

    def chart_balances(self, currency: str, position: int) -> dict[str, int]:
        return reconciliation.chart_balances(self._journal, currency, position)

    def currencies_in_use(self, position: int) -> list[str]:
        return reconciliation.currencies_in_use(self._accounts, position)

    def position_as_of(self, moment: datetime) -> int:
        return reconciliation.position_as_of(self._accounts, rfc3339(moment))

    def unmatched(
        self, *, currency: str | None, idle_before: datetime, limit: int
    ) -> dict[str, Any]:
        """Money that stands out (``projections.unmatched``)."""
        return unmatched.report(
            self._accounts, self._requests, currency=currency,
            idle_before=rfc3339(idle_before), limit=limit,
        )


def log_page(app: LedgerApplication, *, limit: int, after: str | None) -> Page:
    """The global log in order, straight from the event store: no gap skipped (writers
    commit in log order), no event twice. Only events whose seals hold are served: a page
    ends before the first that does not (its ``next`` says to come back), and a page that
    would begin with it is refused (``HistoryDamaged``, naming its position)."""
    start = cursor(after)
    read = list(app.recorder.select_notifications(
        start, page_size(limit) + 1, inclusive_of_start=False
    ))
    watch = SealWatch(app.recorder, app.recorder.chain_key,  # type: ignore[attr-defined]
                      quiet=True)
    notifications = watch.admit(start, read)  # nothing read (past the end): nothing checked
    if watch.damage is not None and not notifications:
        raise HistoryDamaged(
            f"the history is damaged at {watch.damage.describe()}; the log is served up to "
            "the event before it until an operator restores the store",
            position=watch.damage.position,
        )
    items = []
    for notification in notifications:
        event: Any = app.mapper.to_domain_event(notification)
        items.append(
            {
                "position": notification.id,
                "stream": str(notification.originator_id),
                "version": notification.originator_version,
                "type": notification.topic,
                "at": rfc3339(event.timestamp),
                "actor": getattr(event, "actor", None),
                "data": _jsonable(own_fields(event)),
                "leaf_hash": b64(notification_leaf(notification)),
            }
        )
    if watch.damage is not None:  # come back: the next page names the damage
        return Page(items, str(items[-1]["position"]))
    return paged(items, limit, key="position")


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, UUID | datetime) else v) for k, v in data.items()}


def _age_s(app: LedgerApplication, notification: Notification, now: datetime | None) -> float:
    """How long before ``now`` the event was recorded, in seconds (never below 0: another
    process's clock may run ahead), to the millisecond."""
    recorded: datetime = app.mapper.to_domain_event(notification).timestamp  # type: ignore[attr-defined]
    return max(0.0, round(((now or utc_now()) - recorded).total_seconds(), 3))


# -- keeping them current ----------------------------------------------------------------------

# Events read and applied per transaction: large enough that a keeper behind catches up in few
# commits, small enough that one batch's rows stay a few megabytes and commit in well under a
# second.
KEEPER_BATCH = 1000
MAX_KEEPER_BATCH = 10_000
# The longest a keeper waits before looking for new events unprompted: on PostgreSQL only a
# lost NOTIFY needs it; SQLite has no notice from other processes, so it looks often.
POSTGRES_POLL_INTERVAL_S = 0.1
SQLITE_POLL_INTERVAL_S = 0.01
MAX_POLL_INTERVAL_S = 1.0
# The least time from one batch's start to the next's while no reader asks for the read models
# (``projections.wakeup``): under a steady stream of writes, tens of events a batch rather than
# one. 50 ms rather than 10 cut the keeper's processor time per deposit at 32 connections by a
# third and PostgreSQL's by a quarter (README.md); a reader that asks never waits for it.
POSTGRES_PACE_S = 0.05
MAX_PACE_S = 1.0
# How often a keeper checks that it still holds the leadership lock's session.
LOCK_CHECK_S = 1.0
# How long a keeper's child process has to finish its batch once told to stop.
CHILD_STOP_S = 10.0
KEEPER_POOL_SIZE = 2


class ReadModelKeeper:
    """Keeps the read models current, in a thread of its own (see the module docstring)."""

    def __init__(
        self,
        settings: StoreSettings,
        *,
        batch_size: int = KEEPER_BATCH,
        poll_interval_s: float | None = None,
        pace_s: float | None = None,
        lock_retry_s: float = 1.0,
        in_child_process: bool = False,
        child_setup: Callable[[], None] | None = None,
    ) -> None:
        if poll_interval_s is None:
            postgres = settings.kind == "postgres"
            poll_interval_s = POSTGRES_POLL_INTERVAL_S if postgres else SQLITE_POLL_INTERVAL_S
        if not 0 < batch_size <= MAX_KEEPER_BATCH:
            raise ValueError(f"batch_size is 1..{MAX_KEEPER_BATCH}")
        if not 0 < poll_interval_s <= MAX_POLL_INTERVAL_S:
            raise ValueError(f"poll_interval_s is in (0, {MAX_POLL_INTERVAL_S:g}]")
        if pace_s is None:
            pace_s = POSTGRES_PACE_S if settings.kind == "postgres" else 0.0
        if not 0 <= pace_s <= MAX_PACE_S:
            raise ValueError(f"pace_s is in [0, {MAX_PACE_S:g}]")
        self.settings = settings
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.pace_s = pace_s
        self.lock_retry_s = lock_retry_s
        self.in_child_process = in_child_process
        self.child_setup = child_setup
        self.is_leader = threading.Event()
        self._stopping = threading.Event()
        self._doorbell = PostgresDoorbell(settings) if settings.kind == "postgres" else Doorbell()
        self._thread: threading.Thread | None = None
        self._watch: SealWatch | None = None
        self._child_stop = _Wakeup() if in_child_process else None
        self._fence = SwapFence(settings)
        self._generation: object = None  # the read models' generation its rows are from

    def start(self) -> None:
        assert self._thread is None, "started twice"
        self._thread = threading.Thread(target=self._run, name="read-model-keeper", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._doorbell.ring()
        if self._child_stop is not None:
            self._child_stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._child_stop is not None and (self._thread is None or not self._thread.is_alive()):
            self._child_stop.close()

    def nudge(self) -> None:
        """A write was just made here: look for new events now rather than at the next poll."""
        self._doorbell.ring()

    def _run(self) -> None:
        """Lead when the lock is free; never left dead (every read would wait in vain): a
        failure is logged, the lock let go, and the keeper starts again."""
        while not self._stopping.is_set():
            lock = LeaderLock(self.settings)
            try:
                if lock.try_acquire():
                    log.info("this process now keeps the read models current")
                    self.is_leader.set()
                    self._keep(lock)
            except IntegrityError as refused:
                # Another process moved the read models meanwhile (their tracking was not where
                # the batch began), or a row broke one of a table's rules.
                log.warning("a batch of read-model rows was refused (%s); starting again", refused)
            except BrokenReadModel as broken:  # a damaged row: the same words at each try
                _say_stopped(broken)
            except KeeperDied as died:  # its own log said why, with its traceback
                if not refused_in_outage(died):
                    log.error("%s; starting again", died)
            except Exception as error:
                if not refused_in_outage(error):  # else the outage's own line says it
                    log.exception("read-model keeper failed; starting again")
            finally:
                self.is_leader.clear()
                lock.release()
            self._stopping.wait(self.lock_retry_s)

    def _keep(self, lock: LeaderLock) -> None:
        prepare_read_models(self.settings)
        if self.in_child_process:
            self._keep_in_child(lock)
            return
        self._apply_until_stopped(lock.check)

    def _keep_in_child(self, lock: LeaderLock) -> None:
        """While this process holds the lock, a child process of its own reads, checks and
        applies the batches (``keep_in_child``): their Python does not take the GIL from this
        process's requests, and on a machine with a core to spare it runs beside them. This
        thread checks the lock meanwhile; the child ends when told, when this process ends
        (its pipe closes, even on kill -9), and is ended before the lock is let go."""
        assert self._child_stop is not None
        child, ours = children.spawn(
            keep_in_child, "read-model-keeper",
            (self.settings, self.batch_size, self.poll_interval_s, self.pace_s, self.child_setup),
        )
        try:
            while not self._stopping.is_set():
                self._child_stop.wait([child.sentinel], LOCK_CHECK_S)
                if not child.is_alive():
                    ended = KeeperDied(f"the read-model keeper's process ended ({child.exitcode})")
                    if child.exitcode == UNREACHABLE_EXIT:  # it found the store gone, and said so
                        raise ended from StoreRefusesConnections("it could not reach the store")
                    raise ended
                lock.check()
        finally:
            # Its pipe closed: the child's cue to stop after its batch.
            if children.end(child, ours, CHILD_STOP_S):
                log.warning("the read-model keeper's process did not stop in %s s: killed",
                            CHILD_STOP_S)

    def _apply_until_stopped(self, check: Callable[[], None]) -> None:
        """Apply batches as events come until stopped; ``check`` at least every
        ``LOCK_CHECK_S`` (that the lock is still held)."""
        # Two connections each for reading the log and for the read models are plenty: one
        # batch at a time (the leadership lock and the doorbell have one each besides).
        env = application_env(replace(self.settings, pool_size=KEEPER_POOL_SIZE),
                              makes_tables=may_make_tables(self.settings))
        # eventsourcing's recorder runs its DDL as it is made (CREATE OR REPLACE FUNCTION
        # among it): with another process doing the same at that moment, PostgreSQL fails one
        # with "tuple concurrently updated". Every process makes it under the schema lock.
        with schema_lock(self.settings):
            app = LedgerApplication(env)
        views = open_views(self.settings, pool_size=KEEPER_POOL_SIZE)
        self._watch = SealWatch(app.recorder, read_key(self.settings.chain_key_file))
        self._fence, self._generation = SwapFence(self.settings), None
        try:
            with self._doorbell.listening(getattr(app.recorder, "channel_name", "")):
                applier = BatchApplier(app.mapper, [(p, views[p.name]) for p in PROJECTIONS],
                                       key=self._watch.key, guard=self._fence.guard)
                checked = time.monotonic()
                bell = self._doorbell
                while not self._stopping.is_set():
                    began = time.monotonic()
                    if not self.catch_up(app, applier):
                        bell.wait(self.poll_interval_s)
                        if self.pace_s and time.monotonic() - bell.asked_at > READERS_GONE_S:
                            bell.hold(since=began, until=began + self.pace_s)
                    if time.monotonic() - checked > LOCK_CHECK_S:
                        check()
                        checked = time.monotonic()
        finally:
            self._fence.close()
            app.close()
            close_views(views)

    def catch_up(self, app: LedgerApplication, applier: BatchApplier) -> bool:
        """Apply the next batch of events to every read model, in one transaction per
        datastore; True if the batch was full, or must be applied again (more may be waiting).
        Behind the swap's fence (``projections.leadership.SwapFence``): after a rebuild swapped
        fresh read models in (at the position the old ones stood), the rows remembered from the
        old ones are forgotten before the batch reads any; a batch built on them meanwhile is
        rolled back and applied again."""
        with self._fence.batch() as generation:
            if generation != self._generation:
                applier.forget()
                self._generation = generation
            notifications = app.recorder.select_notifications(
                applier.position, self.batch_size, inclusive_of_start=False
            )
            admitted = self._admit(applier.position, notifications)
            try:
                applier.apply(admitted)  # forgets every remembered row when it fails
            except GenerationMoved as moved:
                log.info("the read models were swapped during a batch: it is applied again (%s)",
                         moved)
                return True
        return len(admitted) == self.batch_size

    def _admit(self, after: int, notifications: Sequence[Notification]) -> Sequence[Notification]:
        """The events of a batch to apply: the prefix of those read whose seals hold and follow
        on from position ``after``. The keeper stops before an event written behind the
        service's back (and logs an ERROR naming it), until an operator restores the store."""
        assert self._watch is not None
        return self._watch.admit(after, list(notifications))

    @property
    def damage(self) -> Damage | None:
        """Where this keeper stopped, if an event's seal does not hold (a keeper in a child
        process: None here; the child logs it, and the notary's watch finds it too)."""
        return None if self._watch is None else self._watch.damage


# A keeper's child process that ended because the store could not be reached (EX_TEMPFAIL).
UNREACHABLE_EXIT = 75


class KeeperDied(RuntimeError):
    """The keeper's child process ended on its own (its log says why)."""


class _Wakeup:
    """Wakes a thread waiting on child processes' sentinels (``multiprocessing`` waits on file
    descriptors; a ``threading.Event`` has none): a pipe, readable once ``set``."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already set: the pipe holds a byte
            os.write(self._write, b"x")

    def wait(self, sentinels: list[int], timeout_s: float) -> None:
        mp_connection.wait([self._read, *sentinels], timeout_s)

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def keep_in_child(settings: StoreSettings, batch_size: int, poll_interval_s: float,
                  pace_s: float, setup: Callable[[], None] | None,
                  parent: mp_connection.Connection) -> None:
    """A keeper's child process (``ReadModelKeeper._keep_in_child``): applies batches until
    its parent closes the pipe (or ends). The parent holds the leadership lock; should the
    parent die mid-batch, the next leader's batch is refused whole if this one landed first
    (its tracking records moved), never applied twice."""
    children.begin(setup)
    keeper = ReadModelKeeper(settings, batch_size=batch_size, poll_interval_s=poll_interval_s,
                             pace_s=pace_s)

    def watch_parent() -> None:
        with contextlib.suppress(EOFError, OSError):
            parent.recv()  # nothing is ever sent: this returns when the pipe closes
        keeper._stopping.set()
        keeper._doorbell.ring()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    try:
        keeper._apply_until_stopped(lambda: None)
    except BrokenReadModel as broken:
        _say_stopped(broken)
        raise SystemExit(1) from None
    except Exception as error:
        if refused_in_outage(error):  # its outage's ERROR line said it, in this process
            raise SystemExit(UNREACHABLE_EXIT) from None
        log.exception("the read-model keeper's process failed")
        raise SystemExit(1) from None


def _say_stopped(broken: BrokenReadModel) -> None:
    """One ERROR line, no traceback: the keeper tries again and says it again."""
    log.error("the read models stop before an event they cannot apply: %s", broken)


def close_views(views: dict[str, ReadModelView]) -> None:
    """Close the views' datastores (on PostgreSQL, one shared by all)."""
    for datastore in {id(v.datastore): v.datastore for v in views.values()}.values():
        datastore.close()


def prepare_read_models(settings: StoreSettings) -> None:
    """Create every read model's tables, one process at a time, before any keeper or reader
    opens them (concurrent CREATE TABLE IF NOT EXISTS can collide on PostgreSQL). A
    least-privileged login makes none: ``ledger migrate`` did."""
    if not may_make_tables(settings):
        return
    with schema_lock(settings):
        for projection in PROJECTIONS:
            open_view(settings, projection, pool_size=1).datastore.close()
        view = open_view(settings, OutboxProjection, pool_size=1)
        try:  # beside the outbox, not derived from the log (projections.outbox)
            outbox.create_delivery_tables(view)
            if outbox.seal_streams(view):
                log.warning("the outbox was made before its streams were sealed: it is made "
                            "again from the sealed log (its deliveries are kept)")
        finally:
            view.datastore.close()
        mark_schema(settings)  # every table made: a least-privileged login may serve it


__all__: Sequence[str] = (
    "Page",
    "ReadModelKeeper",
    "ReadModels",
    "close_views",
    "open_views",
    "prepare_read_models",
)
