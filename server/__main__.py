"""`llm-gateway serve` (also `python -m server serve`): run the gateway until SIGTERM or SIGINT.
`llm-gateway models verify`: ask each provider which models it serves; exit 1 when an allowed one is gone.
`llm-gateway health`: the container health check."""

from __future__ import annotations

import argparse
import asyncio
import signal

# Only to start this same program as --workers, with an argv built here (no caller input).
import subprocess  # nosec B404
import sys
from collections.abc import Callable, Sequence

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr, ValidationError

from server.app import (
    App,
    ConfigError,
    build_app,
    build_providers,
    check_settings,
    redactor_for,
)
from server.config import Settings
from server.core.lifecycle import verify
from server.emulators.base import Emulator
from server.observability.logging import configure_logging
from server.providers.registry import SPECS

log = structlog.get_logger("llm_grpc.main")

DEMO_KEY = "demo-key-not-secret"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="llm-gateway", description="One gRPC gateway to OpenAI, Anthropic and Gemini."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the llm.v1.LLMService gRPC API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051)")
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="Prometheus /metrics port (default 9464; -1 turns it off)",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="serve with bundled provider emulators instead of the real providers (no keys, no network)",
    )
    serve.add_argument(
        "--log-format", choices=("json", "console"), default=None, help="default: LLM_LOG_FORMAT"
    )
    serve.add_argument(
        "--shutdown-grace", type=float, default=30.0, help="seconds in-flight calls get on SIGTERM"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving one port (SO_REUSEPORT); worker i serves metrics on --metrics-port + i",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    check = commands.add_parser(
        "health", help="ask a running gateway's grpc.health.v1 service; exit 0 if SERVING"
    )
    check.add_argument("--target", default="127.0.0.1:50051")
    check.add_argument("--timeout", type=float, default=3.0)
    models = commands.add_parser("models", help="check the allowed models against the providers")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    verify = models_commands.add_parser(
        "verify",
        help="list each provider's models through its SDK; exit 1 if it does not serve an allowed model",
    )
    verify.add_argument("--demo", action="store_true", help="ask the bundled emulators instead")
    verify.add_argument("--timeout", type=float, default=30.0, help="seconds per provider (default 30)")
    return parser.parse_args(argv)


async def verify_models(settings: Settings, timeout: float, demo: bool = False) -> tuple[int, str]:
    """`llm-gateway models verify`: the exit code (0 all served, 1 an allowed model is not served, 3 a
    provider could not be asked) and the report."""
    emulators: list[Emulator] = []
    if demo:
        settings, emulators = await _start_demo(settings)
    # Verifying serves nothing: transport and caller authentication settings do not matter here.
    settings = settings.model_copy(update={"llm_allow_plaintext": True, "llm_auth_disabled": True})
    providers = {}
    try:
        plan = check_settings(settings)
        providers = build_providers(settings, plan)
        results = await verify(providers, plan.needed, timeout)
    finally:
        await asyncio.gather(*(provider.aclose() for provider in providers.values()))
        for emulator in emulators:
            await emulator.stop()
    lines = []
    for result in results:
        if result.error:
            lines.append(f"{result.provider}: could not list models: {result.error}")
        for model in result.allowed:
            if not result.error:
                state = "NOT SERVED" if model in result.missing else "served"
                lines.append(f"{result.provider}: {model}: {state}")
    code = 1 if any(r.missing for r in results) else 3 if any(r.error for r in results) else 0
    return code, "\n".join(lines)


