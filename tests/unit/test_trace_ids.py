"""The trace id the gateway makes for a call that brings none."""

from __future__ import annotations

import uuid

from server.api.context import context_from_metadata, new_trace_id


def test_a_made_up_trace_id_has_the_shape_of_uuid4_hex() -> None:
    ids = {new_trace_id() for _ in range(500)}
    assert len(ids) == 500
    for made in ids:
        parsed = uuid.UUID(made)
        assert (parsed.hex, parsed.version, parsed.variant) == (made, 4, uuid.RFC_4122)


def test_a_call_without_trace_metadata_gets_a_made_up_id() -> None:
    made = context_from_metadata((("user-agent", "grpc-python"),)).trace_id
    assert uuid.UUID(made).version == 4
    assert context_from_metadata((("a2a-trace-id", "mine"),)).trace_id == "mine"
