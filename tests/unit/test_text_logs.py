"""The text log format (api.logs): a value a request carried forges no line, no field."""

from __future__ import annotations

import logging
import sys

from api.logs import FIELDS, JsonFormatter, TextFormatter


def _record(message: str, fields: dict[str, object] | None = None,
            exc_info: object = None) -> logging.LogRecord:
    record = logging.LogRecord("ledger.access", logging.INFO, __file__, 1, "%s", (message,),
                               exc_info)  # type: ignore[arg-type]
    if fields is not None:
        setattr(record, FIELDS, fields)
    return record


def test_a_newline_in_a_field_is_escaped_not_a_line_of_its_own() -> None:
    line = TextFormatter().format(_record("GET /v1/me 200", {
        "person": "finance:eve\n2026-12-06 ERROR api: forged", "status": 200}))
    assert line.splitlines() == [line]
    assert "\\n2026-12-06 ERROR api: forged" in line


def test_a_newline_or_escape_in_the_message_is_escaped() -> None:
    line = TextFormatter().format(_record("unexpected error in GET /v1/accounts/a\nforged\x1b[2J"))
    assert line.splitlines() == [line]
    assert line.endswith("/v1/accounts/a\\nforged\\x1b[2J")


def test_a_field_with_a_space_or_equals_sign_forges_no_field() -> None:
    line = TextFormatter().format(_record("GET /v1/me 200", {"person": "eve status=500"}))
    assert 'person="eve status=500"' in line
    assert " status=500" not in line.replace('"eve status=500"', "")


def test_plain_fields_and_an_exception_s_stack_are_written_as_before() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("it failed", {"request_id": "abc", "status": 500},
                         exc_info=sys.exc_info())
    text = TextFormatter().format(record)
    first, *stack = text.splitlines()
    assert first.endswith("it failed request_id=abc status=500")
    assert stack[0] == "Traceback (most recent call last):" and stack[-1] == "ValueError: boom"


def test_the_json_format_already_keeps_one_line() -> None:
    line = JsonFormatter().format(_record("x\ny", {"person": "a\nb"}))
    assert line.splitlines() == [line]
