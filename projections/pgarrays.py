"""Lists sent to PostgreSQL as arrays whose element type is named once, not guessed per list.

The write path sends its rows as one array per column (``unnest``): the committer eight to
sixteen for each commit, the keeper one for each column of each table a batch changes. For a
plain ``list``, psycopg finds the element type anew at every execute: it walks the list for its
items' types (and for ints their largest), looks the element's dumper up, makes an array dumper,
and writes the array as text, each in Python. Profiled under one deposit at a time, that was
over half of the keeper's work on its inserts and about a tenth of the server's on each deposit.

``array(values)`` answers the list as an instance of a ``list`` subclass registered on psycopg's
adapters with a binary array dumper of a fixed element type (psycopg's own
``ListBinaryDumper``, its ``oid`` and ``element_oid`` set), chosen by the Python type of the
first value that is not None: a dumper whose oid is known skips the walk and the upgrade, and
each element goes through psycopg's C dumper for its type. A list with no value, or of a type
not named here, stays a plain list, dumped as psycopg always did. The SQL's own casts
(``%s::bigint[]``) still say what the column takes, so the values arrive as before.

Every value of such a column must be of the first one's type or None (psycopg's own
inference refuses mixed lists too); an int is sent as ``bigint`` (psycopg would pick the
smallest type that holds the largest: the casts make them equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any
from uuid import UUID

import psycopg
from psycopg.postgres import types
from psycopg.types.array import ListBinaryDumper


def _typed(pg_type: str) -> type[list[Any]]:
    """A ``list`` subclass psycopg dumps as a binary array of ``pg_type``."""
    info = types[pg_type]
    name = f"{info.name.title()}Array"
    cls: type[list[Any]] = type(name, (list,), {"__slots__": ()})
    dumper = type(f"{name}Dumper", (ListBinaryDumper,),
                  {"oid": info.array_oid, "element_oid": info.oid})
    # Registered globally (connections copy the map when made): a connection made before this
    # module was imported finds ``list``'s dumper by the class's ancestry, as before.
    psycopg.adapters.register_dumper(cls, dumper)
    return cls


# Exact types only: bool is not sent as bigint, nor a datetime as a date.
_ARRAYS: dict[type[Any], type[list[Any]]] = {
    int: _typed("int8"),
    str: _typed("text"),
    bytes: _typed("bytea"),
    UUID: _typed("uuid"),
    bool: _typed("bool"),
    float: _typed("float8"),
    date: _typed("date"),
}


def array(values: Sequence[Any]) -> list[Any]:
    """``values`` as a list psycopg dumps as an array of its first value's type (see the
    module docstring); a plain list when there is no value or no such type."""
    first = next((value for value in values if value is not None), None)
    typed = _ARRAYS.get(type(first))
    return typed(values) if typed is not None else list(values)
