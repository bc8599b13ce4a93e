"""Settings, read once from the environment at start and passed down. No other module reads os.environ."""

from __future__ import annotations

import datetime
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic import model_validator as _model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.core.catalogue import Catalogue, LongPromptTier, ModelInfo, Tier, WireApi
from server.core.limits import NO_LIMITS, Limits, Policy, ScopedLimits
from server.core.types import Capabilities, ProviderName

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.toml")

# The current flagship, mid and small model of each provider (server/catalogue.toml says where from).
DEFAULT_ALLOWED_MODELS = (
    "gpt-5.5",
    "gpt-5.4",
    "gpt-5.4-mini",
    "claude-opus-4-7",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "gemini-3.1-pro-preview",
    "gemini-3.5-flash",
    "gemini-3.1-flash-lite",
)
DEFAULT_MODEL = "gpt-5.4-mini"


class RoleSetting(BaseModel):
    """One role of LLM_ROLES: the methods it grants ("*": all) and, optionally, the models it may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: tuple[str, ...]
    models: tuple[str, ...] | None = None


class ProviderInstanceSetting(BaseModel):
    """One entry of LLM_PROVIDERS: a provider instance of a registered kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    kind: str
    base_url: str | None = None
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable holding its key (kept out of LLM_PROVIDERS, so the key can live in its
    own secret)."""


class DeploymentSetting(BaseModel):
    """One deployment of a model in LLM_DEPLOYMENTS: a provider instance serving it, its share of the
    model's calls, and the provider's rate limits on it (per minute; unset: learned from the provider's
    response headers where it sends them, else none). docs/reliability.md#upstream-capacity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    input_tokens_per_minute: int | None = Field(default=None, gt=0)
    """Anthropic counts input and output tokens per minute separately (ITPM, OTPM)."""
    output_tokens_per_minute: int | None = Field(default=None, gt=0)


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of the gateway; see docs/configuration.md for the table."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    google_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("google_api_key", "gemini_api_key")
    )
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    gemini_base_url: str | None = None
    azure_openai_endpoint: str | None = None
    """When set, the `openai` provider is an Azure OpenAI resource (model ids are deployment names)."""
    azure_openai_api_key: SecretStr | None = None
    openai_api_version: str = "2024-10-21"
    """The Azure OpenAI data-plane API version (the SDK's OPENAI_API_VERSION)."""
    openai_reasoning_summaries: bool = True
    """Ask OpenAI's Responses API for reasoning summaries (`reasoning.summary: "auto"`) when a request sets
    reasoning: the text of its ReasoningParts. OpenAI refuses summaries to an organization it has not
    verified (400, param `reasoning.summary`): such an operator sets this to false."""
    google_genai_use_vertexai: bool = False
    """Serve the `gemini` provider from Vertex AI (GOOGLE_CLOUD_PROJECT, GOOGLE_CLOUD_LOCATION; the SDK's
    own variable names)."""
    google_cloud_project: str | None = None
    google_cloud_location: str = "global"
    gemini_vertex_access_token: SecretStr | None = None
    """With Vertex AI: a fixed OAuth access token; unset, Application Default Credentials."""
    anthropic_vertex_project_id: str | None = None
    """When set, the `anthropic` provider is Claude on Google Vertex AI in this project (SDK env name)."""
    cloud_ml_region: str = "global"
    """With anthropic_vertex_project_id: the Vertex AI region (the SDK's CLOUD_ML_REGION)."""
    anthropic_vertex_access_token: SecretStr | None = None
    """With anthropic_vertex_project_id: a fixed OAuth access token; unset, Application Default
    Credentials (google-auth) supply and refresh one."""

    allowed_models: Annotated[tuple[str, ...], NoDecode] = DEFAULT_ALLOWED_MODELS
    llm_default_model: str = DEFAULT_MODEL
    llm_providers: Annotated[tuple[ProviderInstanceSetting, ...], NoDecode] = ()
    """JSON: more provider instances beside the standard three, e.g. a second OpenAI-compatible
    endpoint: [{"name": "local-vllm", "kind": "openai", "base_url": "http://vllm:8000/v1",
    "api_key_env": "VLLM_API_KEY"}]. Catalogue entries route models to an instance by its name."""
    llm_deployments: Annotated[dict[str, tuple[DeploymentSetting, ...]], NoDecode] = Field(
        default_factory=dict
    )
    """JSON: model → its deployments, e.g. {"gpt-5.4-mini": [{"provider": "openai", "weight": 2,
    "requests_per_minute": 500, "tokens_per_minute": 200000}, {"provider": "openai-eu"}]}. A model
    listed here is served by these instances (the catalogue's `provider` is not used for it), each call
    reserving capacity first (docs/reliability.md#upstream-capacity). Empty: one instance per model, no
    capacity accounting."""
    llm_capacity_queue_per_caller: int = Field(default=100, ge=0)
    """Calls one caller may have waiting for upstream capacity, per model; more are refused at once."""
    llm_request_timeout: float = Field(default=60.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0, le=10)
    llm_retry_base_delay: float = Field(default=0.5, ge=0)
    llm_retry_max_delay: float = Field(default=8.0, ge=0)
    llm_max_connections: int = Field(default=2000, ge=1)
    llm_max_in_flight: int = Field(default=2000, ge=1)
    llm_max_in_flight_per_caller: int | None = Field(default=None, ge=1)
    """Calls one caller (source agent) may have in flight, all providers together; unset: a quarter of
    LLM_MAX_IN_FLIGHT, so no one caller can take more than a quarter of a provider's slots."""
    llm_queue_timeout: float = Field(default=0.5, ge=0)
    llm_default_max_tokens: int = Field(default=4096, ge=1)
    llm_max_request_bytes: int = Field(default=1_048_576, ge=1024)
    llm_max_messages: int = Field(default=1000, ge=1)
    llm_max_stop_sequences: int = Field(default=16, ge=0)
    llm_max_stop_length: int = Field(default=256, ge=1)
    llm_max_metadata_value_length: int = Field(default=128, ge=8)
    llm_max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    llm_max_document_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    llm_max_attachment_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    """All inline images and documents of one request together."""
    llm_max_tools: int = Field(default=128, ge=0)
    llm_health_interval: float = Field(default=30.0, gt=0)
    llm_circuit_failures: int = Field(default=5, ge=1)
    llm_circuit_cooldown: float = Field(default=30.0, gt=0)
    llm_max_connection_age: float = Field(default=300.0, gt=0)
    llm_max_connection_age_grace: float = Field(default=60.0, ge=0)
    llm_tls_cert_file: Path | None = None
    llm_tls_key_file: Path | None = None
    llm_tls_client_ca_file: Path | None = None
    """When set, clients must present a certificate signed by this CA (mTLS)."""
    llm_allow_plaintext: bool = False
    """Serve without TLS. Off by default: an operator says so explicitly (demo mode implies it)."""
    llm_auth_disabled: bool = False
    """Serve without authentication. Off by default: an operator says so explicitly (demo mode implies it)."""
    llm_jwt_hs256_secret: SecretStr | None = None
    llm_jwt_public_key_file: Path | None = None
    """PEM public key for RS256 / ES256 tokens."""
    llm_jwt_jwks_file: Path | None = None
    llm_jwt_issuer: str | None = None
    llm_jwt_audience: str | None = None
    llm_jwt_leeway: float = Field(default=30.0, ge=0)
    llm_roles: Annotated[dict[str, RoleSetting], NoDecode] = Field(default_factory=dict)
    """JSON: role → {"methods": [...], "models": [...]}; empty: any valid token may do everything."""
    llm_roles_claim: str = "roles"
    llm_catalogue_path: Path | None = None
    """An overlay on the bundled catalogue: adds models, overrides fields of the bundled ones."""
    llm_fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """JSON: {"claude-sonnet-4-6": ["gpt-5.4"]}. Off (empty) by default: fail fast."""
    llm_limits_file: Path | None = None
    """TOML or JSON: rate limits and USD budgets per caller (docs/limits.md). Unset: no caller limits."""
    llm_redis_url: SecretStr | None = None
    """redis://, rediss:// or unix:// URL of the Redis (or Valkey) that replicas share limits through.
    Unset: limits are counted in process (one replica)."""
    llm_redis_timeout: float = Field(default=0.25, gt=0)
    """Seconds a limit check may wait for Redis before the call is refused (or admitted, fail-open)."""
    llm_limits_fail_open: bool = False
    """With Redis unreachable, admit calls unlimited instead of refusing them (UNAVAILABLE)."""
    otel_traces_exporter: str = ""
    """OpenTelemetry's own variable: `otlp` turns traces on, `none` keeps them off."""
    otel_exporter_otlp_endpoint: str | None = None
    """Where traces go over OTLP/gRPC (e.g. http://otel-collector:4317); setting it turns traces on."""
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str = "llm-grpc"
    otel_sdk_disabled: bool = False
    llm_log_level: Literal["debug", "info", "warning", "error"] = "info"
    llm_log_format: Literal["auto", "json", "console"] = "auto"
    """auto: console lines on a terminal, JSON lines otherwise (a container, a pipe, a file)."""
    llm_event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """`auto`: uvloop when installed (more throughput under load, docs/benchmarks.md), else asyncio's."""

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("llm_roles", "llm_providers", "llm_deployments", mode="before")
    @classmethod
    def _parse_json(cls, value: object, info: ValidationInfo) -> object:
        """JSON from the environment (or given as text); empty means none."""
        if isinstance(value, str):
            return (
                json.loads(value)
                if value.strip()
                else cls.model_fields[info.field_name or ""].get_default(call_default_factory=True)
            )
        return value

    _instance_keys: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        # The keys of LLM_PROVIDERS instances live in variables of their own, named there.
        self._instance_keys = {
            entry.api_key_env: SecretStr(os.environ[entry.api_key_env])
            for entry in self.llm_providers
            if entry.api_key_env in os.environ
        }

    def key_setting(self, name: str) -> SecretStr | None:
        """The value of a key setting by its variable name: a field of these settings (OPENAI_API_KEY)
        or a variable an LLM_PROVIDERS entry names."""
        value = getattr(self, name.lower(), None)
        return value if isinstance(value, SecretStr) else self._instance_keys.get(name)

    def secrets(self) -> list[str]:
        """Every secret value configured: each one is scrubbed from logs, errors and responses."""
        values = [getattr(self, name) for name in type(self).model_fields]
        values += self._instance_keys.values()
        secrets = [value.get_secret_value() for value in values if isinstance(value, SecretStr)]
        # A URL's password alone too (LLM_REDIS_URL): a library may print the URL another way.
        return secrets + [p for s in secrets if "://" in s and (p := urlsplit(s).password)]

    def traces_endpoint(self) -> str | None:
        """The OTLP/gRPC endpoint traces go to, or None when tracing is off (the default)."""
        exporter = self.otel_traces_exporter.strip().lower()
        if self.otel_sdk_disabled or exporter == "none":
            return None
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        if endpoint is None and exporter == "otlp":
            return "http://localhost:4317"  # the OTLP/gRPC default
        return endpoint

    def max_in_flight_per_caller(self) -> int:
        """LLM_MAX_IN_FLIGHT_PER_CALLER, or its default: a quarter of LLM_MAX_IN_FLIGHT (at least 1)."""
        if self.llm_max_in_flight_per_caller is not None:
            return self.llm_max_in_flight_per_caller
        return max(1, self.llm_max_in_flight // 4)


class _LongPromptEntry(BaseModel):
    """`[models."<id>".long_prompt]`: the prices of a whole call whose prompt has more than `above`
    tokens."""

    model_config = ConfigDict(extra="forbid")

    above: int = Field(gt=0)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


class _CatalogueEntry(BaseModel):
    """One model of a catalogue file; in an overlay every field is optional (it overrides the bundled
    entry field by field), in the merged result the required ones must be there."""

    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    """The provider instance serving the model: a kind's name or an LLM_PROVIDERS name."""
    tier: Tier
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    retires: datetime.date | None = None
    reasoning: bool = False
    temperature: bool = True
    top_p: bool = True
    stop_sequences: bool = True
    tools: bool = True
    structured_output: bool = True
    image_input: bool = True
    document_input: bool = False
    prompt_caching: bool = False
    assistant_prefill: bool = True
    blank_turns: bool = True
    api: WireApi = WireApi.CHAT_COMPLETIONS
    """OpenAI kind: `responses` or `chat_completions` (docs/providers.md); other kinds ignore it."""
    # How the model takes thinking (server/core/reasoning.py says what each means).
    thinking: Literal["budget", "adaptive", "both", "levels"] = "budget"
    effort: bool = False
    thinking_levels: tuple[Literal["minimal", "low", "medium", "high", "xhigh"], ...] = ()
    thinking_off: bool = True
    forced_tool_thinking: bool = True
    long_prompt: _LongPromptEntry | None = None

    @_model_validator(mode="after")
    def _output_fits_context(self) -> _CatalogueEntry:
        if self.max_output_tokens > self.context_window:
            raise ValueError("max_output_tokens exceeds context_window")
        return self

    @_model_validator(mode="after")
    def _thinking_is_consistent(self) -> _CatalogueEntry:
        if (self.thinking == "levels") != bool(self.thinking_levels):
            raise ValueError("thinking_levels lists the levels of a model whose thinking is `levels`, only")
        if self.thinking in ("adaptive", "both") and not self.effort:
            raise ValueError("adaptive thinking is steered by effort: set effort = true")
        if self.thinking == "levels" and self.thinking_off and "minimal" not in self.thinking_levels:
            raise ValueError("a levels model without `minimal` cannot stop thinking: thinking_off = false")
        return self

    @_model_validator(mode="after")
    def _long_prompt_costs_more(self) -> _CatalogueEntry:
        """A reservation prices a prompt bound past the threshold at the tier: it must never be below
        what a shorter prompt is billed."""
        tier = self.long_prompt
        if tier is None:
            return self
        if tier.above >= self.context_window:
            raise ValueError("long_prompt.above must be below context_window")
        pairs = (
            ("input", tier.input, self.input),
            ("output", tier.output, self.output),
            ("cached_input", tier.cached_input, self.cached_input),
            ("cache_write", tier.cache_write, self.cache_write),
        )
        for name, dearer, standard in pairs:
            if standard is not None and (dearer if dearer is not None else tier.input) < standard:
                raise ValueError(f"long_prompt.{name} must not be below the model's {name}")
        return self

    def long_prompt_tier(self) -> LongPromptTier | None:
        tier = self.long_prompt
        if tier is None:
            return None
        return LongPromptTier(tier.above, tier.input, tier.output, tier.cached_input, tier.cache_write)

    def capabilities(self) -> Capabilities:
        return Capabilities(**{name: getattr(self, name) for name in Capabilities.__dataclass_fields__})


class _CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, _CatalogueEntry]


