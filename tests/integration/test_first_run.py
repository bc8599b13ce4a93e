"""A newcomer's first run: `llm-gateway serve --demo` says where it listens and what to paste, logs for
people on a terminal and JSON otherwise, and a bad environment value is one clear line."""

from __future__ import annotations

import json
import os
import pty
import select
import shlex

# The gateway and grpcurl are run with argv built here.
import subprocess  # nosec B404
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from server.__main__ import mint_token, settings_problems, startup_lines
from server.app import build_authenticator
from server.config import Settings
from tests.helpers import start_demo_server

GRPCURL = str(Path(sys.executable).with_name("grpcurl"))
BASE_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.endswith("_API_KEY") and not k.startswith(("LLM_", "ALLOWED_"))
}


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # nosec B603
        [sys.executable, "-m", "server", "serve", "--port", "0"],
        env=BASE_ENV | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _paste(command: str) -> subprocess.CompletedProcess[str]:
    """Run a printed grpcurl line as a person would paste it (our grpcurl standing in for theirs)."""
    argv = shlex.split(command)
    argv[0] = GRPCURL
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)  # nosec B603


def test_an_empty_boolean_setting_is_one_clear_line() -> None:
    result = _serve({"OPENAI_API_KEY": "sk-x", "LLM_ALLOW_PLAINTEXT": ""})

    assert result.returncode != 0
    assert result.stderr.strip() == (
        "llm-gateway: invalid configuration: LLM_ALLOW_PLAINTEXT is set but empty: set it to true or "
        "false, or unset it"
    )


@pytest.mark.parametrize(
    "variable", ["LLM_AUTH_DISABLED", "LLM_LIMITS_FAIL_OPEN", "GOOGLE_GENAI_USE_VERTEXAI"]
)
def test_every_empty_boolean_setting_is_named(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "")
    with pytest.raises(ValidationError) as invalid:
        Settings()

    assert (
        settings_problems(invalid.value)
        == f"{variable} is set but empty: set it to true or false, or unset it"
    )


def test_a_secret_value_is_never_echoed() -> None:
    with pytest.raises(ValidationError) as invalid:
        Settings(llm_jwt_hs256_secret=8675309)  # type: ignore[arg-type]

    problems = settings_problems(invalid.value)
    assert problems.startswith("LLM_JWT_HS256_SECRET: ")
    assert "8675309" not in problems


def test_the_serving_line_gives_the_addresses_and_a_grpcurl_line_that_works(tmp_path: Path) -> None:
    server = start_demo_server(env=BASE_ENV)
    try:
        called = _paste(server.serving["grpcurl"])
        metrics = server.serving["metrics"]
    finally:
        code = server.stop()

    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["content"] == "emulator reply: Hello"
    assert metrics.startswith("http://127.0.0.1:")
    assert metrics.endswith("/metrics")
    assert code == 0


def test_logs_are_json_lines_when_stderr_is_not_a_terminal() -> None:
    server = start_demo_server(env={key: value for key, value in BASE_ENV.items() if key != "LLM_LOG_FORMAT"})
    code = server.stop()
    server.log.wait_for(lambda line: line.get("event") == "stopped")

    lines = [line.rstrip("\n") for line in server.log.raw]
    assert code == 0
    assert [json.loads(line)["event"] for line in lines if "serving" in line or "stopped" in line]
    assert all(line.startswith("{") for line in lines)


def _read_until(fd: int, marker: str, process: subprocess.Popen[bytes]) -> str:
    """What the terminal showed until `marker` (a blocking read on each output, not a sleep)."""
    seen = b""
    deadline = time.monotonic() + 60
    while marker.encode() not in seen:
        assert process.poll() is None, seen.decode(errors="replace")
        assert time.monotonic() < deadline, f"no {marker!r} within 60 s:\n{seen.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            seen += os.read(fd, 65536)
    return seen.decode(errors="replace")


def test_a_terminal_gets_console_logs_and_a_banner_to_copy_from() -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(  # nosec B603
        [sys.executable, "-m", "server", "serve", "--demo", "--port", "0", "--metrics-port", "0"],
        env=BASE_ENV,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        shown = _read_until(controller, "stop     Ctrl-C", process)
        banner = shown[shown.index("llm-grpc is serving") :]
        grpcurl = next(line for line in banner.splitlines() if line.strip().startswith("try"))
        called = _paste(grpcurl.strip().removeprefix("try").strip())
    finally:
        process.terminate()
        code = process.wait(timeout=60)
        os.close(controller)

    assert not shown.lstrip().startswith("{")  # console lines, not JSON
    assert "DEMO MODE" in shown
    assert "  gRPC     127.0.0.1:" in banner
    assert "  metrics  http://127.0.0.1:" in banner
    assert called.returncode == 0, called.stderr
    assert code == 0


def test_the_grpcurl_line_asks_for_a_ca_and_a_token_when_the_gateway_wants_them(tmp_path: Path) -> None:
    settings = Settings(
        llm_tls_cert_file=tmp_path / "server.pem",
        llm_tls_key_file=tmp_path / "server.key",
        llm_auth_disabled=False,
        llm_jwt_hs256_secret=SecretStr("x" * 40),
    )

    lines = startup_lines("0.0.0.0", 50051, None, settings)

    assert lines.address == "localhost:50051"
    assert "-cacert YOUR_CA.pem" in lines.grpcurl
    assert '-H "authorization: Bearer $TOKEN"' in lines.grpcurl
    assert "-plaintext" not in lines.grpcurl
    assert lines.metrics_url is None


SECRET = "a-first-hour-secret-with-enough-bytes-0123456789"


def test_llm_gateway_token_mints_a_token_the_gateways_authenticator_accepts() -> None:
    settings = Settings(
        llm_auth_disabled=False,
        llm_jwt_hs256_secret=SecretStr(SECRET),
        llm_jwt_issuer="me",
        llm_jwt_audience="llm-grpc",
        llm_roles='{"agent": {"methods": ["Complete"]}}',  # type: ignore[arg-type]
    )
    token = mint_token(settings, "my-agent", ["agent"], 60, time.time())
    authenticator = build_authenticator(settings)

    assert authenticator is not None
    principal = authenticator.authenticate(f"Bearer {token}")
    assert (principal.subject, principal.roles) == ("my-agent", ("agent",))


def test_llm_gateway_token_prints_one_token_and_refuses_without_a_usable_secret() -> None:
    def token(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # nosec B603
            [sys.executable, "-m", "server", "token", "--subject", "my-agent"],
            env=BASE_ENV | env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    minted = token({"LLM_JWT_HS256_SECRET": SECRET})
    unset = token({})
    placeholder = token({"LLM_JWT_HS256_SECRET": "changeme"})

    assert minted.returncode == 0
    assert minted.stdout.count(".") == 2  # one JWT: header.claims.signature
    assert unset.returncode != 0
    assert unset.stderr.startswith("llm-gateway: token: set LLM_JWT_HS256_SECRET")
    assert placeholder.returncode != 0
    assert "LLM_JWT_HS256_SECRET is" in placeholder.stderr
