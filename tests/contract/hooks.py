"""Checks of our own, loaded into schemathesis (``SCHEMATHESIS_HOOKS``) beside its built-in ones.

``positive_data_acceptance`` is configured (``schemathesis.toml``) to take 422 from a request
the document calls valid, because API.md answers 422 for refusals by the shop's rules that no
schema can state: ``insufficient_funds``, ``over_refundable``, ``case_refused``, ... The check
below takes the rest of the built-in check's job back: a schema-valid request may be refused
by such a rule, but never as ``validation_error`` unless the field is one whose rule depends
on more than the request (today's date, the log's end) or ties two query parameters together,
or the value is a float where an integer belongs: JSON Schema's ``integer`` takes ``2.0``, and
the ledger takes no float at all (API.md: amounts are integers), which no schema can say.
"""

from __future__ import annotations

from typing import Any

import schemathesis

# (field, why no schema can say it)
RULES_BEYOND_THE_DOCUMENT: dict[str, str] = {
    "shipped_on": "not after today",
    "postmark_date": "not after today, not before the order shipped",
    "return_by": "not before today",
    "at_position": "not beyond the log's end (reconciliation)",
    "query": "as_of and at_position are not given together",
}


def _value_at(body: Any, field: str) -> Any:
    """The value of a body at an error's ``field`` (``items.0.quantity``), or None."""
    for part in field.split("."):
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


@schemathesis.check
def schema_valid_requests_pass_validation(ctx: Any, response: Any, case: Any) -> None:
    """A request the document calls valid is never refused as malformed."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return
    problem = response.json()
    if problem.get("code") != "validation_error":
        return  # a rule of the shop refused it: 422 is its documented answer
    fields = {error.get("field") for error in problem.get("errors") or ()}
    unexplained = {
        field for field in fields - RULES_BEYOND_THE_DOCUMENT.keys()
        if not isinstance(_value_at(case.body, str(field)), float)
    }
    if unexplained or not fields:
        raise AssertionError(
            f"a request valid by the document was refused as malformed: {problem}"
        )
