"""What a person reads when a request is refused: pydantic's findings in the shop's words.

Pydantic's own wording ("Extra inputs are not permitted", "Value error, ...", "String should
match pattern '^[\\t-\\r...'") is for programmers. Each finding is said here in plain words: an
unknown field or query parameter names the ones accepted, a missing one says it is missing, a
value that does not fit a pattern says what the value is (a user name, a reference, a cursor),
never the regular expression.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from api import models

# A pattern of the document -> what a value of it is, in words.
_PATTERN_WORDS: Mapping[str, str] = {
    models.USERNAME_PATTERN: models.USERNAME_DESCRIPTION,
    models.REFERENCE_PATTERN: "1-128 printable ASCII characters without surrounding spaces",
    models.CURSOR_PATTERN: "the `next` of a previous page",
    models.NOT_BLANK_PATTERN: "text that is not blank",
    models.IDEMPOTENCY_KEY_PATTERN: "1-255 printable ASCII characters",
    r"^[A-Z]{3}$": "an ISO 4217 currency code in capitals, e.g. USD",
    models.CHART_ACCOUNT_PATTERN: models.CHART_ACCOUNT_DESCRIPTION,
}


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
    if kind in ("value_error", "assertion_error"):
        text = str(error.get("msg", ""))
        for prefix in ("Value error, ", "Assertion failed, "):
            text = text.removeprefix(prefix)
        return text
    if kind == "literal_error":
        return f"must be one of {context.get('expected', 'the documented values')}"
    return str(error.get("msg", "is not valid"))


def messages(errors: Iterable[Mapping[str, Any]], model: type[BaseModel], *, where: str,
             query: bool = False) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in e["loc"]) or where,
            "message": message(e, model, query=query),
        }
        for e in errors
    ]
