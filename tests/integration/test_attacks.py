"""The attack list of docs/security.md, each attempt through the real server on loopback.

Every test here failed on the gateway before the security hardening (issue #12) and names the rule it
pins. Tokens are minted inside each test, never at collection time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
from structlog.testing import capture_logs

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, ConfigError, check_settings
from server.config import Settings
from tests.conftest import MODELS, Emulators
from tests.helpers import details_of, user
from tests.integration.test_startup import BASE_ENV, _serve

SECRET = "hs256-attack-suite-secret-0123456789abcdef"
AUDIENCE = "llm-grpc"
ROLES = {
    "agent": {"methods": ["Complete", "Stream"], "models": [MODELS["openai"]]},
    "reader": {"methods": ["ListModels", "CheckHealth"]},
}
TRAILER_LIMIT = 8 * 1024  # gRPC's default limit on the size of a response's metadata


def _token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    body = {"sub": "planner-agent", "aud": AUDIENCE, "exp": int(time.time()) + 300, "roles": ["agent"]}
    body.update(claims)
    return jwt.encode(body, key, algorithm=algorithm)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def secured(start_gateway: Callable[..., Any]) -> App:
    app: App = await start_gateway(
        llm_auth_disabled=False,
        llm_jwt_hs256_secret=SECRET,
        llm_jwt_audience=AUDIENCE,
        llm_roles=json.dumps(ROLES),
    )
    return app


async def _complete(app: App, metadata: tuple[tuple[str, str], ...], model: str = MODELS["openai"]) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        return await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model=model, messages=user("hi")), metadata=metadata, timeout=10
        )


async def _refused(app: App, metadata: tuple[tuple[str, str], ...], model: str = MODELS["openai"]) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _complete(app, metadata, model)
    return caught.value


# --- 1. roles never combine ------------------------------------------------------------------------


async def test_a_second_role_does_not_lift_the_first_roles_model_restriction(
    secured: App, emulators: Emulators
) -> None:
    token = _token(roles=["agent", "reader"])

    error = await _refused(secured, _bearer(token), model=MODELS["anthropic"])
    served = await _complete(secured, _bearer(token))

    details = details_of(error)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "MODEL_NOT_ALLOWED"
    assert details.metadata["allowed_models"] == MODELS["openai"]
    assert emulators.completions("anthropic") == []
    assert served.content == "emulator reply: hi"


async def test_a_role_that_may_list_every_model_still_lists_them(secured: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        listed = await llm_pb2_grpc.LLMServiceStub(channel).ListModels(
            llm_pb2.ListModelsRequest(), metadata=_bearer(_token(roles=["agent", "reader"])), timeout=10
        )

    assert {m.id for m in listed.models} >= set(MODELS.values())


# --- 2. algorithm confusion ------------------------------------------------------------------------


def _public_key_file(tmp_path: Path, private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.mark.parametrize("configured", ["rsa", "ec"])
async def test_a_token_for_another_algorithm_than_the_keys_is_unauthenticated_with_one_log_line(
    start_gateway: Callable[..., Any], emulators: Emulators, tmp_path: Path, configured: str
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    server_key, attacker_token = (
        (rsa_key, _token(ec_key, "ES256")) if configured == "rsa" else (ec_key, _token(rsa_key, "RS256"))
    )
    public_pem = _public_key_file(tmp_path, server_key)
    app: App = await start_gateway(llm_auth_disabled=False, llm_jwt_public_key_file=public_pem)
    # The classic confusion: the public key itself used as an HMAC secret.
    hmac_with_public_key = _hs256_signed_with(public_pem.read_bytes())

    with capture_logs() as logs:
        refusals = [
            details_of(await _refused(app, _bearer(t))) for t in (attacker_token, hmac_with_public_key)
        ]
    served = await _complete(app, _bearer(_token(server_key, "RS256" if configured == "rsa" else "ES256")))

    assert [d.code for d in refusals] == [grpc.StatusCode.UNAUTHENTICATED] * 2
    assert all(d.reason == "UNAUTHENTICATED" for d in refusals)
    refused_lines = [line for line in logs if line["event"] == "llm.call" and line["status"] != "OK"]
    assert [line["error_reason"] for line in refused_lines] == ["UNAUTHENTICATED"] * 2
    assert not any("exc_info" in line or line["log_level"] == "error" for line in logs)
    assert served.content == "emulator reply: hi"
    assert len(emulators.completions("openai")) == 1


def _hs256_signed_with(secret: bytes) -> str:
    """An HS256 token whose HMAC key is `secret` (PyJWT refuses PEM keys for HMAC, so sign by hand)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "attacker", "exp": int(time.time()) + 300}).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


