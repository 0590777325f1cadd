"""A message's id is RFC 9562's name-based UUID (version 5) of its stream, version and type:
the outbox's own quick spelling of it gives exactly what ``uuid.uuid5`` gives."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from projections.outbox import NAMESPACE, NAMESPACE_BYTES, uuid5_text


@given(name=st.text(max_size=200), namespace=st.uuids())
def test_the_quick_uuid5_is_the_standard_librarys(name: str, namespace: uuid.UUID) -> None:
    assert uuid5_text(namespace.bytes, name) == str(uuid.uuid5(namespace, name))


def test_a_message_id_is_the_uuid5_of_its_stream_version_and_type() -> None:
    stream = uuid.UUID("0b2e0f57-93f5-5c3e-8a55-3a4f1c0d9e21")
    expected = str(uuid.uuid5(NAMESPACE, f"{stream}:3:deposit.recorded"))
    assert uuid5_text(NAMESPACE_BYTES, f"{stream}:3:deposit.recorded") == expected
