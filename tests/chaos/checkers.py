"""Checkers over a chaos run's history (``tests.chaos.history``): pure functions of the JSON.

Each checker answers a :class:`Verdict`. The ground truth is the event log the service kept
(``final.events``, read back after the faults); the history says what clients were told. A
write's *final outcome* is its own when known, else that of its last resolution (the same
request retried with the same key after the faults); ``ok`` means it took effect (originally or
at resolution, the same to a customer), ``refused`` that it did not.

- ``faults_injected``: the run did what it claims: every operation made, every fault injected.
- ``unknowns_resolved``: every write whose outcome was unknown has a known final outcome.
- ``acknowledged_writes_not_lost``: a write with final outcome ok is in the log exactly once,
  and in its account's history (read model) exactly once.
- ``no_write_applied_twice``: no tag is in the log twice; a refused write is not in it at all;
  the log holds no write nobody made.
- ``no_negative_available``: no read, no write's answer, no state after any event, no history
  line shows available (or held) below zero.
- ``reads_are_current``: a read reflects every write to its account acknowledged before it
  began, and shows exactly the balances the log has at the position it names.
- ``final_balances``: acknowledged credits minus debits (unknowns as resolved) equal the log's
  balances and every server's answer, account by account.
- ``reconciliation_ok``: every server's reconciliation is ``ok`` and sums to the same totals.
- ``ledger_verify``: ``ledger verify`` exited 0.
- ``no_server_errors``: faults are answered 503 (retry), never 500 or a stack trace.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.history import OK, REFUSED, TAGS, UNKNOWN, WRITES

MAX_PROBLEMS = 20
ACCOUNT_OPENED = "ledger:Account.Opened"
# event type -> (change of posted, change of held), by the event's amount
EFFECTS: dict[str, tuple[int, int]] = {
    "ledger:Account.DepositReceived": (+1, 0),
    "ledger:Account.PurchasePaid": (-1, 0),
    "ledger:Account.PurchaseFailed": (+1, 0),
    "ledger:Account.ReturnRefundCredited": (+1, 0),
    "ledger:Account.FreightCharged": (-1, 0),
    "ledger:Account.BalanceRefundRequested": (0, +1),
    "ledger:Account.BalanceRefundReleased": (0, -1),
    "ledger:Account.BalanceRefundPaidOut": (-1, -1),
}


@dataclass
class Verdict:
    name: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    more: int = 0  # problems beyond MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more += 1

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "checked": self.checked,
                "problems": self.problems, "more_problems": self.more}


# -- what the history and the log say ----------------------------------------------------------


class Run:
    """The history, indexed once for every checker. A *write* is one logical write: every op
    carrying its ``Idempotency-Key`` (the first attempt, a twin sent with it, its resolutions)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.ops: list[dict[str, Any]] = doc["ops"]
        self.final: dict[str, Any] = doc.get("final") or {}
        self.events: list[dict[str, Any]] = self.final.get("events", [])
        self.attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for op in self.ops:
            if op["op"] in WRITES and op["key"] is not None:
                self.attempts[op["key"]].append(op)
        self.writes = [attempts[0] for attempts in self.attempts.values()]
        self.by_tag = self._log_by_tag()
        self.states = self._replay()

    def decided(self, op: dict[str, Any]) -> dict[str, Any]:
        """The attempt that decides a write: its first ok one; else its last resolution; else
        an unknown one if any (the outcome stays unknown); else its first (refused)."""
        attempts = self.attempts[op["key"]]
        for attempt in attempts:
            if attempt["outcome"] == OK:
                return attempt
        resolutions = [a for a in attempts if a["phase"] == "resolve"]
        if resolutions:
            return resolutions[-1]
        return next((a for a in attempts if a["outcome"] == UNKNOWN), attempts[0])

    def final_outcome(self, op: dict[str, Any]) -> str:
        outcome: str = self.decided(op)["outcome"]
        return outcome

    def acknowledged_at(self, op: dict[str, Any]) -> float | None:
        """When a client was first told the write took effect."""
        ends = [a["end"] for a in self.attempts[op["key"]] if a["outcome"] == OK]
        return min(ends) if ends else None

    def _log_by_tag(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        where = {(event_type, name) for event_type, name in TAGS.values()}
        found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for event in self.events:
            for event_type, name in where:
                if event["type"] == event_type and name in event["data"]:
                    found[(event_type, str(event["data"][name]))].append(event)
        return found

    def in_log(self, op: dict[str, Any]) -> list[dict[str, Any]]:
        event_type, _ = TAGS[op["op"]]
        return self.by_tag.get((event_type, op["tag"]), [])

    def _replay(self) -> dict[str, list[tuple[int, int, int]]]:
        """username -> [(position, posted, held) after each of its events], from the log."""
        names: dict[str, str] = {}
        states: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for event in sorted(self.events, key=lambda e: e["position"]):
            if event["type"] == ACCOUNT_OPENED:
                names[event["stream"]] = event["data"]["username"]
            name = names.get(event["stream"])
            if name is None:
                continue
            posted, held = states[name][-1][1:] if states[name] else (0, 0)
            d_posted, d_held = EFFECTS.get(event["type"], (0, 0))
            amount = int(event["data"].get("amount", 0))
            states[name].append((event["position"], posted + d_posted * amount,
                                 held + d_held * amount))
        return states

    def state_at(self, name: str, position: int) -> tuple[int, int] | None:
        states = self.states.get(name, [])
        i = bisect.bisect_right([s[0] for s in states], position)
        return None if i == 0 else states[i - 1][1:]

    def request_amounts(self) -> dict[str, int]:
        """Refund request id -> amount, for requests whose creation finally took effect."""
        amounts = {}
        for op in self.writes:
            decided = self.decided(op)
            if op["op"] == "request_refund" and decided["outcome"] == OK:
                amounts[decided["body"]["id"]] = op["args"]["amount"]
        return amounts


# -- the checkers -------------------------------------------------------------------------------


def faults_injected(run: Run) -> Verdict:
    verdict = Verdict("faults_injected")
    config = run.doc["meta"].get("config", {})
    loads = sum(1 for op in run.ops if op["phase"] == "load" and not op.get("twin"))
    verdict.checked = loads
    if loads < config.get("operations", 0):
        verdict.problem(f"{loads} operations made of {config['operations']} asked")
    done = Counter(f["kind"] for f in run.doc["faults"] if f["ok"])
    for fault in run.doc["faults"]:
        if not fault["ok"]:
            verdict.problem(f"fault {fault['kind']} at {fault['start']} s failed: "
                            f"{fault.get('detail')}")
    for kind, key in (("kill", "kills"), ("pg_restart", "pg_restarts"),
                      ("terminate", "terminations")):
        if done[kind] < config.get(key, 0):
            verdict.problem(f"{done[kind]} {kind} faults injected of {config[key]} asked")
    return verdict


def unknowns_resolved(run: Run) -> Verdict:
    verdict = Verdict("unknowns_resolved")
    for op in run.writes:
        if any(a["outcome"] == UNKNOWN for a in run.attempts[op["key"]]):
            verdict.checked += 1
            if run.final_outcome(op) == UNKNOWN:
                verdict.problem(f"op {op['id']} {op['op']} {op['tag']}: still unknown after "
                                "its resolution")
    return verdict


def idempotent_answers_agree(run: Run) -> Verdict:
    """Every attempt of a write that was answered ok was answered the same (status and body,
    API.md: "the first response again"), and no attempt was refused (4xx) while another took
    effect. A 503 ``busy``/``not_ready`` says "try again", not "no": it may stand beside an ok."""
    verdict = Verdict("idempotent_answers_agree")
    for op in run.writes:
        attempts = run.attempts[op["key"]]
        if len(attempts) < 2:
            continue
        verdict.checked += 1
        oks = [a for a in attempts if a["outcome"] == OK]
        answers = {(a["status"], json.dumps(a["body"], sort_keys=True)) for a in oks}
        if len(answers) > 1:
            verdict.problem(f"{op['op']} {op['tag']}: attempts {[a['id'] for a in oks]} were "
                            f"answered differently: {sorted(answers)[:3]}")
        refused = [a for a in attempts if a["status"] is not None and 400 <= a["status"] < 500]
        if oks and refused:
            no = refused[0]
            verdict.problem(f"{op['op']} {op['tag']} key {op['key']}: op {oks[0]['id']} answered "
                            f"{oks[0]['status']} (server {oks[0]['server']}) but op {no['id']} "
                            f"{no['status']} {no['code']} (server {no['server']}, "
                            f"{'twin' if no.get('twin') else no['phase']})")
    return verdict


def acknowledged_writes_not_lost(run: Run) -> Verdict:
    verdict = Verdict("acknowledged_writes_not_lost")
    history_tags = _history_tags(run)
    for op in run.writes:
        if run.final_outcome(op) != OK:
            continue
        verdict.checked += 1
        decided = run.decided(op)
        how = "resolved ok" if decided["phase"] == "resolve" else "acknowledged"
        found = len(run.in_log(op))
        if found != 1:
            verdict.problem(f"op {op['id']} {op['op']} {op['tag']} ({how}, status "
                            f"{decided['status']}) is in the log {found} times")
        event_type, _ = TAGS[op["op"]]
        if event_type.startswith("ledger:Account.") and op["op"] != "open_account":
            shown = history_tags[op["account"]][(event_type, op["tag"])]
            if shown != 1:
                verdict.problem(f"op {op['id']} {op['op']} {op['tag']} ({how}) is in "
                                f"{op['account']}'s history {shown} times")
    return verdict


def _history_tags(run: Run) -> dict[str, Counter[tuple[str, str]]]:
    found: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    where = set(TAGS.values())  # cancel and reject share one
    for name, items in run.final.get("histories", {}).items():
        for item in items:
            for event_type, field_name in where:
                if item["type"] in (event_type, _short(event_type)) and field_name in item["data"]:
                    found[name][(event_type, str(item["data"][field_name]))] += 1
    return found


def _short(event_type: str) -> str:
    """``ledger:Account.DepositReceived`` -> ``deposit_received`` (the history's spelling)."""
    name = event_type.rsplit(".", 1)[-1]
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def no_write_applied_twice(run: Run) -> Verdict:
    verdict = Verdict("no_write_applied_twice")
    issued = {(TAGS[op["op"]][0], op["tag"]): op for op in run.writes}
    for (event_type, tag), events in run.by_tag.items():
        verdict.checked += 1
        positions = [e["position"] for e in events]
        if len(events) > 1:
            verdict.problem(f"{tag} ({event_type}) is in the log {len(events)} times, at "
                            f"{positions}")
        op = issued.get((event_type, tag))
        if op is None:
            verdict.problem(f"{tag} ({event_type}) at {positions} was written by no request")
        elif run.final_outcome(op) == REFUSED:
            decided = run.decided(op)
            verdict.problem(f"op {op['id']} {op['op']} {tag} was refused (op {decided['id']}, "
                            f"status {decided['status']} {decided['code']}) yet is in the log "
                            f"at {positions}")
    return verdict


def no_negative_available(run: Run) -> Verdict:
    verdict = Verdict("no_negative_available")

    def look(where: str, available: Any, held: Any) -> None:
        verdict.checked += 1
        if not isinstance(available, int) or available < 0 or not isinstance(held, int) \
                or held < 0:
            verdict.problem(f"{where}: available {available}, held {held}")

    for op in run.ops:
        body = op["body"]
        if op["outcome"] != OK or not isinstance(body, dict):
            continue
        if op["op"] == "read":
            look(f"read op {op['id']} of {op['account']}", body.get("available"),
                 body.get("held"))
        elif isinstance(body.get("account"), dict):
            account = body["account"]
            look(f"answer to op {op['id']} {op['op']}", account.get("available"),
                 account.get("held"))
    for name, states in run.states.items():
        for position, posted, held in states:
            look(f"log: {name} after position {position}", posted - held, held)
    for name, items in run.final.get("histories", {}).items():
        for item in items:
            look(f"history of {name} at {item['position']}", item["available_after"], 0)
    return verdict


def reads_are_current(run: Run) -> Verdict:
    verdict = Verdict("reads_are_current")
    acked = _acknowledged_positions(run)
    for op in run.ops:
        if op["op"] != "read" or op["outcome"] != OK or not isinstance(op["body"], dict):
            continue
        verdict.checked += 1
        name, body = op["account"], op["body"]
        ends, best = acked.get(name, ([], []))
        i = bisect.bisect_left(ends, op["start"])
        must_see = best[i - 1] if i else 0
        if body["position"] < must_see:
            verdict.problem(f"read op {op['id']} of {name} (server {op['server']}, started "
                            f"{op['start']} s) stands at position {body['position']}, before "
                            f"{must_see}, a write acknowledged before it began")
        expected = run.state_at(name, body["position"])
        if expected != (body["posted"], body["held"]):
            verdict.problem(f"read op {op['id']} of {name} shows posted {body['posted']} held "
                            f"{body['held']} at position {body['position']}; the log has "
                            f"{expected}")
    return verdict


def _acknowledged_positions(run: Run) -> dict[str, tuple[list[float], list[int]]]:
    """username -> (ends of acknowledged writes, sorted; the highest log position of its
    account's events among the writes acknowledged by then)."""
    per_account: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for op in run.writes:
        acknowledged = run.acknowledged_at(op)
        event_type, _ = TAGS[op["op"]]
        events = run.in_log(op) if event_type.startswith("ledger:Account.") else []
        if acknowledged is not None and len(events) == 1:
            per_account[op["account"]].append((acknowledged, events[0]["position"]))
    found = {}
    for name, pairs in per_account.items():
        pairs.sort()
        ends, best, highest = [], [], 0
        for end, position in pairs:
            highest = max(highest, position)
            ends.append(end)
            best.append(highest)
        found[name] = (ends, best)
    return found


def expected_balances(run: Run) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """username -> (posted, held) from the writes that finally took effect; and what could not
    be accounted for."""
    balances: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    amounts, unaccounted = run.request_amounts(), []
    for op in run.writes:
        if run.final_outcome(op) != OK:
            continue
        args, account = op["args"], balances[op["account"]]
        kind = op["op"]
        if kind in ("deposit", "fail_purchase"):
            account[0] += args["amount"]
        elif kind == "purchase":
            account[0] -= args["amount"]
        elif kind == "request_refund":
            account[1] += args["amount"]
        elif kind in ("pay", "reject", "cancel"):
            amount = amounts.get(op["request_id"])
            if amount is None:
                unaccounted.append(f"op {op['id']} {kind} of unknown request {op['request_id']}")
                continue
            account[1] -= amount
            account[0] -= amount if kind == "pay" else 0
    for entry in run.doc["accounts"]:  # an account no money reached is 0, 0 too
        balances.setdefault(entry["username"], [0, 0])
    return {name: (b[0], b[1]) for name, b in balances.items()}, unaccounted


def final_balances(run: Run) -> Verdict:
    verdict = Verdict("final_balances")
    expected, unaccounted = expected_balances(run)
    for text in unaccounted:
        verdict.problem(text)
    for name, (posted, held) in sorted(expected.items()):
        verdict.checked += 1
        states = run.states.get(name)
        logged = states[-1][1:] if states else None
        if logged != (posted, held):
            verdict.problem(f"{name}: the history adds up to posted {posted} held {held}; the "
                            f"log to {logged}")
        for server, shown in run.final.get("accounts", {}).get(name, {}).items():
            got = (shown.get("posted"), shown.get("held"), shown.get("available"))
            if got != (posted, held, posted - held):
                verdict.problem(f"{name}: server {server} shows posted/held/available {got}; "
                                f"expected {(posted, held, posted - held)}")
    return verdict


def reconciliation_ok(run: Run) -> Verdict:
    verdict = Verdict("reconciliation_ok")
    expected, _ = expected_balances(run)
    total = (sum(p for p, _ in expected.values()), sum(h for _, h in expected.values()))
    answers = run.final.get("reconciliation", {})
    if not answers:
        verdict.problem("no reconciliation was collected")
    for server, answer in answers.items():
        verdict.checked += 1
        if answer.get("ok") is not True:
            failing = [k for k, v in answer.get("invariants", {}).items() if not v]
            verdict.problem(f"server {server}: reconciliation not ok ({failing or answer})")
            continue
        shown = answer["customer_balances"]
        if (shown["posted"], shown["held"]) != total:
            verdict.problem(f"server {server}: customer balances {shown} at position "
                            f"{answer['position']}; the history adds up to posted/held {total}")
    return verdict


def ledger_verify(run: Run) -> Verdict:
    verdict = Verdict("ledger_verify", checked=1)
    result = run.final.get("verify")
    if result is None:
        verdict.problem("ledger verify was not run")
    elif result.get("exit_code") != 0:
        verdict.problem(f"ledger verify exited {result.get('exit_code')}: "
                        f"{str(result.get('output'))[:1500]}")
    return verdict


def no_server_errors(run: Run) -> Verdict:
    verdict = Verdict("no_server_errors")
    for op in run.ops:
        if op["status"] is None:
            continue
        verdict.checked += 1
        text = str(op["body"])
        if "Traceback" in text:
            verdict.problem(f"op {op['id']} {op['op']}: a stack trace in the answer")
        if op["status"] >= 500 and op["status"] != 503:
            verdict.problem(f"op {op['id']} {op['op']} on server {op['server']} at "
                            f"{op['start']} s: {op['status']} {text[:300]}")
    return verdict


CHECKERS: tuple[Callable[[Run], Verdict], ...] = (
    faults_injected,
    unknowns_resolved,
    idempotent_answers_agree,
    acknowledged_writes_not_lost,
    no_write_applied_twice,
    no_negative_available,
    reads_are_current,
    final_balances,
    reconciliation_ok,
    ledger_verify,
    no_server_errors,
)


def check(doc: dict[str, Any]) -> list[Verdict]:
    run = Run(doc)
    return [checker(run) for checker in CHECKERS]


# -- figures ------------------------------------------------------------------------------------


def figures(doc: dict[str, Any]) -> dict[str, Any]:
    """What a run did, in numbers: the closing note's figures."""
    run = Run(doc)
    load = [op for op in run.ops if op["phase"] == "load" and not op.get("twin")]
    outcomes = Counter(op["outcome"] for op in load)
    unknown_writes = [op for op in run.writes if op["outcome"] == UNKNOWN]
    resolved = Counter(_resolution_kind(run, op) for op in unknown_writes)
    statuses = Counter(str(op["status"] or op["error"] or "none").split(":")[0] for op in load)
    faults = Counter(f["kind"] for f in doc["faults"] if f["ok"])
    return {
        "operations": len(load),
        "writes": sum(1 for op in load if op["op"] in WRITES),
        "reads": sum(1 for op in load if op["op"] not in WRITES),
        "acknowledged": outcomes[OK],
        "refused": outcomes[REFUSED],
        "unknown": outcomes[UNKNOWN],
        "unknown_writes": len(unknown_writes),
        "twin_requests": sum(1 for op in run.ops if op.get("twin")),
        "impatient_requests": sum(1 for op in load if op.get("timeout_s") is not None),
        "unknown_writes_resolved": dict(resolved),
        "faults_injected": dict(faults),
        "faults_total": sum(faults.values()),
        "statuses": dict(statuses.most_common()),
        "by_op": dict(Counter(op["op"] for op in load).most_common()),
        "events_in_log": len(run.events),
    }


def _resolution_kind(run: Run, op: dict[str, Any]) -> str:
    decided = run.decided(op)
    if decided["phase"] != "resolve" and decided["outcome"] == OK:
        return "its_twin_answered_ok"
    if decided["outcome"] == OK:
        return "took_effect_originally" if decided["replayed"] else "performed_at_resolution"
    return "refused_at_resolution" if decided["outcome"] == REFUSED else "unresolved"


def verdict_lines(verdicts: Iterable[Verdict]) -> list[str]:
    lines = []
    for v in verdicts:
        lines.append(f"  {'ok  ' if v.ok else 'FAIL'} {v.name:<30} {v.checked:>8} checked")
        for text in v.problems:
            lines.append(f"         - {text}")
        if v.more:
            lines.append(f"         … and {v.more} more")
    return lines
