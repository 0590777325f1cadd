"""``ledger verify``: re-derive history and check it (API.md, "Starting it").

1. every stored event carries the writer's seal, each seal follows the one before it, and every
   digest kept outside the database still holds (``projections.chain.check_chain``), with every
   damaged position named; an event stored at position 0 or below (where the writer never
   places one, and no reader of the log looks, though loading its aggregate fails on it) is
   named as unsealed;
2. every invariant of DOMAIN.md holds at every position, replaying the domain itself: no
   available balance below zero, no order credited back beyond what was paid, each event's
   postings balanced, and the customers' balances equal to the journal's, per currency;
3. the live read models equal a fresh replay of the log up to the position they have reached;
4. every signed checkpoint (stored, and given in files kept outside the database) carries the
   signing key's valid signature and the Merkle root of the log's first ``tree size`` events
   (so each is consistent with the next), each stored one's tree size and root columns are its
   signed note's, and every stored leaf hash matches its event. With no
   verifier key the roots are still checked, and ``unchecked_signatures`` counts the checkpoints
   whose signature was not; and, given the service's checkpoint file, the notes at its end
   (``projections.checkpoints.kept_notes``).

The report names the first bad position of the log (1 and 2) and the read models that differ (3).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger import journal
from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.errors import HistoryDamaged
from ledger.settings import StoreSettings
from projections import outbox
from projections.chain import Chain, Digest, all_notifications, below_the_log, check_chain
from projections.checkpoints import checkpoint_damage, kept_notes
from projections.notes import Verifier
from projections.readmodels import PROJECTIONS, open_view
from projections.replay import differences, replay, scratch_views, tables_of


@dataclass
class VerifyReport:
    events_checked: int
    first_bad_position: int | None
    problems: list[str] = field(default_factory=list)
    damage: list[dict[str, Any]] = field(default_factory=list)
    unchecked_signatures: int = 0  # checkpoints checked with no verifier key: roots only

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "first_bad_position": self.first_bad_position,
            "problems": self.problems,
            "damage": self.damage,
            "unchecked_signatures": self.unchecked_signatures,
        }


def verify(
    settings: StoreSettings,
    app: LedgerApplication,
    digests: Iterable[Digest] = (),
    *,
    read_models: bool = True,
    checkpoint_notes: Sequence[str] = (),
    checkpoint_key: Verifier | None = None,
    checkpoint_file: Path | None = None,
) -> VerifyReport:
    """Re-derive history and check it: every seal against the chain key and ``digests``, the
    stored checkpoints and ``checkpoint_notes`` against the tree (signed by ``checkpoint_key``,
    when there is one), every invariant at every position, and the read models against a
    fresh replay. ``checkpoint_file``: the service's own checkpoint file (kept outside the
    database); the notes at its end that ``checkpoint_key`` signed are checked too, so a
    rollback of the log's tail together with its checkpoint rows is named."""
    if checkpoint_key is not None:
        checkpoint_notes = [*checkpoint_notes, *kept_notes(checkpoint_file, checkpoint_key,
                                                            checkpoint_key.name)]
    key = app.recorder.chain_key  # type: ignore[attr-defined]
    # The events at position 0 or below first: no reader of the log sees them, but loading their
    # aggregate does, and none carries a seal of the writer's (it never places one there).
    stored = itertools.chain(below_the_log(app.recorder), all_notifications(app.recorder))
    chain = check_chain(key, stored, Chain(app.recorder).links(), digests)
    report = VerifyReport(chain.events_checked, None)
    bad_positions = []
    if not chain.ok:
        bad_positions.append(chain.first_bad_position)
        report.damage = [{"position": d.position, "what": d.what} for d in chain.damage]
        report.problems += [f"chain damaged at {d.describe()}" for d in chain.damage]
    damaged, checked = checkpoint_damage(app.recorder, checkpoint_key, checkpoint_notes)
    for damage, detail in damaged:
        bad_positions.append(damage.position)
        report.damage.append({"position": damage.position, "what": damage.what})
        report.problems.append(f"checkpoint: {damage.describe()} ({detail})")
    if checkpoint_key is None:
        report.unchecked_signatures = checked
    report.damage.sort(key=lambda d: d["position"])  # log order, checkpoints' among the chain's
    breach = first_invariant_breach(app)
    if breach is not None:
        bad_positions.append(breach[0])
        report.problems.append(f"invariant broken at position {breach[0]}: {breach[1]}")
    report.first_bad_position = min((p for p in bad_positions if p is not None), default=None)
    if read_models and not report.problems:  # a bad log would replay into bad rows anyway
        report.problems += read_model_differences(settings, app)
    report.problems += unsealed_subscriptions(settings, key)
    return report


