"""What the service writes as JSON (orjson): answers of JSON types only, log lines of anything."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest

from api import logs
from api.handlers import json_response


def test_an_answer_is_compact_utf8_json_and_says_so() -> None:
    response = json_response({"username": "zoë", "amounts": [1200, -5], "note": None}, status=201)
    assert response.status == 201
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.body == '{"username":"zoë","amounts":[1200,-5],"note":null}'.encode()


@dataclass
class Stray:
    amount: int


@pytest.mark.parametrize("stray", [date(2026, 12, 4), datetime(2026, 12, 4, tzinfo=UTC),
                                   Stray(12)])
def test_an_answer_holding_no_json_type_is_a_bug_not_a_guess(stray: object) -> None:
    # The ledger and its read models answer JSON types only: a date or a dataclass that leaks
    # into an answer fails it (a 500 from the problem middleware) rather than being written in
    # some format no contract names.
    with pytest.raises(TypeError):
        json_response({"at": stray})


def line_of(**fields: object) -> dict[str, object]:
    record = logging.LogRecord("ledger.access", logging.INFO, __file__, 1, "GET %s", ("/x",),
                               None)
    setattr(record, logs.FIELDS, fields)
    parsed: dict[str, object] = json.loads(logs.JsonFormatter().format(record))
    return parsed


def test_a_log_line_is_one_json_object_with_its_fields() -> None:
    line = line_of(route="/v1/accounts/{username}", status=200, problem=None)
    assert line["message"] == "GET /x" and line["level"] == "INFO"
    assert (line["route"], line["status"], line["problem"]) == ("/v1/accounts/{username}", 200,
                                                                None)
    assert str(line["time"]).endswith("Z")


def test_a_log_line_is_written_whatever_its_fields_hold() -> None:
    # orjson refuses integers past 64 bits; the json module writes the line then.
    assert line_of(huge=2**70, at=date(2026, 12, 4))["huge"] == 2**70
    assert line_of(at=date(2026, 12, 4), who=Stray(1))["at"] == "2026-12-04"
