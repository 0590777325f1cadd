"""What a person reads when a request is refused: pydantic's findings in the shop's words.

Pydantic's own wording ("Extra inputs are not permitted", "Value error, ...", "String should
match pattern '^[\\t-\\r...'") is for programmers. Each finding is said here in plain words: an
unknown field or query parameter names the ones accepted, a missing one says it is missing, a
value that does not fit a pattern says what the value is (a user name, a reference, a cursor),
never the regular expression; a number, text or list out of its bounds, or a value of the
wrong kind, names the field and the bound ("amount must be more than 0"), never "Input should
be greater than 0". The service's own validators say what a value must be ("must be true or
false"), and the field's name is put before it; a finding of a kind not named here still names
its field, in the service's words, never pydantic's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from api import models

# A pattern of the document -> what a value of it is, in words.
_PATTERN_WORDS: Mapping[str, str] = {
    models.USERNAME_PATTERN: "a user name: 3-64 of A-Z, a-z, 0-9, '.', '_' and '-' (spaces "
                             "around it are trimmed, capitals lower-cased)",
    models.REFERENCE_PATTERN: "1-128 printable ASCII characters without surrounding spaces",
    models.CURSOR_PATTERN: "the `next` of a previous page",
    models.NOT_BLANK_PATTERN: "text that is not blank",
    models.IDEMPOTENCY_KEY_PATTERN: "1-255 printable ASCII characters",
    r"^[A-Z]{3}$": "an ISO 4217 currency code in capitals, e.g. USD",
    models.CHART_ACCOUNT_PATTERN: "a chart account: customer:<user name>, clearing:deposits, "
                                  "clearing:payouts, orders:paid, suppliers:receivable or "
                                  "revenue:freight",
}

# A finding by pydantic's error type -> its words, {field} the field's name and the rest the
# error's context (its bound).
_KIND_WORDS: Mapping[str, str] = {
    "int_parsing": "{field} must be a whole number",
    "int_type": "{field} must be a whole number",
    "int_from_float": "{field} must be a whole number, without a fraction",
    "int_parsing_size": "{field} must be a whole number of fewer digits: see its bound",
    "greater_than": "{field} must be more than {gt}",
    "greater_than_equal": "{field} must be {ge} or more",
    "less_than": "{field} must be less than {lt}",
    "less_than_equal": "{field} must be {le} or less",
    "string_too_long": "{field} must be at most {max_length} characters long",
    "string_too_short": "{field} must be at least {min_length} characters long",
    "string_type": "{field} must be text (a JSON string)",
    "too_long": "{field} may hold at most {max_length} items",
    "too_short": "{field} must hold at least {min_length} items",
    "list_type": "{field} must be a list (a JSON array)",
    "bool_parsing": "{field} must be true or false",
    "bool_type": "{field} must be true or false",
    "date_parsing": "{field} must be a date written YYYY-MM-DD",
    "date_from_datetime_parsing": "{field} must be a date written YYYY-MM-DD",
    "date_type": "{field} must be a date written YYYY-MM-DD",
    "datetime_parsing": "{field} must be an RFC 3339 time, e.g. 2026-11-26T09:00:00Z",
    "datetime_from_date_parsing": "{field} must be an RFC 3339 time, e.g. "
                                  "2026-11-26T09:00:00Z",
    "datetime_type": "{field} must be an RFC 3339 time, e.g. 2026-11-26T09:00:00Z",
    "timezone_aware": "{field} must give its time zone, e.g. 2026-11-26T09:00:00Z",
    "uuid_parsing": "{field} must be an id the service gave (a UUID)",
    "uuid_type": "{field} must be an id the service gave (a UUID)",
}


def _field_name(error: Mapping[str, Any], *, query: bool) -> str:
    """The field (or parameter) a finding is about, by its own name: the last named part of
    its location (an item of a list is its list's)."""
    for part in reversed(tuple(error.get("loc", ()))):
        if isinstance(part, str):
            return part
    return "the parameter" if query else "the value"


def accepted_names(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The (nested) model an error's location points into, when it can be told."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: its type is the list's own (below)
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = field.annotation
        for inner in getattr(current, "__args__", ()):  # list[X], X | None
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                current = inner
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def message(error: Mapping[str, Any], model: type[BaseModel], *, query: bool = False) -> str:
    """One pydantic finding (``ValidationError.errors()`` item) said for a person."""
    kind = str(error.get("type", ""))
    context: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "extra_forbidden":
        what = "parameter" if query else "field"
        owner = _model_at(model, tuple(error.get("loc", ()))[:-1])
        if owner is None:
            return f"this {what} is not known here"
        names = accepted_names(owner)
        accepted = ", ".join(names) if names else "none"
        return f"this {what} is not known here; the accepted ones are: {accepted}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object"
    if kind == "missing":
        return "this field is missing" if not query else "this parameter is missing"
    if kind == "string_pattern_mismatch":
        pattern = str(context.get("pattern", ""))
        return f"must be {_PATTERN_WORDS.get(pattern, 'in the documented form')}"
    field = _field_name(error, query=query)
    if kind in ("value_error", "assertion_error"):
        text = str(error.get("msg", ""))
        for prefix in ("Value error, ", "Assertion failed, "):
            text = text.removeprefix(prefix)
        # A field's validator says what the value must be; one of the whole model says it all.
        located = any(isinstance(part, str) for part in error.get("loc", ()))
        return f"{field} {text}" if located and text.startswith("must ") else text
    if kind in ("literal_error", "enum"):
        return f"{field} must be one of {context.get('expected', 'the documented values')}"
    words = _KIND_WORDS.get(kind)
    if kind in ("string_too_short", "too_short") and context.get("min_length") == 1:
        words = "{field} must not be empty"
    if words is not None:
        try:
            return words.format(**context, field=field)
        except (KeyError, IndexError):  # a context without the bound: said without it
            pass
    # A kind not named above: never pydantic's wording ("Input should be ...").
    return f"{field} is not valid here: /openapi.json says what it takes"


def messages(errors: Iterable[Mapping[str, Any]], model: type[BaseModel], *, where: str,
             query: bool = False) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in e["loc"]) or where,
            "message": message(e, model, query=query),
        }
        for e in errors
    ]
