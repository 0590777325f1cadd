"""An export's whole text, for the tests that read it so: the exports themselves write to a file
object as they go (``projections.beancount.export``, ``projections.hledger.export``,
``projections.exports.general_ledger_csv``) and never hold it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

Entries = Iterable[dict[str, Any]]


def written(export: Callable[..., None], entries: Entries, **options: Any) -> str:
    """What ``export(entries, out, **options)`` writes to ``out``."""
    out = io.StringIO()
    export(entries, out, **options)
    return out.getvalue()

