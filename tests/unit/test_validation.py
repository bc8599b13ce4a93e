"""Caller input rules (`server/core/validation.py`): every broken rule is reported at once, by field, and
a model's catalogue flags (never its name) decide what it accepts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from server.core.catalogue import ModelInfo, Tier
from server.core.errors import FieldViolation, InvalidRequest
from server.core.types import Capabilities, Role
from server.core.validation import (
    MAX_MODEL_LENGTH,
    DraftMessage,
    DraftRequest,
    Limits,
    check,
    check_context_value,
    to_request,
    unsupported,
    validate,
)

LIMITS = Limits(
    max_request_bytes=1000,
    max_messages=4,
    max_stop_sequences=2,
    max_stop_length=8,
    max_metadata_value_length=16,
)
HELLO = DraftRequest(model="m", messages=[DraftMessage(Role.USER, "hello")])
STRICT = ModelInfo(
    id="strict-1",
    provider="openai",
    tier=Tier.FAST,
    context_window=1000,
    max_output_tokens=100,
    input_per_mtok=1.0,
    output_per_mtok=2.0,
    capabilities=Capabilities(
        temperature=False, top_p=False, stop_sequences=False, assistant_prefill=False, blank_turns=False
    ),
)


def _fields(draft: DraftRequest) -> list[str]:
    return [v.field for v in validate(draft, LIMITS)]


def test_a_plain_request_breaks_no_rule() -> None:
    assert validate(HELLO, LIMITS) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": "m" * (MAX_MODEL_LENGTH + 1)}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [DraftMessage(Role.USER, "x")] * 5}, "messages"),
        ({"messages": [DraftMessage(None, "x")]}, "messages[0].role"),
        ({"messages": [DraftMessage(Role.USER, "  \n")]}, "messages"),
        ({"messages": [DraftMessage(Role.USER, "é" * 501)]}, "messages"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"top_p": float("inf")}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c"]}, "stop"),
        ({"stop": [""]}, "stop[0]"),
        ({"stop": ["123456789"]}, "stop[0]"),
        ({"tier": "TIER_HUGE"}, "tier"),
        ({"complexity": "COMPLEXITY_EXTREME"}, "complexity"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, str) else None,
)
def test_each_rule_names_the_field_that_breaks_it(change: dict[str, object], field: str) -> None:
    assert _fields(replace(HELLO, **change)) == [field]  # type: ignore[arg-type]


def test_the_content_limit_counts_utf8_bytes_of_messages_and_stop_sequences() -> None:
    at_limit = replace(HELLO, messages=[DraftMessage(Role.USER, "é" * 498)], stop=["abcd"])

    assert validate(at_limit, LIMITS) == []
    assert _fields(replace(at_limit, stop=["abcde"])) == ["messages"]


def test_every_broken_rule_is_reported_in_one_error() -> None:
    draft = DraftRequest(
        model="m",
        messages=[DraftMessage(None, "x")],
        temperature=3.0,
        top_p=2.0,
        max_tokens=-1,
        stop=[""],
    )

    with pytest.raises(InvalidRequest) as caught:
        check(draft, LIMITS)

    assert [v.field for v in caught.value.violations] == [
        "messages[0].role",
        "temperature",
        "top_p",
        "max_tokens",
        "stop[0]",
    ]
    assert caught.value.metadata() == {"fields": "messages[0].role,temperature,top_p,max_tokens,stop[0]"}


def test_a_valid_request_passes_check() -> None:
    check(HELLO, LIMITS)


def test_what_a_model_does_not_accept_is_read_from_its_capability_flags() -> None:
    draft = DraftRequest(
        model=STRICT.id,
        messages=[DraftMessage(Role.USER, " "), DraftMessage(Role.ASSISTANT, "Sure,")],
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
    )

    problems = unsupported(draft, STRICT)

    assert [p.field for p in problems] == [
        "temperature",
        "top_p",
        "stop",
        "messages[0].content",
        "messages[1].role",
    ]
    assert unsupported(draft, replace(STRICT, capabilities=Capabilities())) == []


def test_a_system_message_after_the_last_user_turn_is_not_a_prefill() -> None:
    draft = replace(HELLO, messages=[DraftMessage(Role.USER, "hi"), DraftMessage(Role.SYSTEM, "be brief")])

    assert unsupported(draft, STRICT) == []


def test_to_request_carries_the_models_id_limits_and_flags() -> None:
    draft = replace(HELLO, temperature=0.2, max_tokens=10, stop=["x"])

    request = to_request(draft, STRICT)

    assert request.model == "strict-1"
    assert [(m.role, m.content) for m in request.messages] == [(Role.USER, "hello")]
    assert (request.temperature, request.max_tokens, request.stop) == (0.2, 10, ("x",))
    assert request.capabilities == STRICT.capabilities
    assert request.output_limit == 100


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("x" * 17, "must be at most 16 characters"),
        ("agent\nforged: 1", "must be printable ASCII"),
        ("agënt", "must be printable ASCII"),
    ],
    ids=["too-long", "newline", "non-ascii"],
)
def test_context_values_bound_for_headers_and_logs_are_short_printable_ascii(
    value: str, problem: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_context_value("a2a-source-agent", value, 16)

    assert caught.value.violations == (FieldViolation("a2a-source-agent", problem),)


def test_a_short_printable_context_value_is_accepted() -> None:
    check_context_value("a2a-source-agent", "planner-7", 16)
