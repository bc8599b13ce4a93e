"""Authentication (JWT bearer tokens, verified with PyJWT) and role-based authorisation.

A token's roles (claim `LLM_ROLES_CLAIM`, default `roles`) grant methods and may narrow the model
allowlist. A call is allowed only if ONE of the caller's roles grants both its method and its model:
roles never combine, so a role that may list every model does not widen another role that may call
`Complete` on one. With no roles configured, any valid token may call every method for every allowed
model.

Each configured key accepts exactly the algorithms it is for (HS256 for the shared secret; RS256,
ES256, ES384 or EdDSA for a public key, by its type; a JWKS key its own `alg`); `none` never. Every
PyJWT failure is `Unauthenticated` with a short reason, never an unhandled exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from server.core.errors import Code, GatewayError, Origin
from server.core.validation import context_value_problem

MIN_HS256_SECRET_BYTES = 32
"""RFC 7518 §3.2: a key of the same size as the hash output (256 bits) or larger."""
PLACEHOLDER_MARKERS = (
    "replace-me",
    "replace_me",
    "replaceme",
    "change-me",
    "changeme",
    "change_me",
    "your-secret",
    "your_secret",
    "example",
    "placeholder",
    "<secret>",
)
MAX_ROLES = 32
MAX_ROLE_NAME_LENGTH = 64

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class Unauthenticated(GatewayError):
    reason = "UNAUTHENTICATED"
    code = Code.UNAUTHENTICATED
    origin = Origin.CALLER


class MethodNotAllowed(GatewayError):
    reason = "METHOD_NOT_ALLOWED"
    code = Code.PERMISSION_DENIED
    origin = Origin.CALLER

    def __init__(self, method: str, roles: Iterable[str]) -> None:
        self.method = method
        self.roles = tuple(roles)
        super().__init__(f"the caller's roles ({', '.join(self.roles) or 'none'}) do not grant {method}")

    def metadata(self) -> dict[str, str]:
        return {"method": self.method, "roles": ",".join(self.roles)}


@dataclass(slots=True, frozen=True)
class Role:
    methods: frozenset[str]
    """Method names (Complete, Stream, ...); "*" grants all."""
    models: frozenset[str] | None
    """When set, the role may use only these models (within the allowlist); None: every allowed one."""

    def grants(self, method: str) -> bool:
        return "*" in self.methods or method in self.methods


@dataclass(slots=True, frozen=True)
class Principal:
    subject: str
    roles: tuple[str, ...]


def secret_problem(secret: str) -> str | None:
    """Why an HS256 secret must not be used, or None when it may."""
    if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        return (
            f"LLM_JWT_HS256_SECRET is {len(secret.encode())} bytes; HS256 needs at least "
            f"{MIN_HS256_SECRET_BYTES} random bytes (RFC 7518 §3.2), e.g. `openssl rand -base64 48`"
        )
    lowered = secret.lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS) or len(set(secret)) < 8:
        return "LLM_JWT_HS256_SECRET is a placeholder; generate one, e.g. `openssl rand -base64 48`"
    return None


def _public_key_algorithm(pem: bytes) -> str:
    """The one algorithm a PEM public key verifies; ValueError for a key type we do not accept."""
    key = load_pem_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return _EC_ALGORITHMS[key.curve.name]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"unsupported public key type {type(key).__name__}")


class Authenticator:
    def __init__(
        self,
        *,
        hs256_secret: str | None,
        public_key_file: Path | None,
        jwks_file: Path | None,
        issuer: str | None,
        audience: str | None,
        leeway: float,
        roles: Mapping[str, Role],
        roles_claim: str,
        max_subject_length: int,
    ) -> None:
        """Raises OSError (unreadable file) or ValueError / jwt.PyJWTError (unusable key)."""
        self._secret = hs256_secret
        self._public_key: tuple[str, str] | None = None
        if public_key_file is not None:
            pem = public_key_file.read_bytes()
            self._public_key = (pem.decode(), _public_key_algorithm(pem))
        self._jwks: tuple[tuple[jwt.PyJWK, str], ...] = ()
        if jwks_file is not None:
            keys = jwt.PyJWKSet.from_json(jwks_file.read_text()).keys
            for key in keys:
                if key.key_type == "oct" and len(key.key) < MIN_HS256_SECRET_BYTES:  # an HMAC key
                    raise ValueError(
                        f"JWKS key {key.key_id or '(no kid)'} is an HMAC key of {len(key.key)} bytes; "
                        f"at least {MIN_HS256_SECRET_BYTES} are needed (RFC 7518 §3.2)"
                    )
            self._jwks = tuple((key, key.algorithm_name) for key in keys)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._roles = dict(roles)
        self._roles_claim = roles_claim
        self._max_subject_length = max_subject_length

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a bearer token; Unauthenticated with a clear message otherwise."""
        if not authorization:
            raise Unauthenticated("missing bearer token: send metadata `authorization: Bearer <JWT>`")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be `Bearer <JWT>`")
        try:
            key, algorithm = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token's issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"the token lacks the {error.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated("the token's algorithm is not accepted for the configured key") from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            # Any other PyJWT failure (bad signature, wrong key type, undecodable header, ...).
            raise Unauthenticated("the token is malformed or its signature does not verify") from None
        return Principal(self._subject(claims.get("sub")), self._role_names(claims.get(self._roles_claim)))

    def authorize(self, principal: Principal, method: str) -> frozenset[str] | None:
        """The models this call may use: those of the caller's roles that grant `method` (None: every
        allowed model). MethodNotAllowed when no role grants it."""
        if not self._roles:
            return None
        granting = [
            role
            for name in principal.roles
            if (role := self._roles.get(name)) is not None and role.grants(method)
        ]
        if not granting:
            raise MethodNotAllowed(method, principal.roles)
        models: set[str] = set()
        for role in granting:
            if role.models is None:
                return None
            models |= role.models
        return frozenset(models)

    def _subject(self, subject: object) -> str:
        """The token's subject becomes the source agent in logs, metrics and provider headers: it obeys
        the same rules as an `a2a-source-agent` metadata value."""
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the token's 'sub' claim must be a non-empty string")
        problem = context_value_problem(subject, self._max_subject_length)
        if problem is not None:
            raise Unauthenticated(f"the token's 'sub' claim {problem}")
        return subject

    def _role_names(self, roles: object) -> tuple[str, ...]:
        names = [roles] if isinstance(roles, str) else roles if roles is not None else []
        if not isinstance(names, list) or len(names) > MAX_ROLES:
            raise Unauthenticated(
                f"the token's {self._roles_claim!r} claim must be a list of at most {MAX_ROLES} names"
            )
        for name in names:
            if not isinstance(name, str) or context_value_problem(name, MAX_ROLE_NAME_LENGTH) is not None:
                raise Unauthenticated(
                    f"the token's {self._roles_claim!r} claim must hold names of at most "
                    f"{MAX_ROLE_NAME_LENGTH} printable ASCII characters"
                )
        return tuple(names)

    def _key_for(self, token: str) -> tuple[jwt.PyJWK | str, str]:
        """The verification key and the one algorithm it is for; the token must name that algorithm."""
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if self._jwks:
            kid = header.get("kid")
            for key, key_algorithm in self._jwks:
                if (kid is None or key.key_id == kid) and key_algorithm == algorithm:
                    return key, key_algorithm
            if kid is not None and all(key.key_id != kid for key, _ in self._jwks):
                raise jwt.InvalidTokenError("unknown key id")
        if self._public_key is not None and algorithm == self._public_key[1]:
            return self._public_key
        if self._secret is not None and algorithm == "HS256":
            return self._secret, "HS256"
        raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")


def parse_roles(value: str | Mapping[str, object]) -> dict[str, Role]:
    """Roles from JSON, e.g. `{"agent": {"methods": ["Complete", "Stream"], "models": ["gpt-5.4-mini"]},
    "admin": {"methods": ["*"]}}`."""
    raw = json.loads(value) if isinstance(value, str) else value
    if not isinstance(raw, Mapping):
        raise ValueError("LLM_ROLES must be a JSON object of role name → {methods, models}")
    roles: dict[str, Role] = {}
    for name, spec in raw.items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("methods"), list):
            raise ValueError(f"role {name!r} needs a list of methods")
        models = spec.get("models")
        roles[name] = Role(
            frozenset(str(m) for m in spec["methods"]),
            frozenset(str(m) for m in models) if isinstance(models, list) else None,
        )
    return roles
