"""What each field of the API means, and an example of it, for the OpenAPI document.

The models (``api.models``) carry a ``Field(description=...)`` where a field needs a word of
its own; every other field is described here by its name (the same name means the same thing
across the API: ``posted`` is always the money posted to an account), or by ``Model.field``
where one model uses a name differently. ``api.openapi`` fills the document from this table,
and tests/contract/test_document.py holds every field to having a description and every body
and answer to having an example that its model accepts.
"""

from __future__ import annotations

from typing import Any

MONEY = "minor units of the account's currency (cents; yen have none below the yen)"

FIELD_DESCRIPTIONS: dict[str, str] = {
    # accounts and money
    "username": "The customer's user name (the account's key): lower case, as the shop knows "
                "the customer.",
    "currency": "The ISO 4217 code of the money's currency, e.g. USD, EUR, JPY.",
    "amount": f"The amount, in {MONEY}.",
    "posted": f"Money posted to the account: deposits, less purchases, plus credits back and "
              f"refunds, less payouts; in {MONEY}.",
    "held": f"Money set aside for refund requests not yet paid, rejected or cancelled; in "
            f"{MONEY}.",
    "available": f"What the customer can spend or ask back: posted less held; in {MONEY}.",
    "refundable": f"What a balance refund request may ask for now: the available money "
                  f"(posted less held); in {MONEY}.",
    "available_after": f"The account's available money after this event, in {MONEY}.",
    "posted_after": f"The account's posted money after this event, in {MONEY}.",
    "opened_at": "When the account (or case) was opened (RFC 3339, UTC).",
    "version": "The aggregate's version after the write: it counts the account's events.",
    "position": "The event's position in the global log (1 is the first event).",
    "log_position": "The position of the last event of the log.",
    "account": "The chart account, e.g. customer:alice or clearing:deposits.",
    "order_no": "The shop's order number (the purchase's natural key).",
    "paid": f"What the order cost, paid from the balance; in {MONEY}.",
    "credited_back": f"What was credited back after the purchase failed; in {MONEY}.",
    "deposited": f"What was deposited, in {MONEY}.",
    "first_deposit_at": "When the first of these deposits was recorded.",
    "last_event_at": "When the account last changed.",
    "type": "What kind of entry it is.",
    "event_id": "The id of the event the entry comes from.",
    "at": "When it was recorded (RFC 3339, UTC).",
    "actor": "Who did it: the role and the first 8 hex digits of the sha256 of the token "
             "(never the token).",
    "data": "The step's own fields.",
    # refund requests
    "id": "The id the server gave it.",
    "status": "Where it stands.",
    "reason": "Why, in the caller's words.",
    "requested_at": "When the refund was requested.",
    "updated_at": "When it last changed.",
    "steps": "What happened to it, oldest first.",
    # return cases
    "kind": "What went wrong: delivery_error, defective, damaged or quality_problem.",
    "state": "The case's state in its lifecycle.",
    "opened_on": "The shop's date the case was opened.",
    "shipped_on": "The date the supplier shipped the order.",
    "return_by": "The last day the goods may be posted back (set when the supplier accepts).",
    "postmark_date": "The date on the return parcel's postmark.",
    "outcome": "How the case was resolved: refund, exchange or repair.",
    "refund_amount": f"What the resolution refunded to the balance, in {MONEY}.",
    "freight_amount": f"The freight charged to the customer at resolution, in {MONEY}.",
    "guarantee_until": "The end of the quality guarantee (quality_problem cases).",
    "days_open": "Days since the case was opened, on the shop's calendar.",
    "days_since_shipping": "Days since the order was shipped.",
    "overdue_reasons": "The deadlines the case is past (empty: none).",
    "thirty_day_guarantee": "Whether the 30-day full-return guarantee still holds, and why.",
    "holds": "Whether it holds.",
    "days_used": "Days of the guarantee used so far.",
    "last_postmark": "The last postmark date the guarantee accepts.",
    "items": "The entries of this page (or the goods of the case).",
    "sku": "The shop's stock-keeping unit of the item.",
    "description": "What the item is, in words.",
    "quantity": "How many of the item.",
    "conditions": "What the customer says of the goods' condition (the policy needs them).",
    "replaced_or_modified": "The goods were replaced or modified by the customer.",
    "parts_missing": "Parts of the goods are missing.",
    "has_quality_assurance": "The goods came with the supplier's quality assurance.",
    "goods": "The goods themselves came back.",
    "original_packaging": "They came back in their original packaging.",
    "return_address": "Where the customer sends the goods.",
    "text": "The note, in words (at most 2,000 characters).",
    "next": "The cursor of the next page: give it as ?after=; null at the last page.",
    "limit": "How many items a page holds at most (1-1000).",
    # finance and audit
    "count": "How many.",
    "deposits": f"Deposits, in {MONEY}.",
    "purchases": f"Purchases, in {MONEY}.",
    "failure_credits": f"Credits back of failed purchases, in {MONEY}.",
    "return_refunds": f"Refunds from resolved return cases, in {MONEY}.",
    "freight": f"Freight charged at case resolutions, in {MONEY}.",
    "payouts": f"Balance refunds paid out, in {MONEY}.",
    "totals": "The money events' totals, by kind.",
    "trial_balance": "Every chart account's balance; they sum to zero.",
    "ok": "True only when every check holds.",
    "events_checked": "How many events were checked.",
    "first_bad_position": "The first log position where a check fails (null: none).",
    "problems": "What failed, in words.",
    # problems
    "title": "The status's phrase.",
    "detail": "What went wrong, in words for a person.",
    "code": "The problem's code: what a program checks.",
    "errors": "Each field that is wrong, and why.",
    "field": "The field (or parameter or header) that is wrong.",
    "message": "What is wrong with it, in words.",
    "request_id": "The request's id, to find it in the logs.",
}

