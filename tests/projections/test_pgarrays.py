"""Columns sent to PostgreSQL as arrays of their values' type (``projections.pgarrays``): the
values arrive exactly as a plain list's did, and the array's type is the one named, not one
psycopg guessed from the items."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from projections.pgarrays import array
from tests.conftest import _pg_admin

SAMPLES: dict[str, list[Any]] = {
    "bigint[]": [1, None, -(2**63), 2**63 - 1, 0],
    "text[]": ["plain", "", 'a "quoted", {braced} \\ value', "NULL", None, "  spaced  ", "é ✓"],
    "bytea[]": [b"\x00\xff{}\"", b"", None],
    "uuid[]": [uuid4(), None, UUID(int=0)],
    "boolean[]": [True, None, False],
    "double precision[]": [0.5, None, -1e300],
    "date[]": [date(2026, 12, 6), None],
}


@pytest.fixture
def connection() -> Iterator[psycopg.Connection[Any]]:
    with _pg_admin() as admin:
        yield admin


@pytest.mark.parametrize("pg_type", SAMPLES)
def test_a_column_arrives_as_its_values_as_an_array_of_their_type(
    connection: psycopg.Connection[Any], pg_type: str
) -> None:
    values = SAMPLES[pg_type]
    sent = array(values)
    assert type(sent) is not list, "a column with values is sent typed"
    row = connection.execute("SELECT %s, pg_typeof(%s)::text", (sent, sent)).fetchone()
    assert row == (values, pg_type)


def test_ints_are_sent_as_bigint_whatever_their_size(connection: psycopg.Connection[Any]) -> None:
    # psycopg alone would send these as smallint[]: the named type needs no look at the items
    row = connection.execute("SELECT pg_typeof(%s)::text", (array([1, 2, 3]),)).fetchone()
    assert row == ("bigint[]",)


@pytest.mark.parametrize("values", [[], [None, None]])
def test_a_column_without_a_value_stays_a_plain_list(
    connection: psycopg.Connection[Any], values: list[Any]
) -> None:
    sent = array(values)
    assert type(sent) is list
    row = connection.execute("SELECT %s::text[]", (sent,)).fetchone()
    assert row == (values,)


def test_a_column_of_a_type_not_named_stays_a_plain_list() -> None:
    assert type(array([{"a": 1}])) is list