async def _check_health(target: str, timeout: float) -> int:
    """The container HEALTHCHECK: grpc.health.v1 Check of the whole server, like grpc_health_probe."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            print(f"unhealthy: {error.code().name} {error.details()}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    return 0 if serving else 1


async def _start_demo(settings: Settings) -> tuple[Settings, list[Emulator]]:
    """Start every registered provider's emulator on loopback and point its standard instance at it."""
    update: dict[str, object] = {"llm_allow_plaintext": True, "llm_auth_disabled": True}
    emulators: list[Emulator] = []
    for spec in SPECS.values():
        emulator = spec.emulator(DEMO_KEY)
        emulators.append(emulator)
        update[spec.base_url_setting.lower()] = await emulator.start("127.0.0.1", 0)
        update[spec.key_settings[0].lower()] = SecretStr(DEMO_KEY)
    return settings.model_copy(update=update), emulators


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    emulators: list[Emulator] = []
    if args.demo:
        settings, emulators = await _start_demo(settings)
        log.warning(
            "DEMO MODE: providers are local emulators with canned replies; no real model is called; "
            "plaintext and no authentication",
            openai=settings.openai_base_url,
            anthropic=settings.anthropic_base_url,
            gemini=settings.gemini_base_url,
        )
    metrics_port = None if args.metrics_port < 0 else args.metrics_port
    app: App = build_app(
        settings, host=args.host, port=args.port, metrics_port=metrics_port, reuse_port=args.reuse_port
    )
    if not args.demo:
        _warn_if_insecure(settings)
    await app.start()
    log.info(
        "serving", address=f"{args.host}:{app.port}", models=list(settings.allowed_models), demo=args.demo
    )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("draining", grace_s=args.shutdown_grace)
    await app.stop(args.shutdown_grace)
    for emulator in emulators:
        await emulator.stop()
    log.info("stopped")
    return 0


def _warn_if_insecure(settings: Settings) -> None:
    """One loud line when a real (non-demo) gateway runs without TLS or without authentication."""
    plaintext = settings.llm_tls_cert_file is None and settings.llm_allow_plaintext
    if plaintext or settings.llm_auth_disabled:
        log.warning(
            "insecure",
            plaintext=plaintext,
            authentication=not settings.llm_auth_disabled,
            hint="every caller that reaches this port can spend the providers' budget"
            + (" and read traffic in the clear" if plaintext else "")
            + "; fine behind a mesh with mTLS and its own authorisation, not on an open network",
        )


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.command == "health":
        sys.exit(asyncio.run(_check_health(args.target, args.timeout)))
    try:
        settings = Settings()
    except ValidationError as error:
        sys.exit(f"llm-gateway: invalid configuration:\n{error}")
    configure_logging(
        settings.llm_log_level,
        getattr(args, "log_format", None) or settings.llm_log_format,
        redactor_for(settings),
    )
    if args.command == "models":
        try:
            code, report = asyncio.run(verify_models(settings, args.timeout, args.demo))
        except ConfigError as error:
            sys.exit(f"llm-gateway: {error}")
        print(report)
        sys.exit(code)
    if args.workers > 1:
        sys.exit(_run_workers(args))
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            sys.exit(runner.run(_serve(args, settings)))
    except ConfigError as error:
        sys.exit(f"llm-gateway: {error}")


def _run_workers(args: argparse.Namespace) -> int:
    """Start `args.workers` server processes on one port and pass SIGTERM/SIGINT on to them.

    The kernel spreads connections over the processes (SO_REUSEPORT). Each worker keeps its own
    metrics, on its own port (--metrics-port + i): Prometheus scrapes each, and sums add up.
    """
    if args.port == 0:
        sys.exit("llm-gateway: --workers needs a fixed --port")
    children = []
    for index in range(args.workers):
        command = [sys.executable, "-m", "server", "serve", "--host", args.host, "--port", str(args.port)]
        command += ["--metrics-port", str(args.metrics_port + index if args.metrics_port >= 0 else -1)]
        command += ["--shutdown-grace", str(args.shutdown_grace), "--reuse-port"]
        command += ["--demo"] if args.demo else []
        command += ["--log-format", args.log_format] if args.log_format else []
        # The argv is built here from our own flags: no caller input reaches it.
        children.append(subprocess.Popen(command))  # nosec B603
    log.info("workers", pids=[child.pid for child in children])

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return 0 if all(code == 0 for code in codes) else 1


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (8-40 % more throughput under load), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


if __name__ == "__main__":
    main()