MODEL_FIELD_DESCRIPTIONS: dict[str, str] = {
    "AccountWritten.account": "The account as the write left it.",
    "AccountWritten.position": "The log position of the write's event.",
    "Problem.type": "A URI naming the problem: urn:ledger:problem:<code>.",
    "Problem.status": "The HTTP status.",
    "Problem.reason": "The policy's reason for a refused case.",
    "Health.status": "ok: the process answers.",
    "Ready.status": "ready: the database answers and the read models are current enough.",
    "HistoryItem.type": "The money event: deposit_received, purchase_paid, ...",
    "JournalEntry.type": "The money event the postings come from.",
    "OutboxMessage.case_id": "The return case the message is about (null when none).",
    "OutboxMessage.request_id": "The refund request the message is about (null when none).",
    "WebhookMessage.case_id": "The return case the message is about (null when none).",
    "WebhookMessage.request_id": "The refund request the message is about (null when none).",
    "CaseNoteAdd.text": "The note, in words (at most 2,000 characters; a case takes 200).",
}

# Example values by field name, used to make an example of every body and answer.
EXAMPLE_VALUES: dict[str, Any] = {
    "username": "alice",
    "currency": "USD",
    "amount": 2500,
    "posted": 12000,
    "held": 2500,
    "available": 9500,
    "refundable": 9500,
    "available_after": 9500,
    "posted_after": 12000,
    "version": 3,
    "position": 42,
    "log_position": 42,
    "order_no": "ORD-1001",
    "reference": "PAY-7731",
    "payout_reference": "PAYOUT-2026-11-26-1",
    "account": "customer:alice",
    "reason": "the customer asked for it back",
    "note": "checked with the supplier",
    "text": "customer called: waiting for the courier",
    "tracking": "TRK-55120",
    "sku": "SKU-7",
    "description": "an electric kettle",
    "quantity": 1,
    "return_address": "Supplier Ltd, Dock 4",
    "instructions": "in the original box",
    "kind": "defective",
    "outcome": "refund",
    "freight_amount": 0,
    "refund_amount": 3000,
    "title": "Conflict",
    "detail": "an account for 'alice' already exists",
    "code": "account_exists",
    "type": "urn:ledger:problem:account_exists",
    "field": "amount",
    "message": "a whole number of minor units, at least 1",
    "request_id": "5f0c2a7e9b1d4c3a8e6f",
    "actor": "system:5d41402a",
    "next": None,
    "goods_photos": ["photo://goods-1"],
    "package_photos": ["photo://box-1"],
    "ok": True,
    # The words of a return_case.opened message (the first of the type's enum) for ORD-1001.
    "customer_message": "We have opened a defective case for your order ORD-1001. We will keep "
                        "you posted on its progress.",
}
