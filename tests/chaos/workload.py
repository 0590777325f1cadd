"""The load: many concurrent clients, a hot account taking half the traffic, a mix of every
money write and balance reads.

The planner keeps what the clients have been told (acknowledged orders, deposit references, open
refund requests) only to make sensible requests: the checkers never trust it, they judge from
the history and the log. Every write carries an ``Idempotency-Key`` and a tag unique to it
(``tests.chaos.history.TAGS``), so a write can be found in the log and retried safely.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.client import Request
from tests.chaos.history import OK, UNKNOWN

# How often each kind of request is drawn (a refund step is drawn only when one can be taken).
MIX: dict[str, int] = {
    "read": 30, "deposit": 24, "purchase": 20, "fail_purchase": 6, "request_refund": 8,
    "refund_step": 12,
}
CURRENCY = "USD"


@dataclass
class Order:
    amount: int
    credited: int = 0  # acknowledged and pending failure credits


@dataclass
class Refund:
    id: str
    account: str
    amount: int
    status: str = "requested"
    busy: bool = False


@dataclass
class AccountState:
    orders: dict[str, Order] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)


class Planner:
    def __init__(
        self, run_id: str, accounts: list[str], *, hot_share: float, rng: random.Random
    ) -> None:
        assert accounts and 0 <= hot_share <= 1
        self.run_id = run_id
        self.hot, self.others = accounts[0], accounts[1:] or accounts[:1]
        self.hot_share = hot_share
        self.rng = rng
        self.state = {name: AccountState() for name in accounts}
        self.refunds: dict[str, Refund] = {}
        self._seq = 0
        self._kinds = list(MIX)
        self._weights = list(MIX.values())

    def _next_tag(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self.run_id}-{self._seq}"

    def account(self) -> str:
        return self.hot if self.rng.random() < self.hot_share else self.rng.choice(self.others)

    # -- drawing requests -----------------------------------------------------------------------

    def next(self) -> Request:
        kind = self.rng.choices(self._kinds, self._weights)[0]
        name = self.account()
        planned = getattr(self, f"_plan_{kind}")(name)
        return planned if planned is not None else self._plan_deposit(name)

    def _write(self, op: str, path: str, role: str, name: str, args: dict[str, Any],
               tag: str, request_id: str | None = None) -> Request:
        return Request(op=op, method="POST", path=path, role=role, account=name, args=args,
                       key=f"key-{tag}", tag=tag, request_id=request_id)

    def _plan_read(self, name: str) -> Request:
        return Request(op="read", method="GET", path=f"/v1/accounts/{name}/balance",
                       role="system", account=name)

    def _plan_deposit(self, name: str) -> Request:
        tag = self._next_tag("dep")
        args = {"amount": self.rng.randint(500, 5000), "reference": tag}
        return self._write("deposit", f"/v1/accounts/{name}/deposits", "system", name, args, tag)

    def _plan_purchase(self, name: str) -> Request:
        tag = self._next_tag("ord")
        args = {"order_no": tag, "amount": self.rng.randint(100, 6000)}
        return self._write("purchase", f"/v1/accounts/{name}/purchases", "system", name, args,
                           tag)

    def _plan_fail_purchase(self, name: str) -> Request | None:
        open_orders = [(no, o) for no, o in self.state[name].orders.items()
                       if o.amount > o.credited]
        if not open_orders:
            return None
        order_no, order = self.rng.choice(open_orders)
        left = order.amount - order.credited
        amount = left if self.rng.random() < 0.5 else self.rng.randint(1, left)
        order.credited += amount  # taken back if the failure is refused
        tag = self._next_tag("fail")
        return self._write("fail_purchase", f"/v1/accounts/{name}/purchases/{order_no}/failure",
                           "system", name, {"amount": amount, "reason": tag}, tag)

    def _plan_request_refund(self, name: str) -> Request | None:
        state = self.state[name]
        choices = list(state.orders) + state.references
        if not choices:
            return None
        tag = self._next_tag("rr")
        args = {"order_no": self.rng.choice(choices), "amount": self.rng.randint(1, 300),
                "reason": tag}
        return self._write("request_refund", f"/v1/accounts/{name}/refund-requests", "cs", name,
                           args, tag)

    def _plan_refund_step(self, name: str) -> Request | None:
        idle = [r for r in self.refunds.values() if not r.busy]
        if not idle:
            return None
        refund = self.rng.choice(idle)
        refund.busy = True
        roll = self.rng.random()
        path = f"/v1/refund-requests/{refund.id}"
        if refund.status == "requested" and roll < 0.7:
            tag = self._next_tag("approve")
            return self._write("approve", f"{path}/approve", "finance", refund.account,
                               {"note": tag}, tag, refund.id)
        if refund.status == "approved" and roll < 0.85:
            tag = self._next_tag("payout")
            # Four eyes: not the finance token that approved, a named finance person.
            return self._write("pay", f"{path}/pay", "payer", refund.account,
                               {"payout_reference": tag}, tag, refund.id)
        step, role = ("cancel", "cs") if roll < 0.92 else ("reject", "finance")
        tag = self._next_tag(step)
        return self._write(step, f"{path}/{step}", role, refund.account, {"reason": tag}, tag,
                           refund.id)

    # -- hearing the answers --------------------------------------------------------------------

    def observe(self, request: Request, op: dict[str, Any]) -> None:
        outcome, body = op["outcome"], op["body"]
        state = self.state.get(request.account)
        if request.op == "deposit" and outcome == OK and state is not None:
            state.references.append(request.tag or "")
        elif request.op == "purchase" and outcome == OK and state is not None:
            assert request.args is not None
            state.orders[request.args["order_no"]] = Order(request.args["amount"])
        elif request.op == "fail_purchase" and outcome != OK and outcome != UNKNOWN:
            self._give_back_credit(request)
        elif request.op == "request_refund" and outcome == OK and isinstance(body, dict):
            self.refunds[body["id"]] = Refund(body["id"], request.account, body["amount"])
        elif request.request_id is not None and request.request_id in self.refunds:
            self._observe_step(request, outcome)

    def _give_back_credit(self, request: Request) -> None:
        assert request.args is not None
        order_no = request.path.rsplit("/", 2)[-2]
        order = self.state[request.account].orders.get(order_no)
        if order is not None:
            order.credited -= request.args["amount"]

    def _observe_step(self, request: Request, outcome: str) -> None:
        assert request.request_id is not None
        refund = self.refunds[request.request_id]
        refund.busy = False
        if outcome == UNKNOWN:  # its state is not known until the unknowns are resolved
            del self.refunds[refund.id]
        elif outcome == OK:
            if request.op == "approve":
                refund.status = "approved"
            else:
                del self.refunds[refund.id]