# --- 3. identities from tokens obey the metadata rules; the caller's failures never open a circuit --


@pytest.mark.parametrize("subject", ["agent\r\nX-Injected: 1", "agent\x00", "a" * 500, "agént"])
async def test_a_subject_unfit_for_a_header_is_unauthenticated_and_never_opens_the_circuit(
    start_gateway: Callable[..., Any], emulators: Emulators, subject: str
) -> None:
    app: App = await start_gateway(
        llm_auth_disabled=False, llm_jwt_hs256_secret=SECRET, llm_circuit_failures=2, llm_max_retries=0
    )

    refusals = [details_of(await _refused(app, _bearer(_token(sub=subject, aud=None)))) for _ in range(4)]
    served = await _complete(app, _bearer(_token(aud=None)))

    assert {d.code for d in refusals} == {grpc.StatusCode.UNAUTHENTICATED}
    assert all("'sub'" in d.message for d in refusals)
    assert served.content == "emulator reply: hi"
    assert len(emulators.completions("openai")) == 1


async def test_malformed_roles_claims_are_unauthenticated(secured: App) -> None:
    for roles in ({"agent": True}, ["agent"] * 100, ["agent\n"], [["agent"]]):
        details = details_of(await _refused(secured, _bearer(_token(roles=roles))))

        assert details.code == grpc.StatusCode.UNAUTHENTICATED, roles
        assert "'roles'" in details.message


# --- 4. the status always fits in the trailers -----------------------------------------------------


@pytest.mark.parametrize("count", [150, 1000])
async def test_many_violations_still_arrive_as_invalid_argument_with_bounded_details(
    gateway: App, count: int
) -> None:
    messages = [llm_pb2.Message(role=llm_pb2.ROLE_UNSPECIFIED, content="x" * 50) for _ in range(count)]
    request = llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages, stop=[""] * 16)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(request, timeout=10)

    details = details_of(caught.value)
    trailers = caught.value.trailing_metadata() or ()
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(details.violations) == 21
    assert f"({count + 16} in all)" in details.violations["request"]
    assert "messages[0].role" in details.violations
    assert len(repr(trailers)) + len(details.message) < TRAILER_LIMIT  # repr: an upper bound of the bytes


# --- 5. bytes that are not the request message -----------------------------------------------------


TRUNCATED = b"\xff\xff\xff\xff"  # a varint that never ends
OVERLONG = b"\x0a\xff\xff\xff\x0f"  # a field longer than the message
NOT_UTF8 = b"\x12\x05\x12\x03\xff\xfe\xfd"  # messages[0].content that is not UTF-8


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        *((m, p) for m in ("Complete", "Stream", "ListModels", "CheckHealth") for p in (TRUNCATED, OVERLONG)),
        ("Complete", NOT_UTF8),
        ("Stream", NOT_UTF8),
    ],
)
async def test_bytes_that_are_not_the_request_message_are_invalid_argument(
    gateway: App, method: str, payload: bytes
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        path = f"/llm.v1.LLMService/{method}"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if method == "Stream":
                async for _ in channel.unary_stream(
                    path, request_serializer=None, response_deserializer=None
                )(payload, timeout=10):
                    pass
            else:
                await channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                    payload, timeout=10
                )

    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "MALFORMED_REQUEST"
    assert "not a valid llm.v1." in details.message


async def test_the_server_still_serves_after_malformed_bytes(gateway: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(
                "/llm.v1.LLMService/Complete", request_serializer=None, response_deserializer=None
            )(b"\xff", timeout=10)
        reply = await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model=MODELS["gemini"], messages=user("hi")), timeout=10
        )

    assert reply.content == "emulator reply: hi"


# --- 6. a refusal names only what this caller may use ----------------------------------------------


async def test_a_model_outside_the_allowlist_is_refused_naming_only_the_callers_models(secured: App) -> None:
    details = details_of(await _refused(secured, _bearer(_token()), model="gpt-not-allowed-anywhere"))

    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "MODEL_NOT_ALLOWED"
    assert details.metadata["allowed_models"] == MODELS["openai"]
    assert MODELS["anthropic"] not in details.message
    assert MODELS["gemini"] not in details.message


# --- 10. redaction keeps help text -----------------------------------------------------------------


