"""`llm-grpc`: call the gateway from a terminal. Streamed tokens print as they arrive.

    llm-grpc stream "Tell me a joke" --model claude-haiku-4-5
    echo "Summarise this" | llm-grpc complete --json
    llm-grpc complete "Who is in this picture?" --image photo.jpg --json-schema person.schema.json
    llm-grpc models
    llm-grpc health
    llm-grpc select --tier premium
    llm-grpc metrics --json
    llm-grpc quota

Global options (`--target`, `--json`, `--token`, `--tls`, ...) go before or after the subcommand.
`--json` prints one JSON object (a stream: one per line) with snake_case keys; every field is always
present, enums by their short name (`STOP`, `FAST`, `SERVING`) — see clients/README.md for the fields.

Exit codes: 0 success, 1 `health` answered but the gateway is not SERVING, 2 usage, otherwise 10 + the
gRPC status code (e.g. 13 for INVALID_ARGUMENT = 3). Output cut short by its reader (`| head`) ends the
command quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from llm_grpc.v1 import llm_pb2
from llm_grpc_client import agents
from llm_grpc_client.client import AsyncLLMClient
from llm_grpc_client.errors import LLMError

STATUS_EXIT_BASE = 10
NOT_SERVING_EXIT = 1
"""`health`: the gateway answered, but not SERVING (scripts and probes rely on the code)."""
DEFAULT_TARGET = "localhost:50051"
TARGET_ENV = "LLM_GRPC_TARGET"
TOKEN_ENV = "LLM_GRPC_TOKEN"  # nosec B105 (the name of a variable, not a token)
TIERS = ("fast", "balanced", "premium")
COMPLEXITIES = ("simple", "moderate", "complex")


def _version() -> str:
    try:
        return version("llm-grpc-client")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def _global_options(with_defaults: bool) -> argparse.ArgumentParser:
    """The options every subcommand takes too. Only the top-level parser sets defaults: a subcommand's
    parser leaves an option it did not see alone instead of resetting what came before the subcommand."""

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options (before or after the subcommand)")
    group.add_argument(
        "--target",
        default=default(os.environ.get(TARGET_ENV) or DEFAULT_TARGET),
        help=f"gateway address (default ${TARGET_ENV}, else {DEFAULT_TARGET})",
    )
    group.add_argument("--timeout", type=float, default=default(120.0), help="deadline in seconds")
    group.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output (snake_case)"
    )
    group.add_argument("--source-agent", default=default("llm-grpc-cli"), help="a2a-source-agent")
    group.add_argument("--session-id", default=default(""), help="a2a-session-id")
    group.add_argument("--trace-id", default=default(None), help="a2a-trace-id")
    group.add_argument(
        "--token",
        default=default(os.environ.get(TOKEN_ENV) or None),
        help=f"bearer token (default ${TOKEN_ENV}; the environment keeps it out of `ps`)",
    )
    group.add_argument("--tls", action="store_true", default=default(False), help="TLS with the system roots")
    group.add_argument("--ca", type=Path, default=default(None), help="PEM CA to trust (implies --tls)")
    group.add_argument("--cert", type=Path, default=default(None), help="PEM client certificate (mTLS)")
    group.add_argument("--key", type=Path, default=default(None), help="PEM client private key (mTLS)")
    group.add_argument("--version", action="version", version=f"llm-grpc {_version()}")
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-grpc", description="Call the llm-grpc gateway.", parents=[_global_options(True)]
    )
    common = [_global_options(False)]
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("complete", "stream"):
        call = commands.add_parser(name, help=f"{name} a prompt (argument or stdin)", parents=common)
        call.add_argument("prompt", nargs="?", help="the prompt; read from stdin when absent")
        call.add_argument("--model", default="", help="model id (default: the gateway's default)")
        call.add_argument("--tier", choices=TIERS, default=None, help="with no --model: cheapest of a tier")
        call.add_argument(
            "--complexity", choices=COMPLEXITIES, default=None, help="with no --model or --tier"
        )
        call.add_argument("--system", default=None)
        call.add_argument("--temperature", type=float, default=None)
        call.add_argument("--max-tokens", type=int, default=None)
        call.add_argument("--stop", action="append", default=[])
        call.add_argument(
            "--json-schema",
            metavar="FILE",
            type=Path,
            default=None,
            help="answer as JSON matching this JSON Schema file; the gateway reports whether it does",
        )
        call.add_argument(
            "--image", metavar="FILE", action="append", default=[], help="attach an image (repeatable)"
        )
        call.add_argument(
            "--document", metavar="FILE", action="append", default=[], help="attach a PDF (repeatable)"
        )
        call.add_argument(
            "--effort", choices=("low", "medium", "high"), default=None, help="reasoning effort"
        )
    commands.add_parser("models", help="list allowed models", parents=common)
    commands.add_parser("health", help="provider health", parents=common)
    select = commands.add_parser("select", help="the cheapest allowed model of a tier", parents=common)
    select.add_argument("--tier", choices=TIERS, default=None)
    select.add_argument("--complexity", choices=COMPLEXITIES, default=None)
    commands.add_parser("metrics", help="the gateway's totals since start", parents=common)
    quota = commands.add_parser("quota", help="your rate limits and budgets", parents=common)
    quota.add_argument("--model", default="", help="only the limits that apply to this model")
    return parser


def to_json(message: Message) -> dict[str, Any]:
    """A message as a dict with its proto field names: every field present (unset optional ones as
    None), enums by short name (FINISH_REASON_STOP → STOP), 64-bit integers as numbers, timestamps as
    RFC 3339 strings. The --json output, stable as the proto's field names are."""
    if isinstance(message, Timestamp):
        return message.ToJsonString() if message.seconds or message.nanos else None  # type: ignore[return-value]
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.has_presence and not field.is_repeated and not message.HasField(field.name):
            result[field.name] = None  # an unset optional scalar or message (a verdict not given)
        elif field.is_repeated:
            result[field.name] = [_value(field, item) for item in value]
        else:
            result[field.name] = _value(field, value)
    return result


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field, value)
    return value


