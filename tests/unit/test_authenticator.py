"""The Authenticator on its own: real tokens minted per test (PyJWT, fresh keys from fixtures), every
refusal an `Unauthenticated` with a clear reason, and roles granting methods and models."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.core.auth import (
    Authenticator,
    MethodNotAllowed,
    Principal,
    Role,
    Unauthenticated,
    parse_roles,
    secret_problem,
)

AUDIENCE = "llm-grpc"
ISSUER = "https://auth.example.com"
ROLES = {
    "agent": Role(frozenset({"Complete", "Stream"}), frozenset({"gpt-5.4-mini"})),
    "reader": Role(frozenset({"ListModels"}), None),
    "admin": Role(frozenset({"*"}), None),
}

Mint = Callable[..., str]


@pytest.fixture
def secret() -> str:
    """A fresh HS256 secret for each test (never one made at import time)."""
    return secrets.token_urlsafe(48)


def _authenticator(
    secret: str | None = None, public_key_file: Path | None = None, **overrides: Any
) -> Authenticator:
    values: dict[str, Any] = {
        "hs256_secret": secret,
        "public_key_file": public_key_file,
        "jwks_file": None,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway": 0.0,
        "roles": ROLES,
        "roles_claim": "roles",
        "max_subject_length": 32,
    }
    values.update(overrides)
    return Authenticator(**values)


@pytest.fixture
def mint(secret: str) -> Mint:
    """Signs a token now, with the test's secret: claims default to a valid agent's."""

    def sign(
        key: Any = secret,
        algorithm: str = "HS256",
        exp_in: int = 300,
        nbf_in: int | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "sub": "planner",
            "aud": AUDIENCE,
            "iss": ISSUER,
            "exp": now + exp_in,
            "nbf": None if nbf_in is None else now + nbf_in,
            "roles": ["agent"],
        }
        body.update(claims)
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)

    return sign


def _refusal(authenticator: Authenticator, authorization: str | None) -> str:
    with pytest.raises(Unauthenticated) as caught:
        authenticator.authenticate(authorization)
    return caught.value.message


def test_a_valid_token_gives_its_subject_and_roles(secret: str, mint: Mint) -> None:
    principal = _authenticator(secret).authenticate(f"Bearer {mint()}")

    assert principal == Principal("planner", ("agent",))


def test_a_single_role_as_a_string_is_one_role(secret: str, mint: Mint) -> None:
    principal = _authenticator(secret).authenticate(f"bearer {mint(roles='reader')}")

    assert principal.roles == ("reader",)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp_in": -60}, "the token has expired"),
        ({"nbf_in": 600}, "the token is not valid yet (nbf)"),
        ({"aud": "someone-else"}, "the token is not for this audience"),
        ({"iss": "https://evil.example.com"}, "the token's issuer is not trusted"),
        ({"exp": None}, "the token lacks the 'exp' claim"),
        ({"sub": None}, "the token lacks the 'sub' claim"),
        ({"sub": ""}, "the token's 'sub' claim must be a non-empty string"),
        ({"sub": "x" * 33}, "the token's 'sub' claim must be at most 32 characters"),
        ({"sub": "a\nb"}, "the token's 'sub' claim must be printable ASCII"),
        ({"roles": {"agent": True}}, "the token's 'roles' claim must be a list of at most 32 names"),
        ({"roles": ["ok", 7]}, "the token's 'roles' claim must hold names of at most 64 printable ASCII"),
    ],
    ids=[
        "expired",
        "not-yet",
        "audience",
        "issuer",
        "no-exp",
        "no-sub",
        "empty-sub",
        "long-sub",
        "newline-sub",
        "roles-object",
        "role-number",
    ],
)
def test_each_bad_claim_is_refused_with_its_reason(
    secret: str, mint: Mint, claims: dict[str, Any], reason: str
) -> None:
    assert _refusal(_authenticator(secret), f"Bearer {mint(**claims)}").startswith(reason)


def test_leeway_accepts_a_token_that_expired_within_it(secret: str, mint: Mint) -> None:
    token = mint(exp_in=-5)

    assert _authenticator(secret, leeway=60.0).authenticate(f"Bearer {token}").subject == "planner"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "the authorization metadata must be `Bearer <JWT>`"),
        ("Bearer ", "the authorization metadata must be `Bearer <JWT>`"),
        ("Bearer not.a.jwt", "the token is malformed or its signature does not verify"),
    ],
    ids=["none", "empty", "basic", "no-token", "garbage"],
)
def test_a_missing_or_malformed_header_is_refused(
    secret: str, authorization: str | None, reason: str
) -> None:
    assert _refusal(_authenticator(secret), authorization).startswith(reason)


def test_a_token_signed_with_another_secret_does_not_verify(secret: str, mint: Mint) -> None:
    forged = mint(key=secret[::-1])

    assert _refusal(_authenticator(secret), f"Bearer {forged}").startswith("the token is malformed")


def test_the_none_algorithm_is_never_accepted(secret: str) -> None:
    body = {"sub": "x", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 300}
    unsigned = jwt.encode(body, None, algorithm="none")  # type: ignore[arg-type]

    assert _refusal(_authenticator(secret), f"Bearer {unsigned}").startswith(
        "the token's algorithm is not accepted"
    )


def _hs256_signed_with(secret: bytes) -> str:
    """A valid agent's token, HMAC-signed by hand (PyJWT itself refuses a PEM as an HMAC secret)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = {"sub": "planner", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 300}
    payload = b64(json.dumps(body).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


@pytest.fixture
def ec_key_file(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    """A fresh P-256 key pair for this test; the public half in a PEM file."""
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "public.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, path


def test_a_public_key_verifies_only_its_own_algorithm(
    ec_key_file: tuple[ec.EllipticCurvePrivateKey, Path], mint: Mint
) -> None:
    private, path = ec_key_file
    authenticator = _authenticator(public_key_file=path)

    assert authenticator.authenticate(f"Bearer {mint(key=private, algorithm='ES256')}").subject == "planner"
    # The classic confusion: the public key's own bytes used as an HMAC secret.
    confused = _hs256_signed_with(path.read_bytes())
    assert _refusal(authenticator, f"Bearer {confused}").startswith("the token's algorithm is not accepted")


def test_a_jwks_key_is_chosen_by_kid_and_an_unknown_kid_is_refused(tmp_path: Path, mint: Mint) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk | {"kid": "k1", "alg": "ES256", "use": "sig"}]}))
    authenticator = _authenticator(jwks_file=jwks)

    def signed(kid: str) -> str:
        body = {"sub": "planner", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 300}
        return jwt.encode(body, private, algorithm="ES256", headers={"kid": kid})

    assert authenticator.authenticate(f"Bearer {signed('k1')}").subject == "planner"
    assert _refusal(authenticator, f"Bearer {signed('k2')}").startswith("the token is malformed")


