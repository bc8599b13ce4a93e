"""The agents' contract at the gateway's edge: what it refuses, with which field, before any provider call
(content parts, tools and tool turns, response formats, reasoning control, model capabilities), and what
it reports about structured answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS, SAMPLING_MODELS, Emulators
from tests.helpers import Details, details_of, user

PROVIDERS = ("openai", "anthropic", "gemini")
PNG = bytes.fromhex("89504e470d0a1a0a") + b"\0" * 64
WEATHER = llm_pb2.Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)
CALL = llm_pb2.ToolCall(id="call_1", name="get_weather", arguments_json='{"city": "Paris"}')


def assistant_calls(*calls: llm_pb2.ToolCall) -> llm_pb2.Message:
    return llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, tool_calls=calls)


def tool_result(call_id: str, text: str = '{"temp_c": 21}') -> llm_pb2.Message:
    return llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id=call_id, content=text)


async def refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, request: llm_pb2.CompleteRequest, emulators: Emulators
) -> Details:
    """The details of a Complete the gateway refuses; no provider saw it."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(request, timeout=10)
    assert all(emulators.completions(p) == [] for p in PROVIDERS)
    return details_of(caught.value)


# --- content parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "field", "words"),
    [
        (llm_pb2.ContentPart(), "messages[0].parts[0]", "text, image or document"),
        (llm_pb2.ContentPart(text=""), "messages[0].parts[0].text", "empty"),
        (
            llm_pb2.ContentPart(image=llm_pb2.Image(mime_type="image/png")),
            "messages[0].parts[0].image",
            "data",
        ),
        (
            llm_pb2.ContentPart(image=llm_pb2.Image(data=PNG, mime_type="image/bmp")),
            "messages[0].parts[0].image.mime_type",
            "image/png",
        ),
        (
            llm_pb2.ContentPart(image=llm_pb2.Image(url="http://example.com/a.png")),
            "messages[0].parts[0].image.url",
            "https://",
        ),
        (
            llm_pb2.ContentPart(document=llm_pb2.Document(data=b"%PDF-1.7", mime_type="text/html")),
            "messages[0].parts[0].document.mime_type",
            "application/pdf",
        ),
        (
            llm_pb2.ContentPart(document=llm_pb2.Document(mime_type="application/pdf")),
            "messages[0].parts[0].document.data",
            "empty",
        ),
    ],
)
async def test_a_malformed_content_part_is_refused_naming_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    emulators: Emulators,
    part: llm_pb2.ContentPart,
    field: str,
    words: str,
) -> None:
    message = llm_pb2.Message(role=llm_pb2.ROLE_USER, content="look", parts=[part])

    details = await refused(
        stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=[message]), emulators
    )

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert words in details.violations[field]


async def test_an_image_over_the_configured_size_limit_is_refused(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(llm_max_image_bytes=1024)
    image = llm_pb2.Image(data=PNG + b"\0" * 1024, mime_type="image/png")
    message = llm_pb2.Message(
        role=llm_pb2.ROLE_USER, content="look", parts=[llm_pb2.ContentPart(image=image)]
    )

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        details = await refused(
            llm_pb2_grpc.LLMServiceStub(channel),
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=[message]),
            emulators,
        )

    assert "the limit is 1024" in details.violations["messages[0].parts[0].image.data"]


async def test_an_image_outside_a_user_message_is_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    image = llm_pb2.ContentPart(image=llm_pb2.Image(data=PNG, mime_type="image/png"))
    messages = [*user("hi"), llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, parts=[image]), *user("and?")]

    details = await refused(
        stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages), emulators
    )

    assert "ROLE_USER" in details.violations["messages[1].parts[0]"]


# --- tools and tool turns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "field", "words"),
    [
        (llm_pb2.Tool(name="get weather"), "tools[0].name", "a-z A-Z 0-9 _ -"),
        (llm_pb2.Tool(name="x" * 65), "tools[0].name", "1 to 64"),
        (llm_pb2.Tool(name="t", parameters_json="{not json"), "tools[0].parameters_json", "JSON text"),
        (llm_pb2.Tool(name="t", parameters_json="[1, 2]"), "tools[0].parameters_json", "JSON object"),
        (
            llm_pb2.Tool(name="t", parameters_json='{"type": "object", "properties": 3}'),
            "tools[0].parameters_json",
            "not a valid JSON Schema",
        ),
        (llm_pb2.Tool(name="t", parameters_json='{"type": "string"}'), "tools[0].parameters_json", "object"),
    ],
)
async def test_a_malformed_tool_is_refused_naming_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, tool: llm_pb2.Tool, field: str, words: str
) -> None:
    request = llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi"), tools=[tool])

    details = await refused(stub, request, emulators)

    assert words in details.violations[field]


