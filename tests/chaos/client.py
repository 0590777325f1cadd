"""One HTTP request of a chaos run, bounded by a timeout, classified, and recorded.

Classification (``tests.chaos.history``): 2xx ``ok``; 4xx ``refused``; 503 ``busy`` or
``not_ready`` ``refused`` too (the service documents that nothing was done: optimistic retries
ran out, or the read models lagged); anything else (a timeout, a broken connection, a 500, a 503
``store_unavailable``) ``unknown``, because the write may have committed before the answer was
lost. The checkers hold the service to this: a refused write must leave no trace in the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.chaos.history import OK, REFUSED, UNKNOWN, History

DEFINITE_503_CODES = frozenset({"busy", "not_ready"})
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class Request:
    """What to send: ``op`` names it in the history; ``key`` is its Idempotency-Key."""

    op: str
    method: str
    path: str
    role: str
    account: str
    args: dict[str, Any] | None = None
    key: str | None = None
    tag: str | None = None
    request_id: str | None = None


def classify(status: int | None, code: str | None) -> str:
    if status is None:
        return UNKNOWN
    if 200 <= status < 300:
        return OK
    if 400 <= status < 500:
        return REFUSED
    if status == 503 and code in DEFINITE_503_CODES:
        return REFUSED
    return UNKNOWN


class Client:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        history: History,
        tokens: dict[str, str],
        *,
        timeout_s: float,
    ) -> None:
        self.session = session
        self.history = history
        self.tokens = tokens
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(
        self, request: Request, base_url: str, *, server: int | None, phase: str,
        worker: int | None = None, resolves: int | None = None, twin: bool = False,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send it once and record it; returns the history's op. ``twin``: the same request
        sent at the same time to another server; ``timeout_s``: an impatient client's own."""
        headers = {"Authorization": f"Bearer {self.tokens[request.role]}"}
        if request.key is not None:
            headers["Idempotency-Key"] = request.key
        op: dict[str, Any] = {
            "phase": phase, "worker": worker, "server": server, "op": request.op,
            "method": request.method, "path": request.path, "role": request.role,
            "args": request.args, "key": request.key, "tag": request.tag,
            "account": request.account, "request_id": request.request_id,
            "resolves": resolves, "twin": twin, "timeout_s": timeout_s,
            "start": self.history.now(),
        }
        status, text, replayed, error = None, None, False, None
        timeout = self.timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self.session.request(
                request.method, base_url + request.path, json=request.args, headers=headers,
                timeout=timeout,
            ) as reply:
                text = await reply.text(errors="replace")
                status = reply.status
                replayed = reply.headers.get("Idempotent-Replayed") == "true"
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as failure:
            error = f"{type(failure).__name__}: {failure}"[:300]
        body = _parse(text)
        code = body.get("code") if isinstance(body, dict) and status and status >= 400 else None
        op.update({
            "end": self.history.now(), "status": status, "code": code,
            "outcome": classify(status, code), "error": error, "replayed": replayed,
            "body": body,
        })
        return self.history.add(op)


def _parse(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text[:MAX_TEXT_CHARS]