def test_a_jwks_hmac_key_shorter_than_32_bytes_is_refused_at_start(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2hvcnQ", "alg": "HS256", "kid": "s"}]}))

    with pytest.raises(ValueError, match="HMAC key of 5 bytes"):
        _authenticator(jwks_file=jwks)


def test_authorize_grants_the_models_of_the_roles_that_grant_the_method(secret: str) -> None:
    authenticator = _authenticator(secret)

    assert authenticator.authorize(Principal("p", ("agent",)), "Complete") == frozenset({"gpt-5.4-mini"})
    assert authenticator.authorize(Principal("p", ("agent", "admin")), "Complete") is None
    assert authenticator.authorize(Principal("p", ("reader",)), "ListModels") is None


def test_a_method_no_role_grants_is_refused_naming_method_and_roles(secret: str) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        _authenticator(secret).authorize(Principal("p", ("agent", "unknown")), "GetMetrics")

    assert caught.value.metadata() == {"method": "GetMetrics", "roles": "agent,unknown"}


def test_without_configured_roles_every_valid_caller_may_do_everything(secret: str) -> None:
    assert _authenticator(secret, roles={}).authorize(Principal("p", ()), "Complete") is None


def test_parse_roles_reads_methods_and_optional_models() -> None:
    roles = parse_roles('{"agent": {"methods": ["Complete"], "models": ["m1"]}, "ops": {"methods": ["*"]}}')

    assert roles == {
        "agent": Role(frozenset({"Complete"}), frozenset({"m1"})),
        "ops": Role(frozenset({"*"}), None),
    }


@pytest.mark.parametrize("value", ['["agent"]', '{"agent": {"models": ["m1"]}}'], ids=["list", "no-methods"])
def test_parse_roles_refuses_a_shape_it_cannot_read(value: str) -> None:
    with pytest.raises(ValueError, match=r"role|LLM_ROLES"):
        parse_roles(value)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("short", "is 5 bytes"),
        ("replace-me-" + "x" * 40, "is a placeholder"),
        ("ab" * 20, "is a placeholder"),
    ],
    ids=["short", "marker", "low-variety"],
)
def test_weak_hs256_secrets_are_named(secret: str, problem: str) -> None:
    assert problem in (secret_problem(secret) or "")


def test_a_random_secret_has_no_problem(secret: str) -> None:
    assert secret_problem(secret) is None
