"""Every route the service serves, with the roles that may call it (API.md, "Roles") and the
lane its calls wait in for a worker (``api.limits``): every POST is in the write lane; GETs in
the read lane, but for the heavy ones (``heavy=True``: the event log, the journal,
reconciliation, verify, the digest, the export), so a report never holds up a deposit or a
balance. (Verify runs one at a time on a thread of its own, outside the executor's lanes.)

system: open accounts, deposits, purchases, purchase failures; read accounts.
cs: open accounts, refund requests (create, cancel), return cases (all steps), purchase
    failures; read all but the finance and audit endpoints.
finance: approve, reject and pay refund requests; reconciliation; read all but verify and
    the chain's digest.
auditor: read everything, audit and export; write nothing.

Beyond API.md: ``POST /v1/return-cases/{id}/expire`` (the lifecycle's "expired" needs a step
to reach it) and ``GET /v1/audit/digest`` (the chain's head, to keep outside the database);
issue 12's ``GET /v1/accounts`` (the customer list: cs, finance, auditor),
``POST /v1/return-cases/{id}/evidence`` (photos after opening) and
``GET /v1/reconciliation/unmatched`` (money that stands out: finance, auditor).
Issue 11: ``GET /v1/me`` (who the bearer is: any role) and the console's files at ``/console/``
(no token: the page asks for one).
"""

from __future__ import annotations

from aiohttp.typedefs import Handler

from api import auditkit, cases, docs, finance, handlers, models, operations, people, webhooks
from api.auth import ANY_ROLE, AUDITOR, CS, FINANCE, SYSTEM
from api.routing import Link, Media, Route

READ_ACCOUNTS = ANY_ROLE
READ_REFUNDS = frozenset({CS, FINANCE, AUDITOR})
OPEN_ACCOUNTS = frozenset({SYSTEM, CS})
POST_MONEY = frozenset({SYSTEM})
FAIL_PURCHASES = frozenset({SYSTEM, CS})
REQUEST_REFUNDS = frozenset({CS})
DECIDE_REFUNDS = frozenset({FINANCE})
READ_CASES = frozenset({CS, FINANCE, AUDITOR})
MOVE_CASES = frozenset({CS})
READ_BOOKS = frozenset({FINANCE, AUDITOR})  # the log, the journal, reconciliation, export
AUDIT = frozenset({AUDITOR})

ACCOUNTS = "Accounts and money"
REFUNDS = "Balance refunds"
CASES = "Return and exchange cases"
BOOKS = "Finance and audit"
OPERATIONS = "Operations"
U = "/v1/accounts/{username}"
R = "/v1/refund-requests/{id}"
C = "/v1/return-cases/{id}"


# Links: what a successful answer lets a client (or schemathesis' stateful phase) do next.
NEW_ACCOUNT = {"username": "$response.body#/username"}
SAME_ACCOUNT = {"username": "$request.path.username"}
NEW_ID = {"id": "$response.body#/id"}
SAME_ID = {"id": "$request.path.id"}
ORDER = "$request.body#/order_no"


def _next(names: str, parameters: dict[str, str], body: dict[str, str] | None = None
          ) -> tuple[Link, ...]:
    return tuple(Link(name, parameters, body) for name in names.split())


def _case_step(step: str, handler: Handler, summary: str, body: type[models.Body],
               then: str = "") -> Route:
    return Route("POST", f"{C}/{step}", handler, MOVE_CASES, summary, CASES,
                 {200: models.CaseWritten}, body=body, problems=(404, 409),
                 links=_next(f"get_case {then}", SAME_ID))


