"""`llm-grpc`: call the gateway from a terminal. Streamed tokens print as they arrive.

    llm-grpc stream "Tell me a joke" --model claude-haiku-4-5
    echo "Summarise this" | llm-grpc complete --json
    llm-grpc complete "Who is in this picture?" --image photo.jpg --json-schema person.schema.json
    llm-grpc models
    llm-grpc health

Exit codes: 0 success, 2 usage, otherwise 10 + the gRPC status code (e.g. 13 for INVALID_ARGUMENT = 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from google.protobuf import json_format

from llm_grpc.v1 import llm_pb2
from llm_grpc_client import agents
from llm_grpc_client.client import AsyncLLMClient
from llm_grpc_client.errors import LLMError

STATUS_EXIT_BASE = 10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-grpc", description="Call the llm-grpc gateway.")
    parser.add_argument(
        "--target", default="localhost:50051", help="gateway address (default localhost:50051)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--source-agent", default="llm-grpc-cli")
    parser.add_argument("--session-id", default="")
    parser.add_argument("--trace-id", default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("complete", "stream"):
        call = commands.add_parser(name, help=f"{name} a prompt (argument or stdin)")
        call.add_argument("prompt", nargs="?", help="the prompt; read from stdin when absent")
        call.add_argument("--model", default="", help="model id (default: the gateway's default)")
        call.add_argument("--system", default=None)
        call.add_argument("--temperature", type=float, default=None)
        call.add_argument("--max-tokens", type=int, default=None)
        call.add_argument("--stop", action="append", default=[])
        call.add_argument(
            "--json-schema",
            metavar="FILE",
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
    commands.add_parser("models", help="list allowed models")
    commands.add_parser("health", help="provider health")
    return parser


async def _run(args: argparse.Namespace) -> int:
    async with AsyncLLMClient(
        args.target, source_agent=args.source_agent, session_id=args.session_id, timeout=args.timeout
    ) as client:
        if args.command in ("complete", "stream"):
            text = args.prompt if args.prompt is not None else sys.stdin.read()
            parts = [agents.image(path) for path in args.image] + [
                agents.document(path) for path in args.document
            ]
            prompt: str | list[llm_pb2.Message] = [agents.user(text, *parts)] if parts else text
            options = {
                "model": args.model,
                "system": args.system,
                "temperature": args.temperature,
                "max_tokens": args.max_tokens,
                "stop": args.stop,
                "trace_id": args.trace_id,
                "response_format": _schema_format(args.json_schema),
                "reasoning": agents.reasoning(args.effort) if args.effort else None,
            }
            if args.command == "complete":
                response = await client.complete(prompt, **options)
                if args.json:
                    print(json_format.MessageToJson(response))
                else:
                    print(response.content)
                    _print_usage(response.usage, response.provider, response.model, response.latency_ms)
                    _print_check(response)
                return 0
            stream = client.stream(prompt, **options)
            async for delta in stream:
                if args.json:
                    print(json.dumps({"delta": delta}), flush=True)
                else:
                    print(delta, end="", flush=True)
            done = stream.done
            if done is not None:
                if args.json:
                    print(json.dumps({"done": json_format.MessageToDict(done)}))
                else:
                    print()
                    _print_usage(done.usage, done.provider, done.model, done.latency_ms)
                    _print_check(done)
            return 0
        reply = await (client.list_models() if args.command == "models" else client.check_health())
        print(json_format.MessageToJson(reply))
        return 0


def _schema_format(path: str | None) -> llm_pb2.ResponseFormat | None:
    """The JSON-schema response format of a schema file (its file name, minus extensions, names it)."""
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        schema = json.load(file)
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in path.rsplit("/", 1)[-1].split(".")[0])
    return agents.json_schema(schema, name=name[:64] or "response")


def _print_check(response: llm_pb2.CompleteResponse | llm_pb2.StreamDone) -> None:
    """The gateway's structured-output verdict, when the call asked for JSON."""
    if response.HasField("structured_output"):
        check = response.structured_output
        verdict = "valid" if check.valid else f"INVALID: {check.error}"
        print(f"[structured output {verdict}]", file=sys.stderr)


def _print_usage(usage: llm_pb2.Usage, provider: str, model: str, latency_ms: float) -> None:
    cached = f" (cached {usage.cached_input_tokens})" if usage.cached_input_tokens else ""
    thinking = f" (reasoning {usage.reasoning_tokens})" if usage.reasoning_tokens else ""
    print(
        f"[{provider}/{model}] prompt={usage.prompt_tokens}{cached} "
        f"completion={usage.completion_tokens}{thinking} tokens, {latency_ms:.0f} ms",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = asyncio.run(_run(args))
    except LLMError as error:
        print(f"llm-grpc: {error}", file=sys.stderr)
        code = STATUS_EXIT_BASE + error.code.value[0]
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
