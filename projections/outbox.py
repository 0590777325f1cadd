"""Outbox read model: what the customer is told, as messages kept from the log, and what became
of each message's delivery (``api.webhooks`` sends them).

The projection turns every event that matters to someone outside into a message: each step of a
return case (notes only when meant for the customer), each step of a balance refund request,
deposits and purchase failures credited back. A message's id is derived from its event (the
stream and its version), so a rebuild makes the same ids and a receiver can tell a message sent
twice. Each message carries the customer, the case or request, the figures (minor units and a
currency) and ``customer_message``: words the shop's mailer can send as they are.

The messages (``ob_messages``) and the streams' facts the messages need (``ob_streams``) are the
projection's tables, written with its tracking record like every read model's. What became of
each delivery (``ob_deliveries``), the subscriptions made with ``ledger webhooks add``
(``ob_subscriptions``), how far each subscriber's deliveries are all settled
(``ob_cursors``) and how far its messages have been looked at (``ob_scans``) are not derived
from the log: they sit beside the read model in the same datastore, are made by
``create_delivery_tables`` and survive a rebuild.

Per subscriber, each customer with a message still to send has exactly one delivery row
``waiting`` (more only after ``redeliver``, the earliest going first): their first message not
yet delivered nor parked, the customer's *head*. A message gets its row when it becomes the
head: when it is first looked at (``pending`` looks only at the messages new since its last
look, ``ob_scans``) and its customer has none, or when the head before it settles
(``settle``). So a round reads the heads and the new messages, never every message waiting
behind a head: one customer's message failing for a day (parked only at
``LEDGER_WEBHOOK_MAX_AGE_S``) used to make every round read every message written since. A
deliverer that begins to lead looks again from the cursor (``look_again``), a ``SCAN_BATCH`` at
a time: heads that a deliverer of an earlier version (which made none as a head settled) left
unmade are made then.

Its tables, its projection, and its queries (``messages_of``, ``outbox`` a page at a time) and
the deliverer's (``pending``, ``settle``, ``redeliver``, subscriptions).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

from ledger.account import Account
from ledger.money import decimal_text
from ledger.refund_request import RefundRequest
from ledger.return_case import ReturnCase
from projections.events import json_text, moment_text
from projections.paging import Page, cursor, page_size, paged
from projections.seal import ChainKey, same_seal, seal_text
from projections.views import (
    APP_NAME,
    BrokenReadModel,
    ReadModelProjection,
    ReadModelView,
    Row,
    SQLiteReadModelView,
    _postgres,
    _to_sqlite,
)

NAME = "outbox"
DDL = (
    "CREATE TABLE IF NOT EXISTS ob_messages ("
    " id TEXT PRIMARY KEY, position BIGINT NOT NULL, type TEXT NOT NULL,"
    " username TEXT NOT NULL, currency TEXT NOT NULL, amount BIGINT, case_id TEXT,"
    " request_id TEXT, order_no TEXT, customer_message TEXT NOT NULL, details TEXT NOT NULL,"
    " created_at TEXT NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS ob_messages_by_position ON ob_messages (position)",
    "CREATE INDEX IF NOT EXISTS ob_messages_by_case ON ob_messages (case_id, position)",
    "CREATE INDEX IF NOT EXISTS ob_messages_by_request ON ob_messages (request_id, position)",
    # a customer's next message once their head settles (``settle``)
    "CREATE INDEX IF NOT EXISTS ob_messages_by_customer ON ob_messages (username, position)",
    # Each row sealed by the keeper (``stream_seal``): the facts of later messages (who, which
    # currency, which order, the last date to send goods back) are taken from it, so a row
    # changed by SQL stops the outbox rather than a message to the wrong customer being sealed.
    "CREATE TABLE IF NOT EXISTS ob_streams ("
    " id TEXT PRIMARY KEY, username TEXT NOT NULL, currency TEXT NOT NULL, order_no TEXT,"
    " return_by TEXT, seal TEXT)",
    # Each message's seal (``seal_of``), made by the keeper from sealed events only: the
    # deliverer signs and sends no message whose seal does not hold, so a row INSERTed into
    # ob_messages by SQL never reaches a receiver. A table of its own, so that a store made
    # before it gets its messages' seals with ``ledger rebuild``.
    "CREATE TABLE IF NOT EXISTS ob_seals ("
    " message_id TEXT PRIMARY KEY, position BIGINT NOT NULL, seal TEXT NOT NULL)",
)
# Not derived from the log (see the module docstring): made beside the read model, kept by a
# rebuild, never compared by verify.
DELIVERY_DDL = (
    "CREATE TABLE IF NOT EXISTS ob_deliveries ("
    " message_id TEXT NOT NULL, subscriber TEXT NOT NULL, position BIGINT NOT NULL,"
    " username TEXT NOT NULL, status TEXT NOT NULL, attempts BIGINT NOT NULL,"
    " next_at DOUBLE PRECISION NOT NULL, delivered_at TEXT, last_error TEXT,"
    " PRIMARY KEY (message_id, subscriber))",
    "CREATE INDEX IF NOT EXISTS ob_deliveries_by_status ON ob_deliveries (status, position)",
    # Each row sealed by whoever added it with the chain key (``subscription_seal``): a row
    # INSERTed by SQL (someone with the database's password, not the service's key, sending
    # every customer's messages, signed, to a URL of theirs) is never sent to.
    "CREATE TABLE IF NOT EXISTS ob_subscriptions ("
    " url TEXT PRIMARY KEY, since BIGINT NOT NULL, added_at TEXT NOT NULL, seal TEXT)",
    "CREATE TABLE IF NOT EXISTS ob_cursors (subscriber TEXT PRIMARY KEY, upto BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ob_scans (subscriber TEXT PRIMARY KEY, upto BIGINT NOT NULL)",
)
# New messages a round looks at, at most (the rest at the next rounds): a deliverer catching up
# on a long log makes heads a bounded batch at a time.
SCAN_BATCH = 5_000
WAITING, DELIVERED, FAILED = "waiting", "delivered", "failed"
# Subscriptions there may be (``ledger webhooks add``): each is a receiver the deliverer looks at
# every round, and a part of the outbox page's status filter.
MAX_SUBSCRIPTIONS = 100
STATUSES = (WAITING, DELIVERED, FAILED)
# Message ids: uuid5 in a namespace of the ledger's own, of the event's stream and version.
NAMESPACE = uuid.UUID("5a0d7c1e-6b1f-4f3e-9d0a-0b7e2c1f4a14")

CASE_EVENTS: frozenset[type[Any]] = frozenset(
    {
        ReturnCase.Opened, ReturnCase.SupplierReviewStarted, ReturnCase.Accepted,
        ReturnCase.Rejected, ReturnCase.ShippedBack, ReturnCase.Received,
        ReturnCase.Expired, ReturnCase.Forwarded, ReturnCase.Resolved, ReturnCase.Closed,
        ReturnCase.Cancelled, ReturnCase.NoteAdded, ReturnCase.Refused,
    }
)
REQUEST_EVENTS: frozenset[type[Any]] = frozenset(
    {
        RefundRequest.Requested, RefundRequest.Approved, RefundRequest.Rejected,
        RefundRequest.Cancelled, RefundRequest.PaidOut,
    }
)
ACCOUNT_EVENTS: frozenset[type[Any]] = frozenset(
    {Account.Opened, Account.DepositReceived, Account.PurchaseFailed}
)
# Every message type, with what it tells (the contract in api/README.md lists the same).
MESSAGE_TYPES: Mapping[str, str] = {
    "return_case.opened": "a return or exchange case was opened",
    "return_case.refused": "a return was refused when asked for (its reason)",
    "return_case.supplier_review": "the supplier reviews the return",
    "return_case.accepted": "the supplier accepted: where to send the goods, and by when",
    "return_case.rejected": "the supplier refused the return (its reason)",
    "return_case.shipped_back": "the customer's parcel is on its way back (its tracking)",
    "return_case.received": "the goods came back in time",
    "return_case.late": "the goods came back posted after the last accepted date",
    "return_case.expired": "no goods came back by the last accepted date",
    "return_case.forwarded": "the goods went on to the supplier",
    "return_case.resolved": "refund (money credited, freight charged), exchange or repair",
    "return_case.closed": "the case is closed",
    "return_case.cancelled": "the case was cancelled (its reason)",
    "return_case.note": "a progress note meant for the customer",
    "refund_request.requested": "a balance refund was asked for (the amount held)",
    "refund_request.approved": "the refund was approved",
    "refund_request.rejected": "the refund was refused (its reason); the amount released",
    "refund_request.cancelled": "the refund was cancelled (its reason); the amount released",
    "refund_request.paid": "the refund was paid out (its payout reference)",
    "deposit.recorded": "a payment reached the customer's balance",
    "purchase.failed": "an order failed after payment and was credited back",
}


def message_id(event: Any, message_type: str) -> str:
    """``uuid5(NAMESPACE, "<stream>:<version>:<type>")`` as text: a receiver's key for the
    message, the same however often the outbox is rebuilt."""
    return uuid5_text(NAMESPACE_BYTES,
                      f"{event.originator_id}:{event.originator_version}:{message_type}")


NAMESPACE_BYTES = NAMESPACE.bytes


def uuid5_text(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(UUID(bytes=namespace), name))``, without the two UUID objects: a
    rebuild makes one for each of its messages (RFC 9562, 5.5: SHA-1, then the version and the
    variant bits)."""
    digest = bytearray(hashlib.sha1(namespace + name.encode(), usedforsecurity=False)
                       .digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC's variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def money_text(amount: int, currency: str) -> str:
    """``1234`` EUR → ``12.34 EUR``."""
    return f"{decimal_text(amount, currency)} {currency}"


class OutboxProjection(ReadModelProjection):
    name = NAME
    ddl = DDL
    keys: ClassVar[Mapping[str, tuple[str, ...]]] = {"ob_streams": ("id",)}
    handles = CASE_EVENTS | REQUEST_EVENTS | ACCOUNT_EVENTS

    def process_event(self, event: Any, position: int) -> None:
        kind = type(event)
        stream_id = str(event.originator_id)
        if kind in (ReturnCase.Opened, ReturnCase.Refused, RefundRequest.Requested,
                    Account.Opened):
            stream = self._put_stream({
                "id": stream_id, "username": event.username, "currency": event.currency,
                "order_no": getattr(event, "order_no", None), "return_by": None,
            })
        else:
            stream = self.rows.get("ob_streams", stream_id, check=self._check_stream)
        if kind is ReturnCase.Accepted:
            stream = self._put_stream({**stream, "return_by": event.return_by})
        said = _message(event, stream)
        if said is None:
            return
        message_type, text, amount, details = said
        case_id = stream_id if kind in CASE_EVENTS else None
        request_id = stream_id if kind in REQUEST_EVENTS else None
        message = {
            "id": message_id(event, message_type),
            "position": position,
            "type": message_type,
            "username": stream["username"],
            "currency": stream["currency"],
            "amount": amount,
            "case_id": case_id,
            "request_id": request_id,
            "order_no": details.pop("order_no", stream["order_no"]),
            "customer_message": text,
            "details": json_text(details),
            "created_at": moment_text(event.timestamp),
        }
        assert self.key is not None, "the outbox seals its messages: give it the chain key"
        self.rows.add("ob_messages", message)
        self.rows.add("ob_seals", {"message_id": message["id"], "position": position,
                                   "seal": seal_of(self.key, message)})

    def _put_stream(self, facts: Row) -> Row:
        """A stream's row as it now stands, with its seal."""
        assert self.key is not None, "the outbox seals its streams: give it the chain key"
        stream = {**facts, "seal": stream_seal(self.key, facts)}
        self.rows.put("ob_streams", stream)
        return stream

    def _check_stream(self, stream: Row) -> None:
        """A stream's row read from the store is one this projection made: else the outbox
        stops before the event that needs it (``BrokenReadModel``), and says what to do."""
        assert self.key is not None
        seal = stream.get("seal")
        if seal is None or not same_seal(stream_seal(self.key, stream), str(seal)):
            raise BrokenReadModel(
                f"the outbox's facts of stream {stream['id']} (table ob_streams) do not hold "
                "their seal: they were changed behind the service's back, so no message is "
                "made from them; `ledger rebuild` makes them again from the sealed log")


Said = tuple[str, str, int | None, dict[str, Any]]
# What a stream's seal covers (with the table's name first: no stream's seal text is ever a
# message's, whose first value is a message id).
STREAM_SEALED = ("id", "username", "currency", "order_no", "return_by")


def stream_seal(key: ChainKey, stream: Mapping[str, Any]) -> str:
    """A stream's seal: the chain key's seal of read-model rows, of its facts."""
    return key.row_seal(seal_text(["ob_streams", *(stream[c] for c in STREAM_SEALED)]))


# What a message's seal covers: every column that is sent.
SEALED = ("id", "position", "type", "username", "currency", "amount", "case_id", "request_id",
          "order_no", "customer_message", "details", "created_at")


def seal_of(key: ChainKey, message: Mapping[str, Any]) -> str:
    """A message's seal: the chain key's message seal of its columns, in ``SEALED`` order."""
    return key.message_seal(seal_text([message[column] for column in SEALED]))


def sealed(key: ChainKey, message: Mapping[str, Any]) -> bool:
    """Whether the message (a row of ``pending``, its ``seal`` with it) is one the keeper made."""
    seal = message.get("seal")
    return seal is not None and same_seal(seal_of(key, message), str(seal))


def _message(event: Any, stream: Row) -> Said | None:
    """The message an event makes: its type, its words, its amount and its other facts."""
    kind = type(event)
    currency = stream["currency"]
    order = stream["order_no"]
    if kind in CASE_EVENTS:
        return _case_message(event, order, currency, stream["return_by"])
    if kind in REQUEST_EVENTS:
        return _request_message(event, order, currency)
    if kind is Account.DepositReceived:
        return ("deposit.recorded",
                f"We received your payment of {money_text(event.amount, currency)} "
                f"(reference {event.reference}); it is now on your balance.",
                event.amount, {"reference": event.reference, "order_no": None})
    if kind is Account.PurchaseFailed:
        return ("purchase.failed",
                f"Your order {event.order_no} could not be completed: {event.reason}. "
                f"{money_text(event.amount, currency)} was credited back to your balance.",
                event.amount, {"reason": event.reason, "order_no": event.order_no})
    return None  # an account opened: its facts only


def _case_message(event: Any, order: str, currency: str, return_by: str | None) -> Said | None:
    kind = type(event)
    case = f"your return for order {order}"
    if kind is ReturnCase.Opened:
        return ("return_case.opened",
                f"We have opened a {event.kind} case for your order {order}. We will keep you "
                "posted on its progress.", None, {"kind": event.kind})
    if kind is ReturnCase.Refused:
        return _refused(event, order)
    if kind is ReturnCase.SupplierReviewStarted:
        return ("return_case.supplier_review",
                f"We have asked the supplier to review {case}. We will tell you their answer.",
                None, {})
    if kind is ReturnCase.Accepted:
        extra = f" {event.instructions.strip()}" if event.instructions.strip() else ""
        return ("return_case.accepted",
                f"The supplier accepted {case}. Please send the goods to: "
                f"{event.return_address}. The parcel must be postmarked no later than "
                f"{event.return_by}.{extra}", None,
                {"return_address": event.return_address, "return_by": event.return_by,
                 "instructions": event.instructions})
    if kind is ReturnCase.Rejected:
        return ("return_case.rejected",
                f"The supplier did not accept {case}: {event.reason}.", None,
                {"reason": event.reason})
    if kind is ReturnCase.ShippedBack:
        return ("return_case.shipped_back",
                f"We have noted that you sent the goods back (tracking {event.tracking}).",
                None, {"tracking": event.tracking})
    if kind is ReturnCase.Received:
        missing = [name.replace("_", " ") for name in
                   ("goods", "original_packaging", "acceptance_copy")
                   if not getattr(event, name)]
        lacking = f" Missing: {', '.join(missing)}." if missing else ""
        if event.late:
            return ("return_case.late",
                    f"We received the goods of {case}, postmarked {event.postmark_date}, after "
                    f"the last date the supplier accepts ({return_by}).{lacking}", None,
                    {"postmark_date": event.postmark_date, "return_by": return_by,
                     "missing": missing})
        return ("return_case.received",
                f"We received the goods of {case} (postmarked {event.postmark_date})."
                f"{lacking}", None,
                {"postmark_date": event.postmark_date, "missing": missing})
    if kind is ReturnCase.Expired:
        return ("return_case.expired",
                f"No goods for {case} reached us postmarked by {return_by}: the return has "
                "expired.", None, {"return_by": return_by})
    if kind is ReturnCase.Forwarded:
        return ("return_case.forwarded",
                f"The goods of {case} are on their way to the supplier.", None, {})
    if kind is ReturnCase.Resolved:
        return _resolved(event, order, currency)
    if kind is ReturnCase.Closed:
        return ("return_case.closed", f"The case for your order {order} is closed.", None, {})
    if kind is ReturnCase.Cancelled:
        return ("return_case.cancelled",
                f"The case for your order {order} was cancelled: {event.reason}.", None,
                {"reason": event.reason})
    if kind is ReturnCase.NoteAdded:
        if not getattr(event, "for_customer", False):
            return None  # kept inside the shop
        return ("return_case.note", event.text, None, {})
    return None


def _refused(event: Any, order: str) -> Said:
    """A case the policy refused at opening: the reason's code, and its words."""
    return ("return_case.refused",
            f"We cannot accept a return for your order {order}: {event.words}", None,
            {"reason": event.reason})


def _resolved(event: Any, order: str, currency: str) -> Said:
    figures = {"outcome": event.outcome, "refund_amount": event.refund_amount,
               "freight_amount": event.freight_amount, "tracking": event.tracking}
    freight = (f" {money_text(event.freight_amount, currency)} was charged for the freight."
               if event.freight_amount else "")
    if event.outcome == "refund":
        net = event.refund_amount - event.freight_amount
        return ("return_case.resolved",
                f"Your return for order {order} is resolved with a refund: "
                f"{money_text(event.refund_amount, currency)} was credited to your balance."
                f"{freight} Net: {money_text(net, currency)}.", event.refund_amount, figures)
    tracking = f" (tracking {event.tracking})" if event.tracking else ""
    article = "an" if event.outcome == "exchange" else "a"
    return ("return_case.resolved",
            f"Your return for order {order} is resolved with {article} "
            f"{event.outcome}{tracking}.{freight}", None, figures)


def _request_message(event: Any, order: str, currency: str) -> Said | None:
    kind = type(event)
    if kind is RefundRequest.Requested:
        return ("refund_request.requested",
                f"We received your request for a refund of "
                f"{money_text(event.amount, currency)} from your balance (order {order}). "
                "We will tell you once it is decided.", event.amount,
                {"reason": event.reason})
    if kind is RefundRequest.Approved:
        return ("refund_request.approved",
                f"Your refund for order {order} was approved; the payout follows.", None, {})
    if kind is RefundRequest.Rejected:
        return ("refund_request.rejected",
                f"Your refund for order {order} was not approved: {event.reason}. The amount "
                "stays on your balance.", None, {"reason": event.reason})
    if kind is RefundRequest.Cancelled:
        return ("refund_request.cancelled",
                f"Your refund request for order {order} was cancelled: {event.reason}. The "
                "amount stays on your balance.", None, {"reason": event.reason})
    if kind is RefundRequest.PaidOut:
        return ("refund_request.paid",
                f"Your refund for order {order} was paid out (payout reference "
                f"{event.payout_reference}).", None,
                {"payout_reference": event.payout_reference})
    return None


# -- the delivery tables -------------------------------------------------------------------------


def execute(view: ReadModelView, sql: str, params: dict[str, Any] | None = None) -> int:
    """One write statement in a transaction of its own; answers the rows it changed."""
    sqlite = isinstance(view, SQLiteReadModelView)
    with view.datastore.transaction(commit=True) as cursor:
        if sqlite:
            cursor = cursor.sqlite_cursor
            sql = _to_sqlite(sql)
        cursor.execute(sql, params or {})
        return int(cursor.rowcount)


def execute_many(view: ReadModelView, sql: str, rows: Sequence[dict[str, Any]]) -> None:
    """One write statement for each of ``rows``, all in one transaction."""
    if not rows:
        return
    sqlite = isinstance(view, SQLiteReadModelView)
    with view.datastore.transaction(commit=True) as cursor:
        if sqlite:
            cursor = cursor.sqlite_cursor
            sql = _to_sqlite(sql)
        cursor.executemany(sql, rows)


def create_delivery_tables(view: ReadModelView) -> None:
    for statement in DELIVERY_DDL:
        execute(view, statement)
    if not has_column(view, "ob_subscriptions", "seal"):
        # Made before subscriptions were sealed: their rows stay, unsealed, and are not sent
        # to until an operator adds them again (``subscribe``), with the key.
        execute(view, "ALTER TABLE ob_subscriptions ADD COLUMN seal TEXT")


def has_column(view: ReadModelView, table: str, column: str) -> bool:
    """Whether ``table`` of the view's datastore has ``column`` (False: no such table)."""
    if isinstance(view, SQLiteReadModelView):
        return bool(view.query(f"SELECT name FROM pragma_table_info('{table}')"  # noqa: S608
                               " WHERE name = %(column)s", {"column": column}))
    return bool(view.query(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %(table)s AND column_name = %(column)s",
        {"table": table, "column": column}))


def seal_streams(view: ReadModelView) -> bool:
    """A store made before the outbox sealed its streams (``ob_streams`` without its seal
    column): the column is added, and the keeper makes the outbox again from the sealed log
    (its messages, streams and seals emptied and its tracking set back to 0, in one
    transaction; the deliveries and subscriptions kept, as by ``ledger rebuild``). Nothing of
    an unsealed row is trusted. Answers whether it did so."""
    if has_column(view, "ob_streams", "seal"):
        return False
    sqlite = isinstance(view, SQLiteReadModelView)
    with view.datastore.transaction(commit=True) as cursor:
        if sqlite:
            cursor = cursor.sqlite_cursor
        cursor.execute("ALTER TABLE ob_streams ADD COLUMN seal TEXT")
        for table in ("ob_streams", "ob_messages", "ob_seals"):
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 (names from the code)
        cursor.execute("DELETE FROM ob_scans")  # the messages are made again: looked at again
        tracking = "tracking" if sqlite else _postgres(view).tracking_table_name
        cursor.execute(f"UPDATE {tracking} SET notification_id = 0"  # noqa: S608
                       f" WHERE application_name = '{APP_NAME}'")
    return True


def subscriptions(view: ReadModelView) -> list[dict[str, Any]]:
    return view.query("SELECT url, since, added_at, seal FROM ob_subscriptions ORDER BY url")


def unsealed_urls(view: ReadModelView, key: ChainKey) -> list[str]:
    """The subscriptions' URLs whose seal ``key`` does not hold (``subscription_sealed``); on a
    store whose table has no seals yet (schema before version 3), every one of them."""
    if not has_column(view, "ob_subscriptions", "url"):
        return []  # no table: its delivery tables were never made
    if not has_column(view, "ob_subscriptions", "seal"):
        return [row["url"] for row in view.query("SELECT url FROM ob_subscriptions ORDER BY url")]
    return [row["url"] for row in subscriptions(view) if not subscription_sealed(key, row)]


def subscription_seal(key: ChainKey, url: str, since: int, added_at: str) -> str:
    """A subscription's seal: the chain key's seal of read-model rows, of its columns (the
    table's name first: no other row's seal text is ever a subscription's)."""
    return key.row_seal(seal_text(["ob_subscriptions", url, int(since), added_at]))


def subscription_sealed(key: ChainKey, row: Mapping[str, Any]) -> bool:
    """Whether a subscription's row is one the service's key made (``subscribe``)."""
    seal = row.get("seal")
    return seal is not None and same_seal(
        subscription_seal(key, row["url"], row["since"], row["added_at"]), str(seal))


class TooManySubscriptions(ValueError):
    """``MAX_SUBSCRIPTIONS`` are there: one must be removed before another is added."""


def subscribe(view: ReadModelView, url: str, *, since: int, added_at: str,
              key: ChainKey) -> bool:
    """Subscribe ``url`` to the messages after log position ``since``, sealed with ``key``;
    False if it was. A row of ``url`` that its seal does not vouch for (added by SQL, or before
    subscriptions were sealed) is replaced: whoever holds the key says it is theirs.
    ``TooManySubscriptions`` when ``MAX_SUBSCRIPTIONS`` are there (an operator's bound, not
    a lock: two added at the very same moment may both pass it)."""
    values = {"url": url, "since": since, "added_at": added_at,
              "seal": subscription_seal(key, url, since, added_at), "most": MAX_SUBSCRIPTIONS}
    found = view.query("SELECT url, since, added_at, seal FROM ob_subscriptions"
                       " WHERE url = %(url)s", {"url": url})
    if found:
        if subscription_sealed(key, found[0]):
            return False
        return execute(view, "UPDATE ob_subscriptions SET since = %(since)s,"
                             " added_at = %(added_at)s, seal = %(seal)s"
                             " WHERE url = %(url)s AND seal IS NOT DISTINCT FROM %(was)s",
                       {**values, "was": found[0]["seal"]}) == 1
    added = execute(view, "INSERT INTO ob_subscriptions (url, since, added_at, seal)"
                          " SELECT %(url)s, %(since)s, %(added_at)s, %(seal)s"
                          " WHERE (SELECT COUNT(*) FROM ob_subscriptions) < %(most)s"
                          " ON CONFLICT (url) DO NOTHING", values) == 1
    if not added and not view.query("SELECT 1 FROM ob_subscriptions WHERE url = %(url)s",
                                    {"url": url}):
        raise TooManySubscriptions(
            f"{MAX_SUBSCRIPTIONS} receivers are subscribed, the most there may be: remove one "
            "first (`ledger webhooks remove`)")
    return added


def unsubscribe(view: ReadModelView, url: str) -> bool:
    """Stop sending ``url`` messages: its deliveries still waiting are dropped (those done
    stay, as history)."""
    removed = execute(view, "DELETE FROM ob_subscriptions WHERE url = %(url)s", {"url": url})
    execute(view, "DELETE FROM ob_deliveries WHERE subscriber = %(url)s AND status = 'waiting'",
            {"url": url})
    execute(view, "DELETE FROM ob_cursors WHERE subscriber = %(url)s", {"url": url})
    execute(view, "DELETE FROM ob_scans WHERE subscriber = %(url)s", {"url": url})
    return removed == 1


def last_position(view: ReadModelView) -> int:
    rows = view.query("SELECT MAX(position) AS p FROM ob_messages")
    return int(rows[0]["p"] or 0)


def pending(view: ReadModelView, subscriber: str, *, since: int, now: float, limit: int,
            after_customer: str = "") -> list[dict[str, Any]]:
    """For each customer with a message the subscriber has not yet had (not delivered nor
    parked), that first such message (their head, see the module docstring), if it is due
    (``next_at`` not after ``now``): one per customer, so a customer's later message never goes
    before an earlier one (log order per customer), and a customer whose first message keeps
    failing holds back only their own.

    At most ``limit`` customers, taken in turn by name: those after ``after_customer`` first,
    then from the start again; the caller passes the last name it was given, so every customer
    gets a turn within a few rounds however many are waiting. Each message comes with its
    delivery's attempts and next try so far. First the messages new since the last look are
    looked at (at most ``SCAN_BATCH``), a row made for each that is its customer's head; then
    the subscriber's cursor moves past every settled message."""
    params: dict[str, Any] = {"s": subscriber, "now": now, "limit": limit,
                              "turn": after_customer}
    after, scanned = _marks(view, subscriber, since)
    top = last_position(view)
    scanned = _look_at_new(view, subscriber, scanned, top)
    rows = view.query(
        "SELECT m.id, m.position, m.type, m.username, m.currency, m.amount, m.case_id,"
        " m.request_id, m.order_no, m.customer_message, m.details, m.created_at,"
        " h.status, h.attempts, h.next_at, sl.seal FROM"
        " (SELECT d.message_id, d.status, d.attempts, d.next_at, ROW_NUMBER() OVER"
        " (PARTITION BY d.username ORDER BY d.position) AS nth FROM ob_deliveries d"
        " WHERE d.subscriber = %(s)s AND d.status = 'waiting') h"
        " JOIN ob_messages m ON m.id = h.message_id"
        " LEFT JOIN ob_seals sl ON sl.message_id = m.id"
        " WHERE h.nth = 1 AND h.next_at <= %(now)s"
        " ORDER BY CASE WHEN m.username > %(turn)s THEN 0 ELSE 1 END, m.username"
        " LIMIT %(limit)s", params)
    settled = _first_unsettled(view, subscriber, scanned, top) - 1
    if settled > after:
        execute(view, "INSERT INTO ob_cursors (subscriber, upto) VALUES (%(s)s, %(upto)s)"
                      " ON CONFLICT (subscriber) DO UPDATE SET upto = excluded.upto",
                {"s": subscriber, "upto": settled})
    return rows


def look_again(view: ReadModelView) -> None:
    """Every subscriber's messages looked at again from its cursor (``ob_scans`` forgotten): a
    deliverer that begins makes any head a deliverer of another version (or one that lost a
    race with it) did not make. The look goes a ``SCAN_BATCH`` at a time, as any look."""
    execute(view, "DELETE FROM ob_scans")


def _marks(view: ReadModelView, subscriber: str, since: int) -> tuple[int, int]:
    """(the subscriber's cursor: every message up to it settled or before ``since``; how far
    its messages have been looked at, never behind the cursor). A store from before
    ``ob_scans`` looks from the cursor again once, making the heads it has not made."""
    found = view.query(
        "SELECT (SELECT upto FROM ob_cursors WHERE subscriber = %(s)s) AS upto,"
        " (SELECT upto FROM ob_scans WHERE subscriber = %(s)s) AS scanned", {"s": subscriber})
    after = max(since, int(found[0]["upto"] or 0))
    return after, max(after, int(found[0]["scanned"] or 0))


def _look_at_new(view: ReadModelView, subscriber: str, scanned: int, top: int) -> int:
    """Make a row for each message after ``scanned`` (at most ``SCAN_BATCH`` of them, none
    past ``top``) that is its customer's head (the customer has no row waiting); answers how
    far it looked."""
    if top <= scanned:
        return scanned
    params = {"s": subscriber, "scanned": scanned, "top": top, "batch": SCAN_BATCH}
    new = view.query(
        "SELECT m.id, m.position, m.username, d.status FROM ob_messages m"
        " LEFT JOIN ob_deliveries d ON d.message_id = m.id AND d.subscriber = %(s)s"
        " WHERE m.position > %(scanned)s AND m.position <= %(top)s"
        " ORDER BY m.position LIMIT %(batch)s", params)
    looked = int(new[-1]["position"]) if len(new) == SCAN_BATCH else top
    if new:
        with_head = {row["username"] for row in view.query(
            "SELECT DISTINCT username FROM ob_deliveries"
            " WHERE subscriber = %(s)s AND status = 'waiting'", params)}
        heads = []
        for row in new:  # a row there already: settled, or a head counted above
            if row["status"] is None and row["username"] not in with_head:
                with_head.add(row["username"])
                heads.append(row)
        _make_heads(view, subscriber, heads)
    execute(view, "INSERT INTO ob_scans (subscriber, upto) VALUES (%(s)s, %(upto)s)"
                  " ON CONFLICT (subscriber) DO UPDATE SET upto = excluded.upto",
            {"s": subscriber, "upto": looked})
    return looked


def _make_heads(view: ReadModelView, subscriber: str, messages: Sequence[Mapping[str, Any]]
                ) -> None:
    execute_many(view, "INSERT INTO ob_deliveries (message_id, subscriber, position,"
                       " username, status, attempts, next_at) VALUES (%(id)s, %(s)s,"
                       " %(position)s, %(username)s, 'waiting', 0, 0)"
                       " ON CONFLICT (message_id, subscriber) DO NOTHING",
                 [{"id": row["id"], "s": subscriber, "position": row["position"],
                   "username": row["username"]} for row in messages])


def _first_unsettled(view: ReadModelView, subscriber: str, scanned: int, top: int) -> int:
    """The position of the subscriber's first message neither delivered nor parked (past
    ``top`` when none): its earliest row waiting, or the first message not looked at. Every
    message looked at without a row is behind its customer's waiting head, so later."""
    found = view.query("SELECT MIN(position) AS p FROM ob_deliveries"
                       " WHERE subscriber = %(s)s AND status = 'waiting'", {"s": subscriber})
    first = top + 1 if scanned >= top else scanned + 1
    waiting = found[0]["p"]
    return first if waiting is None else min(first, int(waiting))


def settle(view: ReadModelView, message: str, subscriber: str, *, status: str, attempts: int,
           next_at: float, delivered_at: str | None, last_error: str | None) -> None:
    """What an attempt to deliver came to; ``last_error`` is kept without the subscriber's
    credentials or query (``redacted``). A delivery settled (delivered or parked) makes the
    customer's next message looked at their head."""
    if last_error is not None:
        last_error = redacted(last_error, subscriber)
    execute(view, "UPDATE ob_deliveries SET status = %(status)s, attempts = %(attempts)s,"
                  " next_at = %(next_at)s, delivered_at = %(delivered_at)s,"
                  " last_error = %(last_error)s WHERE message_id = %(m)s AND subscriber = %(s)s",
            {"status": status, "attempts": attempts, "next_at": next_at,
             "delivered_at": delivered_at, "last_error": last_error, "m": message,
             "s": subscriber})
    if status == WAITING:
        return
    params = {"m": message, "s": subscriber}
    following = view.query(
        "SELECT m.id, m.position, m.username, d.status FROM ob_deliveries settled"
        " JOIN ob_messages m ON m.username = settled.username"
        " AND m.position > settled.position"
        " LEFT JOIN ob_deliveries d ON d.message_id = m.id AND d.subscriber = %(s)s"
        " WHERE settled.message_id = %(m)s AND settled.subscriber = %(s)s"
        " AND (d.status IS NULL OR d.status = 'waiting')"
        " ORDER BY m.position LIMIT 1", params)
    if following and following[0]["status"] is None:
        _make_heads(view, subscriber, following)


def redeliver(view: ReadModelView, message: str, configured: Sequence[str] = (),
              usable: Callable[[str], bool] = lambda url: True, *,
              key: ChainKey) -> tuple[int, int]:
    """Send a message again, with the same id, to every receiver of now (``receivers``) that
    had it (delivered or parked). Answers how many deliveries were set waiting (0: no such
    message, or never tried), and how many of its deliveries went to receivers that are not
    receivers now (removed, or not configured where this runs): those are history, and none is
    sent them again, so none is promised."""
    found = view.query("SELECT position FROM ob_messages WHERE id = %(m)s", {"m": message})
    if not found:
        return 0, 0
    position = int(found[0]["position"])
    now = {url for url, _ in receivers(view, configured, usable, key=key)}
    had = view.query("SELECT subscriber FROM ob_deliveries WHERE message_id = %(m)s",
                     {"m": message})
    others = sum(row["subscriber"] not in now for row in had)
    if len(had) == others:
        return 0, others
    urls = {f"r{n}": url for n, url in enumerate(sorted(now))}
    marks = ", ".join(f"%({name})s" for name in urls)
    changed = execute(view, "UPDATE ob_deliveries SET status = 'waiting', next_at = 0"  # noqa: S608
                            f" WHERE message_id = %(m)s AND subscriber IN ({marks})",
                      {"m": message, **urls})
    execute(view, "UPDATE ob_cursors SET upto = %(before)s WHERE upto >= %(position)s",
            {"before": position - 1, "position": position})
    return changed, others


def backlog(view: ReadModelView, subscribers: list[tuple[str, int]]) -> dict[str, Any]:
    """Messages waiting for a subscriber (``(url, since)``): not yet delivered nor parked,
    whether or not a delivery was begun, summed over the subscribers; and the creation time of
    the oldest of them. Counted as the messages past each subscriber's cursor less those
    settled there, each by its index, never by reading the messages."""
    waiting, oldest = 0, None
    top = last_position(view)
    for subscriber, since in subscribers:
        after, scanned = _marks(view, subscriber, since)
        params = {"s": subscriber, "after": after,
                  "first": _first_unsettled(view, subscriber, scanned, top)}
        rows = view.query(
            "SELECT (SELECT COUNT(*) FROM ob_messages WHERE position > %(after)s)"
            " - (SELECT COUNT(*) FROM ob_deliveries WHERE subscriber = %(s)s"
            " AND status <> 'waiting' AND position > %(after)s) AS n,"
            " (SELECT created_at FROM ob_messages WHERE position >= %(first)s"
            " ORDER BY position LIMIT 1) AS oldest", params)
        waiting += int(rows[0]["n"] or 0)
        first = rows[0]["oldest"]
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return {"waiting": waiting, "oldest": oldest}


# -- the reads ---------------------------------------------------------------------------------

_MESSAGE_COLUMNS = ("id, position, type, username, currency, amount, case_id, request_id,"
                    " order_no, customer_message, details, created_at")


def body(row: Mapping[str, Any]) -> dict[str, Any]:
    """A message as it is sent and shown (without its deliveries)."""
    return {
        "id": row["id"], "type": row["type"], "position": int(row["position"]),
        "created_at": row["created_at"], "username": row["username"],
        "currency": row["currency"],
        "amount": None if row["amount"] is None else int(row["amount"]),
        "case_id": row["case_id"], "request_id": row["request_id"],
        "order_no": row["order_no"], "customer_message": row["customer_message"],
        "details": json.loads(row["details"]),
    }


def _with_deliveries(view: ReadModelView, rows: Sequence[Mapping[str, Any]]
                     ) -> list[dict[str, Any]]:
    if not rows:
        return []
    ids = {f"m{i}": row["id"] for i, row in enumerate(rows)}
    placeholders = ", ".join(f"%({key})s" for key in ids)
    deliveries = view.query(
        "SELECT message_id, subscriber, status, attempts, delivered_at, last_error"  # noqa: S608
        f" FROM ob_deliveries WHERE message_id IN ({placeholders})"
        " ORDER BY message_id, subscriber", ids)
    by_message: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_message.setdefault(d["message_id"], []).append({
            "subscriber": shown_url(d["subscriber"]), "status": d["status"],
            "attempts": int(d["attempts"]), "delivered_at": d["delivered_at"],
            "last_error": (None if d["last_error"] is None
                           else redacted(d["last_error"], d["subscriber"])),
        })
    return [{**body(row), "deliveries": by_message.get(row["id"], [])} for row in rows]


# How a URL that cannot be read is shown (``shown_url``).
INVALID_URL_SHOWN = "(invalid URL)"
# A URI's parts (RFC 3986, appendix B): matches every string, so ``redacted`` never fails.
_URI_PARTS = re.compile(r"(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?",
                        re.DOTALL)
# The shortest part of a URL's credentials or query taken out of a text on its own
# (``redacted``).
MIN_BARE_SECRET_CHARS = 4
# Characters a URL's host and path keep as they are when shown; any other (a space, a control
# character) is percent-encoded, so a shown URL is one printable word on a log line.
_SHOWN_SAFE = "/:@!$&'()*+,;=~%-._[]"


def shown_url(url: str) -> str:
    """A subscriber's URL as shown: without credentials, query or fragment (they may hold
    secrets). Total: a URL that cannot be read (a port out of range, a malformed IPv6 host) is
    shown as ``INVALID_URL_SHOWN``, never an error; so is one with no host (``user:pw@host/``
    written without its scheme reads as scheme ``user`` and a path holding the password)."""
    try:
        parts = urlsplit(url)
        if not parts.netloc:
            return INVALID_URL_SHOWN
        host, port = parts.hostname or "", parts.port
        if ":" in host:  # an IPv6 address keeps its brackets
            host = f"[{host}]"
        netloc = quote(host if port is None else f"{host}:{port}", safe=_SHOWN_SAFE)
        return urlunsplit((parts.scheme, netloc, quote(parts.path, safe=_SHOWN_SAFE), "", ""))
    except ValueError:  # a port out of range, a malformed host, a lone surrogate
        return INVALID_URL_SHOWN


def redacted(text: str, url: str) -> str:
    """``text`` (what a delivery to ``url`` met) without ``url``'s secrets: the URL itself, as a
    client may write it (with or without its credentials), as ``shown_url`` shows it; its
    credentials, query and fragment, whole and each part, as ``***``. For the words of an error
    met on the way to ``url`` (a client may repeat the URL it was given) before they are
    stored, served or logged. Total."""
    found = _URI_PARTS.match(url)
    authority, query, fragment = ("", "", "") if found is None else (
        found.group(2) or "", found.group(4) or "", found.group(5) or "")
    userinfo = authority.rpartition("@")[0]
    wholes = {url, url.replace(f"{userinfo}@", "", 1)} if userinfo else {url}
    parts = {userinfo, *userinfo.split(":", 1), query, fragment}
    for pair in re.split("[&;]", query):
        parts.update((pair, pair.partition("=")[2]))
    # A part of fewer than MIN_BARE_SECRET_CHARS characters is taken out only with its
    # neighbours (``user:pw``, ``key=v``): alone, it would take every "1" out of an address.
    secrets = {part for part in parts
               if len(part) >= MIN_BARE_SECRET_CHARS or any(c in part for c in ":=&;")}
    said = text
    for whole in sorted(_forms(wholes), key=len, reverse=True):
        said = said.replace(whole, shown_url(url))
    for secret in sorted(_forms(secrets), key=len, reverse=True):
        said = said.replace(secret, "***")
    return said


def _forms(texts: set[str]) -> set[str]:
    """Each of ``texts`` as given, decoded, and encoded again as clients encode it."""
    forms: set[str] = set()
    for text in texts:
        plain = unquote(text)
        forms.update((text, plain, unquote_plus(text), quote(plain, safe=""),
                      quote_plus(plain), quote(plain, safe="!$&'()*+,;=:@/?~-._")))
    return {form for form in forms if form}


# How many messages a case or a request shows (the latest ones past it).
MAX_MESSAGES_SHOWN = 200


def messages_of(view: ReadModelView, *, case_id: str | None = None,
                request_id: str | None = None) -> list[dict[str, Any]]:
    """A case's or a request's messages in log order, each with its deliveries."""
    column, value = ("case_id", case_id) if case_id is not None else ("request_id", request_id)
    rows = view.query(
        f"SELECT {_MESSAGE_COLUMNS} FROM ob_messages WHERE {column} = %(v)s"  # noqa: S608
        " ORDER BY position DESC LIMIT %(limit)s", {"v": value, "limit": MAX_MESSAGES_SHOWN})
    return _with_deliveries(view, rows[::-1])


def receivers(view: ReadModelView, configured: Sequence[str],
              usable: Callable[[str], bool] = lambda url: True, *, key: ChainKey,
              unsealed: Callable[[str], None] = lambda url: None) -> list[tuple[str, int]]:
    """Who receives messages now, each with the position after which it does (``(url,
    since)``): the URLs configured (``LEDGER_WEBHOOK_URL``, every message) and the
    subscriptions (``ledger webhooks add``, the messages after it) whose seal ``key`` vouches
    for (each other one told to ``unsealed``) and that are ``usable`` (the deliverer sends to
    no subscription stored before URLs were checked that fails the check:
    ``api.webhooks.url_problem``)."""
    found = {url: 0 for url in configured}
    for row in subscriptions(view):
        if not subscription_sealed(key, row):
            unsealed(row["url"])
        elif usable(row["url"]):
            found.setdefault(row["url"], int(row["since"]))
    return list(found.items())


def _receivers_condition(view: ReadModelView, status: str, receivers: list[tuple[str, int]],
                         params: dict[str, Any]) -> str:
    """The SQL condition of ``waiting`` or ``delivered`` over ``receivers`` (their URLs and
    positions added to ``params``). Waiting is looked for only past each receiver's cursor
    (every message up to it is delivered or parked there), so a page of the few waiting
    among many done does not read the messages done."""
    if not receivers:
        return "1 = 0"  # no one to have a message: none waits, none was had by every one
    cursors = {row["subscriber"]: int(row["upto"])
               for row in view.query("SELECT subscriber, upto FROM ob_cursors")}
    parts, starts = [], []
    for n, (url, since) in enumerate(receivers):
        start = max(since, cursors.get(url, 0)) if status == WAITING else since
        params[f"r{n}"], params[f"from{n}"] = url, start
        starts.append(start)
        had = ("EXISTS (SELECT 1 FROM ob_deliveries d WHERE d.message_id = ob_messages.id"  # noqa: S608
               f" AND d.subscriber = %(r{n})s AND d.status ")
        if status == WAITING:  # past its cursor, and neither delivered nor parked there
            parts.append(f"(position > %(from{n})s AND NOT {had}<> 'waiting'))")
        else:  # before it subscribed, or delivered there
            parts.append(f"(position <= %(from{n})s OR {had}= 'delivered'))")
    params["floor"] = min(starts)
    joined = (" OR " if status == WAITING else " AND ").join(parts)
    return f"position > %(floor)s AND ({joined})"


def outbox(view: ReadModelView, *, status: str | None, limit: int, after: str | None,
           key: ChainKey, configured: Sequence[str] = (),
           usable: Callable[[str], bool] = lambda url: True) -> Page:
    """Messages in log order; ``status``: those a receiver of now has still to have (waiting:
    neither delivered nor parked there, whether or not a delivery was begun), those with a
    delivery parked failed, or those every receiver of now has had (delivered). Receivers are
    ``receivers(view, configured)``; one removed since counts no more."""
    where = ["position > %(after)s"]
    params: dict[str, Any] = {"after": cursor(after), "limit": page_size(limit) + 1,
                              "status": status}
    if status == FAILED:
        # Driven by the deliveries' (status, position) index: a few parked among many done
        # are found without reading the messages done.
        where.append("id IN (SELECT d.message_id FROM ob_deliveries d"
                     " WHERE d.status = %(status)s AND d.position > %(after)s)")
    elif status in (WAITING, DELIVERED):
        where.append(_receivers_condition(
            view, status, receivers(view, configured, usable, key=key), params))
    rows = view.query(
        f"SELECT {_MESSAGE_COLUMNS} FROM ob_messages WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY position LIMIT %(limit)s",
        params,
    )
    page = paged(rows, limit, key="position")
    return Page(_with_deliveries(view, page.items), page.next)
