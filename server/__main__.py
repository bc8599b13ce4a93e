"""`llm-gateway serve` (also `python -m server serve`): run the gateway until SIGTERM or SIGINT.
`llm-gateway models verify`: ask each provider which models it serves; exit 1 when an allowed one is gone.
`llm-gateway health`: the container health check.
`llm-gateway token --subject NAME`: a JWT the gateway accepts, signed with LLM_JWT_HS256_SECRET."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr, ValidationError

from server.app import (
    DRAIN_NOTICE_S,
    App,
    ConfigError,
    build_app,
    build_providers,
    check_settings,
    redactor_for,
)
from server.config import Settings
from server.core.auth import secret_problem
from server.core.lifecycle import verify
from server.emulators.base import DEMO_KEY, Emulator
from server.observability.logging import configure_logging, resolve_format
from server.providers.registry import SPECS
from server.workers import RestartPolicy, Supervisor, reserve_port

log = structlog.get_logger("llm_grpc.main")


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
        "--log-format",
        choices=("auto", "json", "console"),
        default=None,
        help="default: LLM_LOG_FORMAT (auto: console on a terminal, else JSON)",
    )
    serve.add_argument(
        "--shutdown-grace", type=float, default=30.0, help="seconds in-flight calls get on SIGTERM"
    )
    serve.add_argument(
        "--drain-notice",
        type=float,
        default=DRAIN_NOTICE_S,
        help="after SIGTERM, keep the port open (health NOT_SERVING, new calls refused) until no call is "
        f"in flight, at most this many seconds (default {DRAIN_NOTICE_S:g}; 0: close it at once)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving one port (SO_REUSEPORT); worker i serves metrics on --metrics-port + i",
    )
    serve.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default=None,
        help="event loop (default: LLM_EVENT_LOOP, else auto: uvloop when installed)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    check = commands.add_parser(
        "health", help="ask a running gateway's grpc.health.v1 service; exit 0 if SERVING"
    )
    check.add_argument("--target", default="127.0.0.1:50051")
    check.add_argument("--timeout", type=float, default=3.0)
    token = commands.add_parser(
        "token",
        help="print a JWT for a caller, signed with LLM_JWT_HS256_SECRET (with LLM_JWT_ISSUER, "
        "LLM_JWT_AUDIENCE and LLM_ROLES_CLAIM when set)",
    )
    token.add_argument("--subject", required=True, help="the caller's identity (the token's sub)")
    token.add_argument("--role", action="append", default=[], help="a role of LLM_ROLES (repeatable)")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires (default 3600)")
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
            key=DEMO_KEY,
            hint="to call the emulators from a gateway of your own, see docs/emulators.md",
        )
    metrics_port = None if args.metrics_port < 0 else args.metrics_port
    app: App = build_app(
        settings, host=args.host, port=args.port, metrics_port=metrics_port, reuse_port=args.reuse_port
    )
    if not args.demo:
        _warn_if_insecure(settings)
    # Signals are ours before `serving` is said: whoever reads that line may send SIGTERM at once.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await app.start()
    start = startup_lines(args.host, app.port, app.metrics_port, settings)
    log.info(
        "serving",
        address=f"{args.host}:{app.port}",
        metrics_port=app.metrics_port,
        pid=os.getpid(),
        metrics=start.metrics_url,
        grpcurl=start.grpcurl,
        models=list(settings.allowed_models),
        demo=args.demo,
    )
    if args.log_format == "console":  # a person at a terminal: the lines to copy, without log noise
        print(start.banner(args.demo), file=sys.stderr, flush=True)
    await stopping.wait()
    log.info("draining", grace_s=args.shutdown_grace, notice_s=args.drain_notice)
    await app.stop(args.shutdown_grace, notice=args.drain_notice)
    for emulator in emulators:
        await emulator.stop()
    log.info("stopped")
    return 0


@dataclass(frozen=True, slots=True)
class StartupLines:
    """What `serve` tells whoever started it: where it listens and a call to paste."""

    address: str
    metrics_url: str | None
    grpcurl: str
    tls: bool

    def banner(self, demo: bool) -> str:
        mode = " in demo mode (local emulators, canned replies, no keys)" if demo else ""
        lines = [
            f"llm-grpc is serving{mode}",
            f"  gRPC     {self.address} ({'TLS' if self.tls else 'plaintext'})",
            f"  metrics  {self.metrics_url or 'off (--metrics-port -1)'}",
            f"  try      {self.grpcurl}",
            "  stop     Ctrl-C",
        ]
        return "\n".join(lines)


def startup_lines(host: str, port: int, metrics_port: int | None, settings: Settings) -> StartupLines:
    """The address to dial (localhost for a wildcard bind), the metrics URL and a grpcurl command line
    that works as pasted (TLS and a token are placeholders to fill in)."""
    # A wildcard bind is dialled as localhost (a comparison here, not a bind).
    dial = "localhost" if host in ("0.0.0.0", "::", "") else host  # nosec B104
    address = f"{dial}:{port}"
    tls = settings.llm_tls_cert_file is not None
    command = [_grpcurl_command(), "-cacert YOUR_CA.pem" if tls else "-plaintext"]
    if not settings.llm_auth_disabled:
        command.append('-H "authorization: Bearer $TOKEN"')
    command += [
        '-d \'{"messages":[{"role":"ROLE_USER","content":"Hello"}]}\'',
        address,
        "llm.v1.LLMService/Complete",
    ]
    metrics = f"http://{dial}:{metrics_port}/metrics" if metrics_port is not None else None
    return StartupLines(address, metrics, " ".join(command), tls)


def _grpcurl_command() -> str:
    """`grpcurl` when it is on PATH, else the one `make install` put next to this Python (relative to
    the working directory when inside it, as `.venv/bin/grpcurl`)."""
    if shutil.which("grpcurl"):
        return "grpcurl"
    bundled = Path(sys.executable).with_name("grpcurl")
    if not bundled.exists():
        return "grpcurl"
    with contextlib.suppress(ValueError):
        return str(Path(os.path.abspath(bundled)).relative_to(Path.cwd()))
    return str(bundled)


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


def mint_token(settings: Settings, subject: str, roles: Sequence[str], ttl: float, now: float) -> str:
    """An HS256 JWT the gateway configured by `settings` accepts for `subject` with `roles`; ConfigError
    when it has no (usable) HS256 secret. A gateway that verifies RS256/ES256 or a JWKS takes tokens
    from whoever holds the private key: this command cannot make those."""
    secret = settings.llm_jwt_hs256_secret
    if secret is None:
        raise ConfigError(
            "token: set LLM_JWT_HS256_SECRET to the gateway's secret (tokens for LLM_JWT_PUBLIC_KEY_FILE "
            "or LLM_JWT_JWKS_FILE are signed by whoever holds the private key)"
        )
    if (problem := secret_problem(secret.get_secret_value())) is not None:
        raise ConfigError(f"token: {problem}")
    claims: dict[str, object] = {"sub": subject, "iat": int(now), "exp": int(now + ttl)}
    if roles:
        claims[settings.llm_roles_claim] = list(roles)
    if settings.llm_jwt_issuer:
        claims["iss"] = settings.llm_jwt_issuer
    if settings.llm_jwt_audience:
        claims["aud"] = settings.llm_jwt_audience
    return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.command == "health":
        sys.exit(asyncio.run(_check_health(args.target, args.timeout)))
    try:
        settings = Settings()
    except ValidationError as error:
        sys.exit(f"llm-gateway: invalid configuration: {settings_problems(error)}")
    if args.command == "token":
        try:
            print(mint_token(settings, args.subject, args.role, args.ttl, time.time()))
        except ConfigError as error:
            sys.exit(f"llm-gateway: {error}")
        return
    log_format = resolve_format(getattr(args, "log_format", None) or settings.llm_log_format, sys.stderr)
    if args.command == "serve":
        args.log_format = log_format
    configure_logging(settings.llm_log_level, log_format, redactor_for(settings))
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
        with asyncio.Runner(loop_factory=_loop_factory(args.loop or settings.llm_event_loop)) as runner:
            sys.exit(runner.run(_serve(args, settings)))
    except ConfigError as error:
        sys.exit(f"llm-gateway: {error}")


def settings_problems(error: ValidationError) -> str:
    """Each invalid setting on one line: its environment variable, the value (never a secret's) and
    what is wrong, instead of pydantic's multi-line report."""
    problems = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        name = field.upper() or "the environment"
        value = problem.get("input")
        annotation = Settings.model_fields[field].annotation if field in Settings.model_fields else None
        shown = "" if "SecretStr" in str(annotation) else f"={value!r}"
        if problem["type"].startswith("bool") and value == "":
            problems.append(f"{name} is set but empty: set it to true or false, or unset it")
        elif problem["type"].startswith("bool"):
            problems.append(f"{name}{shown} is not a boolean: use true or false (also 1/0, yes/no, on/off)")
        else:
            problems.append(f"{name}{shown}: {problem['msg']}")
    return "; ".join(problems)


def _run_workers(args: argparse.Namespace) -> int:
    """Start `args.workers` server processes on one port and keep them running (server/workers.py).

    Each worker keeps its own metrics, on its own port (--metrics-port + i; with 0, each picks a free
    one and logs it): Prometheus scrapes each, and sums add up.
    """
    held = reserve_port(args.host, args.port)
    port = held.getsockname()[1]
    if (problem := _metrics_ports_problem(args.host, args.metrics_port, args.workers)) is not None:
        held.close()
        sys.exit(f"llm-gateway: {problem}")

    def command(index: int) -> list[str]:
        argv = [sys.executable, "-m", "server", "serve", "--host", args.host, "--port", str(port)]
        argv += [
            "--metrics-port",
            str(args.metrics_port + index if args.metrics_port > 0 else args.metrics_port),
        ]
        argv += ["--shutdown-grace", str(args.shutdown_grace), "--reuse-port"]
        argv += ["--drain-notice", str(args.drain_notice)]
        argv += ["--demo"] if args.demo else []
        argv += ["--log-format", args.log_format] if args.log_format else []
        argv += ["--loop", args.loop] if args.loop else []
        return argv

    log.info("supervising", address=f"{args.host}:{port}", workers=args.workers)
    with held:
        return Supervisor(command, args.workers, RestartPolicy()).run()


def _metrics_ports_problem(host: str, first: int, workers: int) -> str | None:
    """Why a worker could not serve its metrics port (--metrics-port + i), checked before any starts: a
    worker that cannot bind would otherwise die and be restarted forever."""
    if first <= 0:
        return None  # 0: each picks a free port; -1: none
    for index in range(workers):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server binds
            try:
                probe.bind((host, first + index))
            except OSError as error:
                return (
                    f"cannot serve metrics on {host}:{first + index} (worker {index}): "
                    f"{error.strerror or error}; choose another port with --metrics-port (worker i serves "
                    "on --metrics-port + i; 0: any free ports, -1: no metrics endpoint)"
                )
    return None


def _loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """`asyncio`: asyncio's own loop; `uvloop`: uvloop (an error when it is not installed); `auto`: uvloop
    when installed (8-40 % more throughput under load), else asyncio's own loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            sys.exit("llm-gateway: --loop uvloop, but uvloop is not installed")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


if __name__ == "__main__":
    main()