async def test_the_missing_token_message_keeps_its_help_text(secured: App) -> None:
    details = details_of(await _refused(secured, ()))

    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.message == "missing bearer token: send metadata `authorization: Bearer <JWT>`"


# --- 7. weak and placeholder secrets, unusable keys: a one-line start error --------------------------

KEYS = {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant-x", "GOOGLE_API_KEY": "AIza-x"}


def _start_problems(**settings: Any) -> list[str]:
    """The problems `llm-gateway serve` would refuse to start with (one line each)."""
    values: dict[str, Any] = {name.lower(): value for name, value in KEYS.items()}
    values["llm_allow_plaintext"] = True
    with pytest.raises(ConfigError) as caught:
        check_settings(Settings(**values, **settings))
    return str(caught.value).splitlines()[1:]


def test_a_placeholder_secret_stops_the_real_start_with_one_line_and_no_traceback() -> None:
    result = _serve({**KEYS, "LLM_ALLOW_PLAINTEXT": "true", "LLM_JWT_HS256_SECRET": "replace-me"})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "LLM_JWT_HS256_SECRET" in line] == [
        "  - LLM_JWT_HS256_SECRET is 10 bytes; HS256 needs at least 32 random bytes (RFC 7518 §3.2), "
        "e.g. `openssl rand -base64 48`"
    ]


@pytest.mark.parametrize(
    "secret",
    [
        "x",
        "a-31-byte-secret-is-still-short",
        "replace-me-replace-me-replace-me-replace-me",
        "changeme-changeme-changeme-changeme",
        "x" * 64,
    ],
)
def test_a_weak_or_placeholder_hs256_secret_is_a_start_problem(secret: str) -> None:
    problems = _start_problems(llm_jwt_hs256_secret=secret)

    assert len(problems) == 1
    assert "LLM_JWT_HS256_SECRET" in problems[0]
    assert len(secret) < 4 or secret not in problems[0]


def test_a_strong_hs256_secret_is_accepted() -> None:
    values: dict[str, Any] = {name.lower(): value for name, value in KEYS.items()}

    check_settings(Settings(**values, llm_allow_plaintext=True, llm_jwt_hs256_secret=SecretStr(SECRET)))


def test_an_empty_jwks_is_a_one_line_start_problem(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')

    assert _start_problems(llm_jwt_jwks_file=jwks) == [
        "  - cannot load the JWT key settings: The JWK Set did not contain any keys"
    ]


@pytest.mark.parametrize("content", [None, "not a PEM", ""])
def test_an_unreadable_or_unusable_public_key_is_a_one_line_start_problem(
    tmp_path: Path, content: str | None
) -> None:
    key = tmp_path / "public.pem"
    if content is not None:
        key.write_text(content)

    problems = _start_problems(llm_jwt_public_key_file=key)

    assert len(problems) == 1
    assert problems[0].startswith(("  - cannot read", "  - cannot load the JWT key settings"))


def test_library_warnings_are_structured_log_lines() -> None:
    script = (
        "import warnings, jwt\n"
        "from server.observability.logging import configure_logging\n"
        "from server.observability.redact import Redactor\n"
        "configure_logging('info', 'json', Redactor())\n"
        "warnings.warn('short HMAC key', jwt.InsecureKeyLengthWarning)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=BASE_ENV, capture_output=True, text=True, timeout=60, check=True
    )

    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["event"], line["category"]) for line in lines] == [
        ("library.warning", "InsecureKeyLengthWarning")
    ]


def test_a_real_gateway_without_tls_or_authentication_logs_one_insecure_warning() -> None:
    env = {
        **BASE_ENV,
        **KEYS,
        "LLM_ALLOW_PLAINTEXT": "true",
        "LLM_AUTH_DISABLED": "true",
        "LLM_HEALTH_INTERVAL": "3600",
        **{f"{p}_BASE_URL": "http://127.0.0.1:9" for p in ("OPENAI", "ANTHROPIC", "GEMINI")},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", "0", "--metrics-port", "-1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # blocks until the server writes: no polling
        lines.append(line)
        if '"serving"' in line:
            break
    process.terminate()
    lines += process.communicate(timeout=30)[1].splitlines()

    events = [json.loads(line) for line in lines if line.startswith("{")]
    insecure = [e for e in events if e["event"] == "insecure"]
    assert len(insecure) == 1
    assert insecure[0]["level"] == "warning"
    assert insecure[0]["plaintext"] is True
    assert insecure[0]["authentication"] is False