def enum_name(field: Any, number: int) -> str:
    """The enum value's name without the enum's prefix: FINISH_REASON_STOP → STOP."""
    enum = field.enum_type
    described = enum.values_by_number.get(number)
    if described is None:
        return str(number)
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    return str(described.name).removeprefix(prefix)


def _field(message: Message, name: str) -> Any:
    return message.DESCRIPTOR.fields_by_name[name]


def _print_json(message: Message) -> None:
    print(dumps(to_json(message)), flush=True)


def dumps(value: Any) -> str:
    """JSON as json.dumps writes it, except that numbers with a fraction are in fixed decimals
    (`0.00001775`, not `1.7749999999999998e-05`): costs read as money, and any JSON reader parses both."""
    if isinstance(value, float) and math.isfinite(value):
        return decimal_text(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(item) for item in value) + "]"
    return json.dumps(value)


def decimal_text(value: float) -> str:
    """A float in fixed decimals, to 12 places (below any price per token), without trailing zeros."""
    text = format(Decimal(repr(round(value, 12))), "f")
    return text if "." in text or "e" in text.lower() else f"{text}.0"


def _read_prompt(prompt: str | None) -> str:
    """The argument, or stdin without its trailing newline (what `echo` and editors add)."""
    return prompt if prompt is not None else sys.stdin.read().rstrip("\r\n")


def _client(args: argparse.Namespace) -> AsyncLLMClient:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return AsyncLLMClient(
        args.target,
        source_agent=args.source_agent,
        session_id=args.session_id,
        timeout=args.timeout,
        token=args.token,
        tls=args.tls,
        root_certificates=read(args.ca),
        private_key=read(args.key),
        certificate_chain=read(args.cert),
    )


async def _run(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        if args.command in ("complete", "stream"):
            options = {
                "model": args.model,
                "tier": args.tier,
                "complexity": args.complexity,
                "system": args.system,
                "temperature": args.temperature,
                "max_tokens": args.max_tokens,
                "stop": args.stop,
                "trace_id": args.trace_id,
                "response_format": _schema_format(args.json_schema),
                "reasoning": agents.reasoning(args.effort) if args.effort else None,
            }
            prompt = _prompt(_read_prompt(args.prompt), args.image, args.document)
            if args.command == "complete":
                response = await client.complete(prompt, **options)
                if args.json:
                    _print_json(response)
                else:
                    print(response.content)
                    _print_summary(response)
                return 0
            stream = client.stream(prompt, **options)
            async for delta in stream:
                if args.json:
                    print(dumps({"delta": delta}), flush=True)
                else:
                    print(delta, end="", flush=True)
            done = stream.done
            if done is not None:
                if args.json:
                    print(dumps({"done": to_json(done)}), flush=True)
                else:
                    print()
                    _print_summary(done)
            return 0
        reply: Message
        if args.command == "select":
            reply = await client.select_model(args.tier, args.complexity)
        elif args.command == "quota":
            reply = await client.get_quota(args.model)
        else:
            calls: dict[str, Callable[[], Any]] = {
                "models": client.list_models,
                "health": client.check_health,
                "metrics": client.get_metrics,
            }
            reply = await calls[args.command]()
        if args.json:
            _print_json(reply)
        else:
            print(_TEXT[args.command](reply))
        if isinstance(reply, llm_pb2.CheckHealthResponse) and reply.status != llm_pb2.HEALTH_STATUS_SERVING:
            return NOT_SERVING_EXIT
        return 0


def _prompt(text: str, images: Sequence[str], documents: Sequence[str]) -> str | list[llm_pb2.Message]:
    """The prompt text, with the attached files as parts of one user message when there are any."""
    parts = [agents.image(path) for path in images] + [agents.document(path) for path in documents]
    return [agents.user(text, *parts)] if parts else text


def _schema_format(path: Path | None) -> llm_pb2.ResponseFormat | None:
    """The JSON-schema response format of a schema file, named after the file (`person.schema.json`:
    `person`)."""
    if path is None:
        return None
    schema = json.loads(path.read_text(encoding="utf-8"))
    stem = path.name.split(".")[0]
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in stem)[:64]
    return agents.json_schema(schema, name=name or "response")


