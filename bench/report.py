"""The one table ``make bench`` ends with: each measure beside its baseline, the ratio, and
the goal its issue (9 or 14) sets for it (markdown, so it pastes into an issue as it is)."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

from bench.probes import CatchUp, CpuPerAnswer
from bench.rebuild import RebuildFigures
from bench.wrk import Median


@dataclass
class HttpFigures:
    """What the HTTP part measured; keys of the dicts are "ledger" and "bare"."""

    connections: int
    rounds: int
    writes: dict[str, Median] = field(default_factory=dict)
    reads: dict[str, Median] = field(default_factory=dict)
    commits_per_write: dict[str, list[float]] = field(default_factory=dict)
    commits_per_read: dict[str, list[float]] = field(default_factory=dict)
    idle_commits_per_s: dict[str, float] = field(default_factory=dict)
    cpu_per_write: dict[str, list[CpuPerAnswer]] = field(default_factory=dict)
    cpu_per_read: dict[str, list[CpuPerAnswer]] = field(default_factory=dict)
    lags: list[CatchUp] = field(default_factory=list)
    memory_mb: dict[str, float] = field(default_factory=dict)  # after the write and read runs
    solo: dict[str, Median] = field(default_factory=dict)
    unloaded: Median | None = None
    audited: Median | None = None
    auditors: Median | None = None
    auditor_count: int = 0
    audited_memory_mb: float = 0.0  # after the auditors' rounds (the ledger's page maker included)
    # issue 14: deposits on a ledger whose webhook receiver hangs, and on the one without
    hooked: Median | None = None
    unhooked: Median | None = None
    hook_metrics: dict[str, float] = field(default_factory=dict)
    receiver: tuple[int, int, int] = (0, 0, 0)  # connections accepted, held at the end, refused
    outbox: tuple[int, int] = (0, 0)  # the hooked ledger's messages, and deliveries delivered


@dataclass(frozen=True)
class Row:
    measure: str
    ledger: str
    baseline: str
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None


def _ratio_row(measure: str, mine: float, base: float, unit: str, baseline: str, *,
               at_least: float | None = None, at_most: float | None = None,
               fmt: str = ",.0f") -> Row:
    ratio = mine / base if base else None
    met, goal = None, ""
    if at_least is not None:
        goal, met = f"≥ {at_least:.2f}x", ratio is not None and ratio >= at_least
    if at_most is not None:
        goal, met = f"≤ {at_most:.2f}x", ratio is not None and ratio <= at_most
    return Row(measure, f"{mine:{fmt}}{unit}", f"{base:{fmt}}{unit} {baseline}", ratio, goal, met)


def _failures(measure: str, ledger: Median, bare: Median, baseline: str = "bare") -> Row:
    def text(m: Median) -> str:
        return f"{m.failed}" + (f" {m.others}" if m.others else "")

    return Row(measure, text(ledger), f"{text(bare)} {baseline}", None, "none", ledger.failed == 0)


def _load_rows(kind: str, figures: dict[str, Median], goal: float, connections: int
               ) -> list[Row]:
    ledger, bare = figures["ledger"], figures["bare"]
    n = f"median of {ledger.rounds}"
    return [
        _ratio_row(f"{kind}/s at {connections} connections ({n})", ledger.per_second,
                   bare.per_second, "", "bare", at_least=goal),
        _ratio_row(f"{kind} p50", ledger.p50_ms, bare.p50_ms, " ms", "bare", fmt=".1f"),
        _ratio_row(f"{kind} p99", ledger.p99_ms, bare.p99_ms, " ms", "bare", fmt=".1f"),
        _failures(f"{kind}: non-2xx or no answer (all rounds)", ledger, bare),
    ]


def _commit_rows(http: HttpFigures) -> list[Row]:
    rows = []
    for kind, found in (("write", http.commits_per_write), ("read", http.commits_per_read)):
        mine, base = statistics.median(found["ledger"]), statistics.median(found["bare"])
        rows.append(_ratio_row(f"commits per {kind} (pg_stat_database)", mine, base, "",
                               "bare", fmt=".2f"))
    return rows


def _cpu_rows(http: HttpFigures) -> list[Row]:
    """Processor time per answer, by whom: where a shortfall in rate comes from (no goal of
    its own). The cores the service's own process kept busy say whether its event loop, one
    thread holding the GIL, is what limits it (near 1.0)."""
    rows = []
    for kind, found in (("write", http.cpu_per_write), ("read", http.cpu_per_read)):
        if not found.get("ledger") or not found.get("bare"):
            continue
        ledger, bare = found["ledger"], found["bare"]
        for part, label in (("service_us", "the service's processes"),
                            ("main_us", "the service's own process"),
                            ("children_us", "its children: the ledger's keeper"),
                            ("postgres_us", "PostgreSQL"),
                            ("machine_us", "the whole machine, load generator included")):
            mine = statistics.median(getattr(c, part) for c in ledger)
            base = statistics.median(getattr(c, part) for c in bare)
            rows.append(_ratio_row(f"CPU per {kind}, {label} (µs)", mine, base, " µs", "bare"))
        mine = statistics.median(c.main_cores for c in ledger)
        base = statistics.median(c.main_cores for c in bare)
        rows.append(_ratio_row(f"cores the service's own process kept busy ({kind}s)", mine,
                               base, "", "bare", fmt=".2f"))
        mine = statistics.median(c.machine_cores for c in ledger)
        base = statistics.median(c.machine_cores for c in bare)
        rows.append(_ratio_row(f"cores the whole machine kept busy ({kind}s; it has "
                               f"{os.cpu_count()})", mine, base, "", "bare", fmt=".2f"))
    return rows


def _lag_row(lags: list[CatchUp]) -> Row:
    events = statistics.median(lag.lag_events for lag in lags)
    seconds = statistics.median(lag.seconds for lag in lags)
    stuck = sum(not lag.caught_up for lag in lags)
    text = (f"{events:,.0f} events (max {max(lag.lag_events for lag in lags):,}); "
            f"0 after {seconds:.2f} s")
    if stuck:
        text += f"; **not caught up in {stuck} round(s)**"
    return Row("read-model lag at the end of the write run", text, "—")


def _rebuild_rows(rebuilt: RebuildFigures) -> list[Row]:
    base, label = rebuilt.decode_per_s, "read + decode"
    rows = [_ratio_row(f"`ledger rebuild` of {rebuilt.events:,} events, whole command "
                       "(events/s)", rebuilt.command_per_s, base, "", label, at_least=0.5)]
    if rebuilt.replay_per_s is not None:
        rows.append(_ratio_row("`ledger rebuild`, its replay as it reports it (events/s)",
                               rebuilt.replay_per_s, base, "", label, at_least=0.5))
    return rows


def _auditor_rows(http: HttpFigures) -> list[Row]:
    assert http.unloaded is not None and http.audited is not None and http.auditors is not None
    pages = http.auditors
    return [
        _ratio_row(f"deposits/s while {http.auditor_count} auditors page /v1/events?limit=1000"
                   f" (median of {http.audited.rounds})",
                   http.audited.per_second, http.unloaded.per_second, "", "unloaded",
                   at_least=0.8),
        Row("auditors' pages/s (p50, p99; non-2xx)",
            f"{pages.per_second:,.1f} ({pages.p50_ms:,.0f} ms, {pages.p99_ms:,.0f} ms; "
            f"{pages.failed})", "—"),
        _ratio_row("resident memory after the auditors, the ledger's processes (MiB)",
                   http.audited_memory_mb, http.memory_mb["ledger"], " MiB",
                   "after the loads"),
    ]


def _webhook_rows(http: HttpFigures) -> list[Row]:
    assert http.hooked is not None and http.unhooked is not None
    hooked, plain = http.hooked, http.unhooked
    waiting = http.hook_metrics.get("ledger_webhook_messages_waiting")
    oldest = http.hook_metrics.get("ledger_webhook_oldest_waiting_age_seconds")
    tries = sum(v for k, v in http.hook_metrics.items()
                if k.startswith("ledger_webhook_attempts_total"))
    accepted, held, refused = http.receiver
    messages, delivered = http.outbox
    told = f"{messages:,} messages, {delivered:,} delivered; metric: "
    told += f"{waiting:,.0f} waiting" if waiting is not None else "none"
    if oldest is not None:
        told += f", oldest {oldest:,.0f} s"
    return [
        _ratio_row(f"deposits/s while the webhook receiver hangs (median of {hooked.rounds})",
                   hooked.per_second, plain.per_second, "", "no webhooks", at_least=0.8),
        _ratio_row("deposit p99 while the webhook receiver hangs", hooked.p99_ms, plain.p99_ms,
                   " ms", "no webhooks", fmt=".1f"),
        _failures("deposits while the receiver hangs: non-2xx or no answer", hooked, plain,
                  "no webhooks"),
        Row("the hooked ledger's outbox at the end (tables; `/metrics`)",
            f"{told}; {tries:,.0f} POSTs tried, the receiver held {accepted:,} connections "
            f"({held} open at the end, {refused} refused), answered none", "—"),
    ]


def rows(http: HttpFigures, rebuilt: RebuildFigures | None) -> list[Row]:
    found = [
        *_load_rows("writes", http.writes, 1.0, http.connections),
        *_load_rows("reads", http.reads, 1.0, http.connections),
        *_commit_rows(http),
        *_cpu_rows(http),
        _ratio_row("resident memory after the loads, the service's processes (MiB)",
                   http.memory_mb["ledger"], http.memory_mb["bare"], " MiB", "bare"),
        _lag_row(http.lags),
        _ratio_row(f"one deposit at a time, p50 (median of {http.solo['ledger'].rounds})",
                   http.solo["ledger"].p50_ms, http.solo["bare"].p50_ms, " ms", "bare",
                   at_most=2.0, fmt=".2f"),
        _ratio_row("one deposit at a time, p99", http.solo["ledger"].p99_ms,
                   http.solo["bare"].p99_ms, " ms", "bare", fmt=".2f"),
    ]
    if rebuilt is not None:
        found += _rebuild_rows(rebuilt)
    if http.audited is not None:
        found += _auditor_rows(http)
    if http.hooked is not None:
        found += _webhook_rows(http)
    return found


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def markdown(found: list[Row]) -> str:
    lines = ["| measure | ledger | baseline | ratio | goal | met |",
             "|---|---:|---:|---:|---|---|"]
    for row in found:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(f"| {row.measure} | {row.ledger} | {row.baseline} | {ratio} | {row.goal} "
                     f"| {_met(row.met)} |")
    return "\n".join(lines)