async def test_a_tool_defined_twice_is_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    request = llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi"), tools=[WEATHER, WEATHER])

    details = await refused(stub, request, emulators)

    assert "defined twice" in details.violations["tools[1].name"]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"tool_choice": llm_pb2.ToolChoice(tool_name="get_time")}, "tool_choice.tool_name", "not one of"),
        (
            {"tool_choice": llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_NONE, tool_name="get_weather")},
            "tool_choice.tool_name",
            "REQUIRED",
        ),
        (
            {"tool_choice": llm_pb2.ToolChoice(mode=llm_pb2.ToolChoiceMode.ValueType(7))},
            "tool_choice.mode",
            "TOOL_CHOICE_MODE_AUTO",
        ),
    ],
)
async def test_a_tool_choice_that_cannot_be_met_is_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    emulators: Emulators,
    fields: dict[str, Any],
    field: str,
    words: str,
) -> None:
    request = llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi"), tools=[WEATHER], **fields)

    details = await refused(stub, request, emulators)

    assert words in details.violations[field]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tool_choice": llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_REQUIRED)}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ],
)
async def test_tool_settings_without_tools_are_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, fields: dict[str, Any], field: str
) -> None:
    request = llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi"), **fields)

    details = await refused(stub, request, emulators)

    assert details.violations[field] == "needs tools"


async def test_a_tool_result_must_answer_a_call_of_the_assistant_message_before_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    messages = [*user("weather in Paris?"), assistant_calls(CALL), tool_result("call_9")]

    details = await refused(
        stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages, tools=[WEATHER]), emulators
    )

    assert "answers no tool call" in details.violations["messages[2].tool_call_id"]
    assert "no ROLE_TOOL answer" in details.violations["messages[1].tool_calls[0]"]


async def test_a_tool_result_without_a_call_id_is_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    messages = [*user("weather in Paris?"), assistant_calls(CALL), tool_result("")]

    details = await refused(
        stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages, tools=[WEATHER]), emulators
    )

    assert "must name the tool call" in details.violations["messages[2].tool_call_id"]


async def test_a_call_answered_twice_is_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    messages = [*user("weather?"), assistant_calls(CALL), tool_result("call_1"), tool_result("call_1")]

    details = await refused(
        stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages, tools=[WEATHER]), emulators
    )

    assert "already answered by messages[2]" in details.violations["messages[3].tool_call_id"]


async def test_tool_calls_outside_assistant_messages_and_bad_arguments_are_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    bad_call = llm_pb2.ToolCall(id="call_2", name="get_weather", arguments_json='"Paris"')
    messages = [
        llm_pb2.Message(role=llm_pb2.ROLE_USER, content="hi", tool_calls=[CALL]),
        assistant_calls(bad_call),
        tool_result("call_2"),
    ]

    details = await refused(
        stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages, tools=[WEATHER]), emulators
    )

    assert "ROLE_ASSISTANT" in details.violations["messages[0].tool_calls"]
    assert "JSON object" in details.violations["messages[1].tool_calls[0].arguments_json"]


# --- response format, reasoning, user -------------------------------------------------------------


@pytest.mark.parametrize(
    ("response_format", "field", "words"),
    [
        (
            llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
            "response_format.schema_json",
            "required",
        ),
        (
            llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json='{"type": 5}'),
            "response_format.schema_json",
            "not a valid JSON Schema",
        ),
        (
            llm_pb2.ResponseFormat(
                type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="a b", schema_json='{"type": "object"}'
            ),
            "response_format.name",
            "a-z",
        ),
        (
            llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT, schema_json="{}"),
            "response_format.schema_json",
            "JSON_SCHEMA only",
        ),
        (
            llm_pb2.ResponseFormat(type=llm_pb2.ResponseFormatType.ValueType(9)),
            "response_format.type",
            "RESPONSE_FORMAT_TYPE_TEXT",
        ),
    ],
)
async def test_a_malformed_response_format_is_refused_naming_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    emulators: Emulators,
    response_format: llm_pb2.ResponseFormat,
    field: str,
    words: str,
) -> None:
    request = llm_pb2.CompleteRequest(
        model=MODELS["openai"], messages=user("hi"), response_format=response_format
    )

    details = await refused(stub, request, emulators)

    assert words in details.violations[field]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"reasoning": llm_pb2.Reasoning(budget_tokens=-1)}, "reasoning.budget_tokens"),
        ({"reasoning": llm_pb2.Reasoning(effort=llm_pb2.ReasoningEffort.ValueType(8))}, "reasoning.effort"),
        ({"user": "user\n42"}, "user"),
    ],
)
async def test_malformed_reasoning_control_and_user_ids_are_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, fields: dict[str, Any], field: str
) -> None:
    request = llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi"), **fields)

    details = await refused(stub, request, emulators)

    assert field in details.violations


