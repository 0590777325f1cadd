"""What read models store of an event's data: the same JSON text as ``json.dumps(data,
sort_keys=True)``, so rows written before and after a replay agree byte for byte. What a seal
covers: the same text as ``json.JSONEncoder(separators=(",", ":")).encode``, so the seals made
before the encoder was made once still hold."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from projections.events import json_text
from projections.seal import seal_text

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON, max_size=6))
def test_event_data_is_written_as_json_dumps_with_sorted_keys_writes_it(
    data: dict[str, Any],
) -> None:
    assert json_text(data) == json.dumps(data, sort_keys=True)


@given(st.lists(JSON, max_size=12))
def test_a_seal_covers_its_values_as_compact_json_of_the_json_module(values: list[Any]) -> None:
    assert seal_text(values) == json.JSONEncoder(separators=(",", ":")).encode(values)
