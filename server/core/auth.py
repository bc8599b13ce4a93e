"""Authentication (JWT bearer tokens, verified with PyJWT) and role-based authorisation.

A token's roles (claim `LLM_ROLES_CLAIM`, default `roles`) grant methods and may narrow the model
allowlist. With no roles configured, any valid token may call every method for every allowed model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

from server.core.errors import Code, GatewayError

ASYMMETRIC = ["RS256", "ES256"]


class Unauthenticated(GatewayError):
    reason = "UNAUTHENTICATED"
    code = Code.UNAUTHENTICATED


class MethodNotAllowed(GatewayError):
    reason = "METHOD_NOT_ALLOWED"
    code = Code.PERMISSION_DENIED

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
    models: frozenset[str] | None = None
    """When set, the role may use only these models (within the allowlist)."""


@dataclass(slots=True, frozen=True)
class Principal:
    subject: str
    roles: tuple[str, ...]
    models: frozenset[str] | None
    """The models the caller's roles allow; None: every allowed model."""


class Authenticator:
    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        public_key_file: Path | None = None,
        jwks_file: Path | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        roles: Mapping[str, Role] | None = None,
        roles_claim: str = "roles",
    ) -> None:
        self._secret = hs256_secret
        self._public_key = public_key_file.read_text() if public_key_file else None
        self._jwks = jwt.PyJWKSet.from_json(jwks_file.read_text()) if jwks_file else None
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._roles = dict(roles or {})
        self._roles_claim = roles_claim

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a bearer token; Unauthenticated with a clear message otherwise."""
        if not authorization:
            raise Unauthenticated("missing bearer token: send metadata `authorization: Bearer <JWT>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be `Bearer <JWT>`")
        try:
            key, algorithms = self._key_for(token.strip())
            claims = jwt.decode(
                token.strip(),
                key,
                algorithms=algorithms,
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
        except (jwt.InvalidTokenError, jwt.PyJWKError, ValueError):
            raise Unauthenticated("the token is malformed or its signature does not verify") from None
        roles = claims.get(self._roles_claim, [])
        names = tuple(str(r) for r in roles) if isinstance(roles, list) else (str(roles),)
        return Principal(str(claims["sub"]), names, self._models_for(names))

    def authorize(self, principal: Principal, method: str) -> None:
        if not self._roles:
            return
        for name in principal.roles:
            role = self._roles.get(name)
            if role is not None and ("*" in role.methods or method in role.methods):
                return
        raise MethodNotAllowed(method, principal.roles)

    def _models_for(self, names: tuple[str, ...]) -> frozenset[str] | None:
        if not self._roles:
            return None
        granted: set[str] = set()
        for name in names:
            role = self._roles.get(name)
            if role is None:
                continue
            if role.models is None:
                return None  # one unrestricted role: every allowed model
            granted |= role.models
        return frozenset(granted)

    def _key_for(self, token: str) -> tuple[jwt.PyJWK | str, list[str]]:
        """The verification key and the algorithms it may be used with (never `none`)."""
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if self._jwks is not None and algorithm in ASYMMETRIC:
            kid = header.get("kid")
            for key in self._jwks.keys:
                if kid is None or key.key_id == kid:
                    return key, [str(algorithm)]
            raise jwt.InvalidTokenError("unknown key id")
        if self._public_key is not None and algorithm in ASYMMETRIC:
            return self._public_key, ASYMMETRIC
        if self._secret is not None and algorithm == "HS256":
            return self._secret, ["HS256"]
        raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")


def parse_roles(value: str | Mapping[str, object]) -> dict[str, Role]:
    """Roles from JSON, e.g. `{"agent": {"methods": ["Complete", "Stream"], "models": ["gpt-5.4-mini"]},
    "admin": {"methods": ["*"]}}`."""
    raw = json.loads(value) if isinstance(value, str) else value
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