class _LimitsEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    concurrent: int | None = Field(default=None, gt=0)
    # Budgets are counted in micro-dollars: at least one, and finite (leave a field out for no limit).
    usd_per_day: float | None = Field(default=None, ge=1e-6, allow_inf_nan=False)
    usd_per_month: float | None = Field(default=None, ge=1e-6, allow_inf_nan=False)

    def limits(self) -> Limits:
        return Limits(**self.model_dump(include=set(Limits.__slots__)))


class _ScopedEntry(_LimitsEntry):
    models: dict[str, _LimitsEntry] = Field(default_factory=dict)
    tiers: dict[Tier, _LimitsEntry] = Field(default_factory=dict)

    def scoped(self) -> ScopedLimits:
        return ScopedLimits(
            self.limits(),
            {model: entry.limits() for model, entry in self.models.items()},
            {tier.value: entry.limits() for tier, entry in self.tiers.items()},
        )


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: _ScopedEntry = Field(default_factory=_ScopedEntry)
    roles: dict[str, _ScopedEntry] = Field(default_factory=dict)
    identities: dict[str, _ScopedEntry] = Field(default_factory=dict)


def load_limit_policy(path: Path | None) -> Policy:
    """The caller limits of a TOML (or, by its suffix, JSON) file; ValueError names every problem."""
    if path is None:
        return NO_LIMITS
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        parsed = _PolicyFile.model_validate(raw)
    except OSError as error:
        raise ValueError(f"cannot read the limits file {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"the limits file {path} is not valid {path.suffix[1:].upper() or 'TOML'}: {error}"
        ) from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"the limits file {path} is invalid: {problems}") from None
    return Policy(
        parsed.default.scoped(),
        {name: entry.scoped() for name, entry in parsed.roles.items()},
        {name: entry.scoped() for name, entry in parsed.identities.items()},
    )