async def test_reasoning_from_an_unknown_provider_is_refused(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    thought = llm_pb2.ReasoningPart(text="hmm", signature=b"sig", provider="mistral")
    messages = [*user("hi"), llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, content="yo", reasoning=[thought])]
    messages += user("and?")

    details = await refused(
        stub, llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=messages), emulators
    )

    assert "anthropic" in details.violations["messages[1].reasoning[0].provider"]


# --- capabilities ---------------------------------------------------------------------------------


@pytest.fixture
async def limited_stub(
    start_gateway: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[llm_pb2_grpc.LLMServiceAsyncStub]:
    """A stub of a gateway that also knows a text-only model, `gpt-text-only`."""
    overlay = tmp_path / "catalogue.toml"
    overlay.write_text(
        "[models.'gpt-text-only']\nprovider = 'openai'\ntier = 'fast'\ncontext_window = 8000\n"
        "max_output_tokens = 1000\ninput = 1\noutput = 2\ntools = false\nstructured_output = false\n"
        "image_input = false\ndocument_input = false\nreasoning = false\n"
    )
    app: App = await start_gateway(
        llm_catalogue_path=str(overlay), allowed_models="gpt-5.4-mini,gpt-text-only"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield llm_pb2_grpc.LLMServiceStub(channel)


@pytest.mark.parametrize(
    ("fields", "field", "capability"),
    [
        ({"tools": [WEATHER]}, "tools", "tools"),
        (
            {"response_format": llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)},
            "response_format",
            "structured output",
        ),
        ({"reasoning": llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_LOW)}, "reasoning", "reasoning"),
        (
            {
                "messages": [
                    llm_pb2.Message(
                        role=llm_pb2.ROLE_USER,
                        parts=[llm_pb2.ContentPart(image=llm_pb2.Image(data=PNG, mime_type="image/png"))],
                    )
                ]
            },
            "messages[0].parts[0].image",
            "images",
        ),
        (
            {
                "messages": [
                    llm_pb2.Message(
                        role=llm_pb2.ROLE_USER,
                        content="summarise",
                        parts=[
                            llm_pb2.ContentPart(
                                document=llm_pb2.Document(data=b"%PDF-1.7", mime_type="application/pdf")
                            )
                        ],
                    )
                ]
            },
            "messages[0].parts[0].document",
            "documents",
        ),
        (
            {"messages": [*user("weather?"), assistant_calls(CALL), tool_result("call_1")]},
            "messages[1]",
            "tool calls",
        ),
    ],
)
async def test_what_the_model_cannot_do_is_refused_naming_the_model_and_the_capability(
    limited_stub: llm_pb2_grpc.LLMServiceAsyncStub,
    emulators: Emulators,
    fields: dict[str, Any],
    field: str,
    capability: str,
) -> None:
    request = llm_pb2.CompleteRequest(model="gpt-text-only", **({"messages": user("hi")} | fields))

    details = await refused(limited_stub, request, emulators)

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_BY_MODEL")
    assert details.metadata["model"] == "gpt-text-only"
    assert details.violations[field].startswith(f"gpt-text-only does not accept {capability}")


async def test_reasoning_control_is_refused_for_a_model_that_does_not_reason(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    request = llm_pb2.CompleteRequest(
        model=SAMPLING_MODELS["openai"],
        messages=user("hi"),
        reasoning=llm_pb2.Reasoning(effort=llm_pb2.REASONING_EFFORT_HIGH),
    )

    details = await refused(stub, request, emulators)

    assert details.reason == "UNSUPPORTED_BY_MODEL"
    assert SAMPLING_MODELS["openai"] in details.violations["reasoning"]


# --- structured output ----------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def json_schema(schema: dict[str, Any]) -> llm_pb2.ResponseFormat:
    return llm_pb2.ResponseFormat(
        type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="person", schema_json=json.dumps(schema)
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_answer_that_breaks_the_schema_is_reported_invalid_with_the_first_error(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    request = llm_pb2.CompleteRequest(
        model=MODELS[provider],
        messages=user('who? [[emulate: reply=\'{"name":"Ada","age":"old"}\']]'),
        response_format=json_schema(PERSON),
    )

    response = await stub.Complete(request, timeout=10)

    assert response.HasField("structured_output")
    assert not response.structured_output.valid
    assert response.structured_output.error == "$.age: 'old' is not of type 'integer'"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_streamed_answer_that_is_not_json_is_reported_in_done(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    request = llm_pb2.StreamRequest(
        model=MODELS[provider],
        messages=user("who? [[emulate: reply=not_json_at_all]]"),
        response_format=llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
    )

    events = [event async for event in stub.Stream(request, timeout=10)]

    done = events[-1].done
    assert not done.structured_output.valid
    assert done.structured_output.error.startswith("the answer is not JSON")


async def test_a_text_answer_carries_no_structured_output_check(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10
    )

    assert not response.HasField("structured_output")
