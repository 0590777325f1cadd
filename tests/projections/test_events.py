"""What read models store of an event's data: the same JSON text as ``json.dumps(data,
sort_keys=True)``, so rows written before and after a replay agree byte for byte."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from projections.events import json_text

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON, max_size=6))
def test_event_data_is_written_as_json_dumps_with_sorted_keys_writes_it(
    data: dict[str, Any],
) -> None:
    assert json_text(data) == json.dumps(data, sort_keys=True)