def _read_toml(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"cannot read the model catalogue {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"the model catalogue {path} is not valid TOML: {error}") from None


def _overlaid(base: dict[str, object], overlay: dict[str, object], path: Path) -> dict[str, object]:
    """The bundled models with the overlay's: a new model whole, a known one field by field."""
    models = overlay.get("models", {})
    if set(overlay) - {"models"} or not isinstance(models, dict):
        raise ValueError(f"the model catalogue {path} is invalid: only a [models] table is allowed")
    merged = dict(base.get("models", {}))  # type: ignore[call-overload]
    for model, fields in models.items():
        if not isinstance(fields, dict):
            raise ValueError(f"the model catalogue {path} is invalid: models.{model} must be a table")
        known = merged.get(model)
        merged[model] = {**known, **fields} if isinstance(known, dict) else fields
    return {"models": merged}


def load_catalogue(overlay: Path | None = None, bundled: Path = DEFAULT_CATALOGUE) -> Catalogue:
    """The bundled catalogue, with `overlay` (LLM_CATALOGUE_PATH) laid over it; ValueError names the
    file and every problem."""
    raw = _read_toml(bundled)
    path = bundled
    if overlay is not None:
        raw, path = _overlaid(raw, _read_toml(overlay), overlay), overlay
    try:
        parsed = _CatalogueFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"the model catalogue {path} is invalid: {problems}") from None
    return Catalogue(
        ModelInfo(
            id=model,
            provider=entry.provider,
            tier=entry.tier,
            context_window=entry.context_window,
            max_output_tokens=entry.max_output_tokens,
            input_per_mtok=entry.input,
            output_per_mtok=entry.output,
            cached_input_per_mtok=entry.cached_input,
            cache_write_per_mtok=entry.cache_write,
            retires=entry.retires,
            capabilities=entry.capabilities(),
            api=entry.api,
            long_prompt=entry.long_prompt_tier(),
        )
        for model, entry in parsed.models.items()
    )