def _print_summary(reply: llm_pb2.CompleteResponse | llm_pb2.StreamDone) -> None:
    """Who served, why it stopped, tokens and time, on stderr so stdout holds only the text; then the
    tool calls and the gateway's structured-output verdict, when there are any."""
    usage = reply.usage
    finish = enum_name(_field(reply, "finish_reason"), reply.finish_reason)
    cached = f" (cached {usage.cached_input_tokens})" if usage.cached_input_tokens else ""
    thinking = f" (reasoning {usage.reasoning_tokens})" if usage.reasoning_tokens else ""
    print(
        f"[{reply.provider}/{reply.model}] {finish} prompt={usage.prompt_tokens}{cached} "
        f"completion={usage.completion_tokens}{thinking} tokens, ${reply.cost_usd:.6f}, "
        f"{reply.latency_ms:.0f} ms",
        file=sys.stderr,
    )
    for call in reply.tool_calls:
        print(f"[tool call {call.id}] {call.name}({call.arguments_json})", file=sys.stderr)
    if reply.HasField("structured_output"):
        check = reply.structured_output
        verdict = "valid" if check.valid else f"INVALID: {check.error}"
        print(f"[structured output {verdict}]", file=sys.stderr)


def _models_text(reply: llm_pb2.ListModelsResponse) -> str:
    lines = [f"{'MODEL':<28} {'PROVIDER':<10} {'TIER':<9} {'CONTEXT':>9} {'$IN/M':>8} {'$OUT/M':>8}"]
    for model in reply.models:
        tier = enum_name(_field(model, "tier"), model.tier)
        default = "  (default)" if model.id == reply.default_model else ""
        lines.append(
            f"{model.id:<28} {model.provider:<10} {tier:<9} {model.context_window:>9} "
            f"{model.input_usd_per_million:>8.2f} {model.output_usd_per_million:>8.2f}{default}"
        )
    return "\n".join(lines)


def _health_text(reply: llm_pb2.CheckHealthResponse) -> str:
    lines = [f"gateway: {enum_name(_field(reply, 'status'), reply.status)}"]
    for provider in reply.providers:
        status = enum_name(_field(provider, "status"), provider.status)
        error = f" ({provider.error})" if provider.error else ""
        lines.append(f"{provider.provider}: {status}, {provider.latency_ms:.0f} ms{error}")
    return "\n".join(lines)


def _select_text(reply: llm_pb2.SelectModelResponse) -> str:
    tier = enum_name(_field(reply, "tier"), reply.tier)
    return f"{reply.model} ({reply.provider}, {tier}): {reply.reason}"


def _metrics_text(reply: llm_pb2.GetMetricsResponse) -> str:
    lines = [
        f"calls={reply.total_requests} tokens={reply.total_tokens} cost=${reply.total_cost_usd:.6f} "
        f"mean_latency={reply.mean_latency_ms:.0f} ms governance_violations={reply.governance_violations}"
    ]
    for p in reply.providers:
        lines.append(
            f"{p.provider}: calls={p.requests} errors={p.errors} tokens={p.tokens} cost=${p.cost_usd:.6f}"
        )
    return "\n".join(lines)


def _quota_text(reply: llm_pb2.GetQuotaResponse) -> str:
    lines = [f"identity: {reply.identity}"]
    for q in reply.quotas:
        kind = enum_name(_field(q, "kind"), q.kind)
        reset = f", resets {q.reset_time.ToJsonString()}" if q.reset_time.seconds else ""
        money = q.kind in (llm_pb2.QUOTA_KIND_USD_PER_DAY, llm_pb2.QUOTA_KIND_USD_PER_MONTH)
        used, limit, left = (_amount(v, money) for v in (q.used, q.limit, q.remaining))
        lines.append(f"{kind} ({q.scope}): used {used} of {limit}, {left} left{reset}")
    if not reply.quotas:
        lines.append("no limits apply")
    return "\n".join(lines)


def _amount(value: float, money: bool) -> str:
    """Dollars in fixed decimals ($0.000018, never 1.8e-05); counts as whole numbers."""
    if money:
        return "$" + decimal_text(round(value, 6)).rstrip("0").rstrip(".")
    return f"{value:.0f}" if value == int(value) else decimal_text(value)


_TEXT: dict[str, Callable[[Any], str]] = {
    "models": _models_text,
    "health": _health_text,
    "select": _select_text,
    "metrics": _metrics_text,
    "quota": _quota_text,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together (mTLS)")
    try:
        code = asyncio.run(_run(args))
    except LLMError as error:
        print(f"llm-grpc: {error}", file=sys.stderr)
        code = STATUS_EXIT_BASE + error.code.value[0]
    except BrokenPipeError:
        # The reader stopped reading (`| head`): end quietly, as other command-line tools do. Python
        # would report the pipe again when it flushes stdout at exit: point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except OSError as error:  # an unreadable --ca / --cert / --key
        print(f"llm-grpc: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