ROUTES: tuple[Route, ...] = (
    # -- accounts and money
    Route("POST", "/v1/accounts", handlers.open_account, OPEN_ACCOUNTS,
          "Open an account", ACCOUNTS, {201: models.OpenedAccount},
          body=models.OpenAccount, problems=(409,),
          links=_next("get_account get_balance get_history get_orders get_refundable deposit "
                      "purchase", NEW_ACCOUNT)),
    Route("GET", "/v1/accounts", handlers.list_accounts, READ_REFUNDS,
          "Customers' accounts by user name: a name prefix, a currency, a balance", ACCOUNTS,
          {200: models.AccountPage}, query=models.AccountListQuery),
    Route("GET", U, handlers.get_account, READ_ACCOUNTS,
          "An account's balances", ACCOUNTS, {200: models.Account}, query=models.NoQuery,
          problems=(404,)),
    Route("GET", f"{U}/balance", handlers.get_balance, READ_ACCOUNTS,
          "Balances now, as of a time, or at a log position", ACCOUNTS,
          {200: models.Balance}, query=models.BalanceQuery, problems=(404,)),
    Route("GET", f"{U}/history", handlers.get_history, READ_ACCOUNTS,
          "The account's money events, oldest first", ACCOUNTS,
          {200: models.HistoryPage}, query=models.PageQuery, problems=(404,)),
    Route("POST", f"{U}/deposits", handlers.deposit, POST_MONEY,
          "Credit a deposit (the payment reference is its natural key)", ACCOUNTS,
          {201: models.AccountWritten, 200: models.AccountWritten},
          body=models.Deposit, problems=(404, 409),
          links=_next("purchase get_account get_history", SAME_ACCOUNT)),
    Route("POST", f"{U}/purchases", handlers.purchase, POST_MONEY,
          "Pay for an order from the balance (the order number is its natural key)", ACCOUNTS,
          {201: models.AccountWritten, 200: models.AccountWritten},
          body=models.Purchase, problems=(404, 409),
          links=(
              *_next("get_orders get_refundable", SAME_ACCOUNT),
              Link("fail_purchase", {**SAME_ACCOUNT, "order_no": ORDER}),
              Link("request_refund", SAME_ACCOUNT, {"order_no": ORDER}),
              Link("open_case", {}, {"username": "$request.path.username", "order_no": ORDER}),
          )),
    Route("POST", f"{U}/purchases/{{order_no}}/failure", handlers.fail_purchase,
          FAIL_PURCHASES, "Credit back a purchase that failed after payment", ACCOUNTS,
          {201: models.AccountWritten}, body=models.PurchaseFailure, problems=(404,),
          links=_next("get_orders get_history", SAME_ACCOUNT)),
    Route("GET", f"{U}/orders", handlers.get_orders, READ_ACCOUNTS,
          "The account's orders: paid, credited back, refundable", ACCOUNTS,
          {200: models.OrderPage}, query=models.PageQuery, problems=(404,)),
    Route("GET", f"{U}/refundable", handlers.get_refundable, READ_ACCOUNTS,
          "What the customer can get back, with a page of orders", ACCOUNTS,
          {200: models.Refundable}, query=models.PageQuery, problems=(404,)),
    # -- balance refunds
    Route("POST", f"{U}/refund-requests", handlers.request_refund, REQUEST_REFUNDS,
          "Request a balance refund (holds the amount)", REFUNDS,
          {201: models.RefundRequestWritten}, body=models.RefundRequestCreate,
          problems=(404, 409),
          links=_next("get_refund_request approve_refund reject_refund cancel_refund",
                      NEW_ID)),
    Route("GET", "/v1/refund-requests", handlers.list_refund_requests, READ_REFUNDS,
          "Refund requests, by status and user name", REFUNDS,
          {200: models.RefundRequestPage}, query=models.RefundRequestQuery),
    Route("GET", R, handlers.get_refund_request, READ_REFUNDS,
          "A refund request with its steps", REFUNDS, {200: models.RefundRequestDetail},
          query=models.NoQuery, problems=(404,)),
    Route("POST", f"{R}/approve", handlers.approve_refund, DECIDE_REFUNDS,
          "Approve a requested refund; above the second-approval threshold the second approval "
          "must come from another person (409 four_eyes), and whoever approves may not pay it",
          REFUNDS, {200: models.RefundRequestWritten},
          body=models.Approve, problems=(404, 409),
          links=_next("get_refund_request pay_refund", SAME_ID)),
    Route("POST", f"{R}/reject", handlers.reject_refund, DECIDE_REFUNDS,
          "Reject a refund request (releases the hold)", REFUNDS,
          {200: models.RefundRequestWritten}, body=models.Reject, problems=(404, 409),
          links=_next("get_refund_request", SAME_ID)),
    Route("POST", f"{R}/cancel", handlers.cancel_refund, REQUEST_REFUNDS,
          "Cancel a refund request for the customer (releases the hold)", REFUNDS,
          {200: models.RefundRequestWritten}, body=models.Cancel, problems=(404, 409),
          links=_next("get_refund_request", SAME_ID)),
    Route("POST", f"{R}/pay", handlers.pay_refund, DECIDE_REFUNDS,
          "Record the payout of an approved refund; not by whoever approved it (409 four_eyes)",
          REFUNDS,
          {200: models.RefundRequestWritten}, body=models.Pay, problems=(404, 409),
          links=_next("get_refund_request", SAME_ID)),
    # -- return and exchange cases
    Route("POST", "/v1/return-cases", cases.open_case, MOVE_CASES,
          "Open a case for a customer's order, unless the policy refuses it (422 with reason "
          "and case_id: the refused case is recorded)", CASES,
          {201: models.CaseWritten}, body=models.CaseOpen, problems=(404,),
          links=_next("get_case start_supplier_review reject_case cancel_case add_case_note",
                      NEW_ID)),
    Route("GET", "/v1/return-cases", cases.list_cases, READ_CASES,
          "Cases, by state (refused too), user name and overdue; counts per state", CASES,
          {200: models.CasePage},
          query=models.CaseQuery),
    Route("GET", C, cases.get_case, READ_CASES,
          "A case: its facts, days, deadlines, overdue flags and steps", CASES,
          {200: models.CaseDetail}, query=models.CaseViewQuery, problems=(404,)),
    _case_step("supplier-review", cases.start_supplier_review,
               "Ask the supplier (opened → supplier_review)", models.StepNote,
               then="accept_case reject_case cancel_case add_case_note"),
    _case_step("accept", cases.accept_case,
               "Record the supplier's acceptance and return_by (→ accepted)", models.Accept,
               then="ship_back expire_case cancel_case"),
    _case_step("reject", cases.reject_case, "The supplier refuses (→ rejected)", models.Reject),
    _case_step("ship-back", cases.ship_back,
               "The customer sent the goods back (accepted → goods_in_transit)",
               models.ShipBack,
               then="receive_return"),
    _case_step("receive", cases.receive_return,
               "The goods came back (→ received, or late when posted after return_by)",
               models.Receive,
               then="forward_case resolve_case"),
    _case_step("expire", cases.expire_case,
               "No goods by return_by (accepted → expired); beyond API.md", models.StepNote),
    _case_step("forward", cases.forward_case,
               "Forward the goods to the supplier (received → with_supplier)", models.StepNote,
               then="resolve_case add_case_note"),
    Route("POST", f"{C}/resolve", cases.resolve_case, MOVE_CASES,
          "Resolve: a refund credits the account in the same transaction; freight is charged",
          CASES, {200: models.CaseWritten}, body=models.Resolve, problems=(404, 409),
          links=_next("get_case close_case add_case_note", SAME_ID)),
    _case_step("close", cases.close_case, "Close a resolved case (→ closed)", models.StepNote),
    _case_step("cancel", cases.cancel_case,
               "Cancel an open case for the customer (→ cancelled)", models.Cancel),
    Route("POST", f"{C}/evidence", cases.add_case_evidence, MOVE_CASES,
          "Add photos to an open case after it was opened", CASES,
          {201: models.CaseWritten}, body=models.EvidenceAdd, problems=(404, 409),
          links=_next("get_case", SAME_ID)),
    Route("POST", f"{C}/notes", cases.add_case_note, MOVE_CASES,
          "Add a progress note (in any state: an ended case's too)", CASES,
          {201: models.CaseWritten}, body=models.CaseNoteAdd, problems=(404, 409),
          links=_next("get_case", SAME_ID)),
    # -- finance and audit
    Route("GET", "/v1/events", finance.list_events, READ_BOOKS,
          "The global event log, in order; by stream, type and time", BOOKS,
          {200: models.EventPage}, query=models.EventQuery, heavy=True),
    Route("GET", "/v1/journal", finance.get_journal, READ_BOOKS,
          "Balanced postings per money event, in log order", BOOKS,
          {200: models.JournalPage}, query=models.JournalQuery, heavy=True),
    Route("GET", "/v1/reconciliation", finance.get_reconciliation, READ_BOOKS,
          "Totals, customer balances, trial balance and invariants at a log position", BOOKS,
          {200: models.ReconciliationAnswer}, query=models.ReconciliationQuery, heavy=True),
    Route("GET", "/v1/reconciliation/unmatched", finance.get_unmatched, READ_BOOKS,
          "Unmatched money: deposits never spent, idle balances, refunds waiting, payouts "
          "approved but not paid", BOOKS, {200: models.Unmatched},
          query=models.UnmatchedQuery, heavy=True),
    Route("GET", "/v1/audit/verify", finance.audit_verify, AUDIT,
          "Re-derive history and check it: hash chain, invariants, read models", BOOKS,
          {200: models.VerifyReport}, query=models.NoQuery, problems=(503,), heavy=True),
    Route("GET", "/v1/audit/digest", finance.audit_digest, AUDIT,
          "The hash chain's head, to keep outside the database; beyond API.md", BOOKS,
          {200: models.ChainDigest}, query=models.NoQuery, heavy=True),
    Route("GET", "/v1/export/beancount", finance.export_beancount, READ_BOOKS,
          "The journal as a Beancount file", BOOKS,
          {200: Media("text/plain")}, query=models.ExportQuery, heavy=True),
    # -- the auditor's kit (issue 10)
    Route("GET", "/v1/audit/checkpoint", auditkit.audit_checkpoint, READ_BOOKS,
          "The latest signed checkpoint of the log's Merkle tree (a C2SP signed note)", BOOKS,
          {200: Media("text/plain")}, query=models.NoQuery, problems=(404,)),
    Route("GET", "/v1/audit/proof", auditkit.audit_proof, READ_BOOKS,
          "RFC 9162 inclusion proof of the event at a log position", BOOKS,
          {200: models.InclusionProof}, query=models.ProofQuery, problems=(404,)),
    Route("GET", "/v1/audit/consistency", auditkit.audit_consistency, READ_BOOKS,
          "RFC 9162 consistency proof between two tree sizes", BOOKS,
          {200: models.ConsistencyProof}, query=models.ConsistencyQuery, problems=(404,)),
    Route("GET", "/v1/export/csv", auditkit.export_csv, READ_BOOKS,
          "The journal as a general-ledger CSV: one row per posting", BOOKS,
          {200: Media("text/csv")}, query=models.ExportQuery, heavy=True),
    Route("GET", "/v1/export/hledger", auditkit.export_hledger, READ_BOOKS,
          "The journal as an hledger journal, with each day's balance assertions", BOOKS,
          {200: Media("text/plain")}, query=models.ExportQuery, heavy=True),
    # -- operations
    Route("GET", "/health", operations.health, None,
          "The process answers (no token needed)", OPERATIONS, {200: models.Health}),
    Route("GET", "/ready", operations.ready, None,
          "The database answers; how far the read models lag (no token needed)", OPERATIONS,
          {200: models.Ready}, problems=(503,)),
    Route("GET", "/metrics", operations.metrics, None,
          "Prometheus metrics (no token needed)", OPERATIONS, {200: Media("text/plain")}),
    Route("GET", "/openapi.json", operations.openapi_json, ANY_ROLE,
          "This document", OPERATIONS,
          {200: Media("application/json", {"type": "object"})}),
    Route("GET", "/docs", docs.docs_page, ANY_ROLE,
          "Swagger UI, served offline", OPERATIONS, {200: Media("text/html")}),
    Route("GET", "/docs/static/{name}", docs.docs_asset, ANY_ROLE,
          "An asset of the Swagger UI page", OPERATIONS,
          {200: Media("text/css", more_types=("text/javascript", "image/png"))},
          problems=(404,)),
    # -- people (issue 11): who is calling, and the console (its page asks for a token)
    Route("GET", "/v1/me", people.get_me, ANY_ROLE,
          "Who the bearer is: their person and the role they act in", OPERATIONS,
          {200: models.Me}, query=models.NoQuery),
    Route("GET", "/console/", people.console_page, None,
          "The console: the day's work in a browser (no token needed to load it)", OPERATIONS,
          {200: Media("text/html")}),
    Route("GET", "/console/{name}", people.console_asset, None,
          "A file of the console", OPERATIONS,
          {200: Media("text/css", more_types=("text/javascript", "text/html"))},
          problems=(404,)),
    # -- webhooks (issue 14)
    Route("GET", "/v1/outbox", webhooks.list_outbox, READ_BOOKS,
          "Messages to customers and their deliveries: waiting, delivered, failed", BOOKS,
          {200: models.OutboxPage}, query=models.OutboxQuery),
)
