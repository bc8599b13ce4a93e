"""JWT authentication and role-based authorisation through the real server, with real tokens."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS, Emulators
from tests.helpers import details_of, user

SECRET = "hs256-test-secret-that-is-long-enough-0123456789"
AUDIENCE = "llm-grpc"
ISSUER = "https://auth.example.com"
ROLES = {
    "agent": {
        "methods": ["Complete", "Stream", "ListModels"],
        "models": ["gpt-5.4-mini", "gemini-3.1-flash-lite"],
    },
    "ops": {"methods": ["CheckHealth", "GetMetrics"]},
}


def _token(
    key: Any = SECRET, algorithm: str = "HS256", headers: dict[str, Any] | None = None, **claims: Any
) -> str:
    now = int(time.time())
    body = {"sub": "planner-agent", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 300, "roles": ["agent"]}
    body.update(claims)
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm, headers=headers
    )


@pytest.fixture
async def secured(start_gateway: Callable[..., Any]) -> App:
    app: App = await start_gateway(
        llm_auth_disabled=False,
        llm_jwt_hs256_secret=SECRET,
        llm_jwt_audience=AUDIENCE,
        llm_jwt_issuer=ISSUER,
        llm_roles=json.dumps(ROLES),
    )
    return app


async def _call(app: App, token: str | None, model: str = MODELS["openai"], **metadata: str) -> Any:
    pairs = [(k.replace("_", "-"), v) for k, v in metadata.items()]
    if token is not None:
        pairs.append(("authorization", f"Bearer {token}"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        return await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model=model, messages=user("hi")), metadata=tuple(pairs), timeout=10
        )


async def _refusal(app: App, token: str | None, model: str = MODELS["openai"]) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(app, token, model)
    return details_of(caught.value)


async def test_valid_token_is_served_and_its_subject_is_the_source_agent(
    secured: App, emulators: Emulators
) -> None:
    reply = await _call(secured, _token(), a2a_source_agent="someone-else")

    assert reply.content == "emulator reply: hi"
    assert emulators.completions("openai")[-1].headers["x-source-agent"] == "planner-agent"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "missing bearer token"),
        ("not-a-jwt", "malformed"),
        (_token(exp=int(time.time()) - 3600), "expired"),
        (_token(nbf=int(time.time()) + 3600), "not valid yet"),
        (_token(key="another-secret-that-is-long-enough-0123456789"), "signature"),
        (_token(aud="someone-else"), "audience"),
        (_token(iss="https://evil.example.com"), "issuer"),
        (_token(sub=None), "'sub'"),
        (
            jwt.encode({"sub": "x", "aud": AUDIENCE, "iss": ISSUER, "exp": 2**31}, None, algorithm="none"),  # type: ignore[arg-type]
            "algorithm",
        ),
    ],
    ids=[
        "missing",
        "malformed",
        "expired",
        "not-yet-valid",
        "wrong-signature",
        "wrong-audience",
        "wrong-issuer",
        "no-subject",
        "alg-none",
    ],
)
async def test_bad_tokens_are_unauthenticated_and_reach_no_provider(
    secured: App, emulators: Emulators, token: str | None, message: str
) -> None:
    details = await _refusal(secured, token)

    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "UNAUTHENTICATED"
    assert message in details.message
    assert all(emulators.completions(p) == [] for p in MODELS)


async def test_a_role_without_the_method_is_permission_denied(secured: App, emulators: Emulators) -> None:
    details = await _refusal(secured, _token(roles=["ops"]))

    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "METHOD_NOT_ALLOWED"
    assert details.metadata["method"] == "Complete"
    assert emulators.completions("openai") == []


async def test_a_role_without_the_model_is_permission_denied(secured: App, emulators: Emulators) -> None:
    details = await _refusal(secured, _token(), model=MODELS["anthropic"])

    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "MODEL_NOT_ALLOWED"
    assert details.metadata["allowed_models"] == "gpt-5.4-mini,gemini-3.1-flash-lite"
    assert emulators.completions("anthropic") == []


async def test_list_models_shows_only_the_roles_models(secured: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        response = await llm_pb2_grpc.LLMServiceStub(channel).ListModels(
            llm_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {_token()}"),), timeout=10
        )

    assert [m.id for m in response.models] == ["gpt-5.4-mini", "gemini-3.1-flash-lite"]


async def test_health_and_reflection_stay_open(secured: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def _signing_key(kind: str) -> tuple[bytes, dict[str, Any], str]:
    """A private key (PEM), its public JWK, and the algorithm it signs with."""
    if kind == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa_key
        jwk, algorithm = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "RS256"
    else:
        ec_key = ec.generate_private_key(ec.SECP256R1())
        private = ec_key
        jwk, algorithm = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "ES256"
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, jwk, algorithm


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_rs256_and_es256_tokens_verify_against_a_jwks_file(
    start_gateway: Callable[..., Any], tmp_path: Path, kind: str
) -> None:
    pem, jwk, algorithm = _signing_key(kind)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": algorithm, "use": "sig"}]}))
    app: App = await start_gateway(llm_auth_disabled=False, llm_jwt_jwks_file=jwks, llm_jwt_audience=AUDIENCE)

    reply = await _call(app, _token(pem, algorithm, headers={"kid": "k1"}))

    assert reply.content == "emulator reply: hi"


async def test_failover_never_reaches_a_model_outside_the_callers_role(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(
        llm_auth_disabled=False,
        llm_jwt_hs256_secret=SECRET,
        llm_roles=json.dumps({"agent": {"methods": ["*"], "models": ["gpt-5.4-mini"]}}),
        llm_fallbacks={"gpt-5.4-mini": ["claude-haiku-4-5"]},
        llm_max_retries=0,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(model="gpt-5.4-mini", messages=user("hi [[emulate: status=503]]")),
                metadata=(("authorization", f"Bearer {_token(aud=None, iss=None)}"),),
                timeout=10,
            )

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert emulators.completions("anthropic") == []