def unsealed_subscriptions(settings: StoreSettings, key: Any) -> list[str]:
    """The webhook subscriptions whose seal the chain key does not hold: added by SQL (every
    customer's messages asked for by someone without the key), or before subscriptions were
    sealed. The deliverer sends them nothing; an auditor is told they are there."""
    view = open_view(settings, outbox.OutboxProjection, pool_size=1)
    try:
        urls = outbox.unsealed_urls(view, key)
    finally:
        view.datastore.close()
    return [f"webhook subscription {outbox.shown_url(url)} is not sealed with the service's key "
            "(added by SQL, or before subscriptions were sealed): nothing is sent to it; "
            "`ledger webhooks add` it again if it is yours, else remove it" for url in urls]


def first_invariant_breach(app: LedgerApplication) -> tuple[int, str] | None:
    """Replay the domain over the whole log, checking DOMAIN.md's invariants after each event."""
    aggregates: dict[UUID, Any] = {}
    journal_customers: dict[str, int] = defaultdict(int)
    posted: dict[str, int] = defaultdict(int)
    for notification in all_notifications(app.recorder):
        position = notification.id
        try:
            event: Any = app.mapper.to_domain_event(notification)
            before = aggregates.get(event.originator_id)
            posted_before = before.posted if isinstance(before, Account) else 0
            aggregate = event.mutate(before)
        except Exception as error:  # a stored event that no longer decodes or applies
            return position, f"event does not replay: {error!r}"
        aggregates[event.originator_id] = aggregate
        if not isinstance(aggregate, Account):
            continue
        problem = _account_problem(aggregate)
        if problem:
            return position, problem
        currency = aggregate.currency
        posted[currency] += aggregate.posted - posted_before
        entries = journal.postings(event, aggregate.username, currency)
        if sum(p.amount for p in entries) != 0:
            return position, "postings do not balance"
        journal_customers[currency] -= sum(
            p.amount for p in entries if p.account == journal.customer(aggregate.username)
        )
        if journal_customers[currency] != posted[currency]:
            return position, f"{currency} customer balances differ from the journal"
    return None


def _account_problem(account: Account) -> str | None:
    if account.held < 0 or account.available < 0:
        return f"account {account.username} has available {account.available}"
    for order_no, (paid, credited_back) in account.orders.items():
        if credited_back > paid:
            return f"order {order_no} of {account.username} credited back beyond what was paid"
    return None


def read_model_differences(settings: StoreSettings, app: LedgerApplication) -> list[str]:
    """Each live read model against a fresh replay up to the position it has reached."""
    problems = []
    for projection in PROJECTIONS:
        live_view = open_view(settings, projection, pool_size=1)
        try:
            tables = tables_of(projection)
            position, live = live_view.dump(tables)
            with scratch_views((projection,)) as views:
                try:
                    replay(app, views, upto=position)
                except HistoryDamaged as damaged:  # sealed when the chain was checked, not now
                    problems.append(f"read model {projection.name}: {damaged}")
                    continue
                fresh_position, fresh = views[0][1].dump(tables)
            found = differences(live, fresh)
            if fresh_position != position:
                found.append(f"replay reached {fresh_position}, live is at {position}")
            problems += [f"read model {projection.name}: {d}" for d in found]
        finally:
            live_view.datastore.close()
    return problems
