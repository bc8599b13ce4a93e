"""Builds the whole gateway from Settings: providers, facade, health, the grpc.aio server with the
standard health service and reflection. Everything is built here and injected; nothing is global."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import jwt
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server
from pydantic import SecretStr

from llm_grpc.v1 import llm_pb2
from server.api.draining import Drain
from server.api.pipeline import Pipeline, add_to_server
from server.api.servicer import LLMServicer
from server.config import Settings, load_catalogue, load_limit_policy
from server.core.admission import Admission
from server.core.auth import Authenticator, Role, secret_problem
from server.core.capacity import Capacity, Deployment, Rates
from server.core.catalogue import Catalogue, WireApi
from server.core.circuit import CircuitBreaker
from server.core.gateway import Gateway
from server.core.governance import Allowlist
from server.core.health import HealthMonitor
from server.core.lifecycle import retiring
from server.core.limits import MICRO, NO_LIMITS, Check, Limiter, LimitKind, LimitStore, Policy
from server.core.ports import CapacityStore, Clock, Provider
from server.core.retry import RetryPolicy
from server.core.types import ProviderName
from server.core.validation import Limits
from server.limits.capacity_memory import MemoryCapacityStore
from server.limits.capacity_redis import RedisCapacityStore
from server.limits.memory_store import MemoryLimitStore
from server.limits.redis_store import RedisLimitStore
from server.observability.calls import MetricsObserver
from server.observability.metrics import Metrics
from server.observability.redact import Redactor
from server.observability.tracing import Tracing, build_tracer_provider
from server.providers.base import ProviderSettings, ProviderSpec
from server.providers.registry import SPECS

log = structlog.get_logger("llm_grpc.app")

DRAIN_NOTICE_S = 5.0
"""At most this long after SIGTERM the listener stays open, answering health checks NOT_SERVING."""

MIN_TRIAL_SECONDS = 2.0
"""A circuit's half-open trial goes only to a call with this much time left (or the request timeout)."""

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LLMService"].full_name

METHODS = frozenset(m.name for m in llm_pb2.DESCRIPTOR.services_by_name["LLMService"].methods)


class ConfigError(Exception):
    """The settings cannot make a working gateway; the message lists every problem."""


def _catalogue_name(settings: Settings) -> str:
    overlay = settings.llm_catalogue_path
    return "the bundled one" if overlay is None else f"the bundled one with the overlay {overlay}"


def warn_of_retiring_models(catalogue: Catalogue, allowed: Sequence[str]) -> None:
    """A warning at start for each allowed model within 30 days of its announced retirement."""
    today = datetime.datetime.now(datetime.UTC).date()
    for model in retiring(catalogue, allowed, today):
        log.warning(
            "model.retiring",
            model=model.model,
            retires=model.retires.isoformat(),
            days_left=model.days_left,
            hint="replace it in ALLOWED_MODELS before it retires; the provider will answer 404",
        )


@dataclass(slots=True, frozen=True)
class ProviderInstance:
    """One configured provider: a kind's spec and where and how to reach it."""

    name: ProviderName
    spec: ProviderSpec
    key: SecretStr | None
    key_names: str
    """The settings the key comes from, for messages."""
    base_url: str | None
    ambient_credentials: bool = False
    """Authenticates without a key of ours (Vertex AI with Application Default Credentials)."""
    azure_endpoint: str | None = None
    vertex_project: str | None = None
    vertex_region: str = "global"


def provider_instances(settings: Settings) -> dict[ProviderName, ProviderInstance]:
    """The standard instance of every registered kind (named after it, its key and base URL from the
    spec's settings, or a cloud deployment of it), and each LLM_PROVIDERS entry. ConfigError for an
    entry of an unknown kind or a taken name."""
    instances = {spec.kind: _standard_instance(settings, spec) for spec in SPECS.values()}
    problems = []
    for entry in settings.llm_providers:
        if entry.kind not in SPECS:
            problems.append(
                f"LLM_PROVIDERS entry {entry.name!r} has unknown kind {entry.kind!r} ({', '.join(SPECS)})"
            )
        elif entry.name in instances:
            problems.append(f"LLM_PROVIDERS names {entry.name!r} twice, or a standard provider's name")
        else:
            key = settings.key_setting(entry.api_key_env)
            spec = SPECS[entry.kind]
            instances[entry.name] = ProviderInstance(entry.name, spec, key, entry.api_key_env, entry.base_url)
    if problems:
        raise ConfigError("cannot start:\n  - " + "\n  - ".join(problems))
    return instances


def _standard_instance(settings: Settings, spec: ProviderSpec) -> ProviderInstance:
    key = next(filter(None, map(settings.key_setting, spec.key_settings)), None)
    standard = ProviderInstance(
        spec.kind,
        spec,
        key,
        " (or ".join(spec.key_settings) + ")" * (len(spec.key_settings) - 1),
        getattr(settings, spec.base_url_setting.lower(), None),
    )
    # Cloud deployments of the standard kinds, named by the SDKs' own variables (docs/providers.md).
    if spec.kind == "openai" and settings.azure_openai_endpoint:
        return replace(
            standard,
            key=settings.azure_openai_api_key,
            key_names="AZURE_OPENAI_API_KEY (with AZURE_OPENAI_ENDPOINT)",
            azure_endpoint=settings.azure_openai_endpoint,
        )
    if spec.kind == "anthropic" and settings.anthropic_vertex_project_id:
        return replace(
            standard,
            key=settings.anthropic_vertex_access_token,
            ambient_credentials=True,
            vertex_project=settings.anthropic_vertex_project_id,
            vertex_region=settings.cloud_ml_region,
        )
    if spec.kind == "gemini" and settings.google_genai_use_vertexai:
        return replace(
            standard,
            key=settings.gemini_vertex_access_token,
            ambient_credentials=True,
            vertex_project=settings.google_cloud_project or "",  # empty: the project of the ADC
            vertex_region=settings.google_cloud_location,
        )
    return standard


@dataclass(slots=True, frozen=True)
class Plan:
    """What the settings make, each part read and built once (check_settings)."""

    catalogue: Catalogue
    needed: dict[ProviderName, list[str]]
    """The provider instances the allowlist needs, with their allowed models."""
    instances: dict[ProviderName, ProviderInstance]
    authenticator: Authenticator | None
    policy: Policy


def check_settings(settings: Settings) -> Plan:
    """The plan of the gateway the settings describe; ConfigError naming every problem otherwise: the
    catalogue, an allowed model missing from it or served by an instance not configured, a needed key
    missing, the default or a fallback not allowed, limits, transport, authentication and roles."""
    problems: list[str] = []
    if not settings.allowed_models:
        problems.append("ALLOWED_MODELS is empty: allow at least one model")
    try:
        catalogue: Catalogue | None = load_catalogue(settings.llm_catalogue_path)
    except ValueError as error:
        catalogue = None
        problems.append(str(error))
    instances = provider_instances(settings)
    needed: dict[ProviderName, list[str]] = {}
    listed = {m: info.provider for m, info in catalogue.models().items()} if catalogue is not None else {}
    for model in settings.allowed_models if catalogue is not None else ():
        provider = listed.get(model)
        if provider is None:
            problems.append(
                f"allowed model {model!r} is not in the model catalogue ({_catalogue_name(settings)}): "
                "add it with LLM_CATALOGUE_PATH"
            )
        elif provider not in instances:
            problems.append(
                f"allowed model {model!r} is served by provider {provider!r}, which is not configured "
                f"(known: {', '.join(instances)}; add it to LLM_PROVIDERS)"
            )
        else:
            needed.setdefault(provider, []).append(model)
    _deployment_problems(settings, catalogue, instances, needed, problems)
    if catalogue is not None:
        problems += _wire_api_problems(settings, catalogue, needed, instances)
    for provider, models in needed.items():
        instance = instances[provider]
        if instance.ambient_credentials:
            continue  # Vertex AI: Application Default Credentials, or the access token when given
        if instance.key is None or not instance.key.get_secret_value().strip():
            problems.append(f"{instance.key_names} is not set, but ALLOWED_MODELS has {', '.join(models)}")
    for model, chain in settings.llm_fallbacks.items():
        for name in (model, *chain):
            if name not in settings.allowed_models:
                problems.append(f"LLM_FALLBACKS names {name!r}, which is not in ALLOWED_MODELS")
    if settings.llm_default_model not in settings.allowed_models:
        problems.append(f"LLM_DEFAULT_MODEL {settings.llm_default_model!r} is not in ALLOWED_MODELS")
    policy = _limit_policy(settings, problems)
    problems += _transport_problems(settings)
    authenticator = _authenticator(settings, problems)
    problems += _roles_problems(settings)
    if problems or catalogue is None:
        raise ConfigError("cannot start:\n  - " + "\n  - ".join(problems))
    return Plan(catalogue, needed, instances, authenticator, policy)


AZURE_RESPONSES_API_VERSION = "2025-03-01-preview"
"""The first Azure OpenAI API version with the Responses API (`/openai/responses?api-version=…`; Azure's
"Responses API" how-to, learn.microsoft.com/azure/foundry/openai/how-to/responses)."""


def _wire_api_problems(
    settings: Settings,
    catalogue: Catalogue,
    needed: dict[ProviderName, list[str]],
    instances: dict[ProviderName, ProviderInstance],
) -> list[str]:
    """A model on the Responses API must be served by an OpenAI-kind instance (on Azure, at an API version
    that has it), and must not claim stop sequences, which that API does not take."""
    problems = []
    for provider, models in needed.items():
        instance = instances[provider]
        for model in models:
            if catalogue.get(model).api != WireApi.RESPONSES:
                continue
            if instance.spec.kind != "openai":
                problems.append(
                    f'model {model!r} has api = "responses", but its provider {provider!r} is of kind '
                    f"{instance.spec.kind!r}: only the openai kind speaks the Responses API"
                )
            elif catalogue.get(model).capabilities.stop_sequences:
                problems.append(
                    f'model {model!r} has api = "responses" and stop_sequences = true: the Responses API '
                    'takes no stop sequences (set stop_sequences = false, or api = "chat_completions")'
                )
            elif instance.azure_endpoint and settings.openai_api_version < AZURE_RESPONSES_API_VERSION:
                problems.append(
                    f"model {model!r} is served on the Responses API, which Azure OpenAI has from API "
                    f"version {AZURE_RESPONSES_API_VERSION}; OPENAI_API_VERSION is "
                    f'{settings.openai_api_version!r} (set a later version, or api = "chat_completions" '
                    "for the model in LLM_CATALOGUE_PATH)"
                )
    return problems


def _deployment_problems(
    settings: Settings,
    catalogue: Catalogue | None,
    instances: dict[ProviderName, ProviderInstance],
    needed: dict[ProviderName, list[str]],
    problems: list[str],
) -> None:
    """LLM_DEPLOYMENTS: each model allowed and in the catalogue, each deployment a configured instance of
    the kind the catalogue's provider has (the same model, another instance: not another model). The
    deployments replace the catalogue's provider in `needed`."""
    for model, deployments in settings.llm_deployments.items():
        if model not in settings.allowed_models:
            problems.append(f"LLM_DEPLOYMENTS names model {model!r}, which is not in ALLOWED_MODELS")
            continue
        if catalogue is None or model not in catalogue or not deployments:
            continue
        listed = catalogue.get(model).provider
        kind = instances[listed].spec.kind if listed in instances else None
        for name, models in list(needed.items()):
            if model in models and name not in {d.provider for d in deployments}:
                models.remove(model)
                if not models:
                    del needed[name]
        for deployment in deployments:
            instance = instances.get(deployment.provider)
            if instance is None:
                problems.append(
                    f"LLM_DEPLOYMENTS: {model!r} is deployed on {deployment.provider!r}, which is not "
                    f"configured (known: {', '.join(instances)}; add it to LLM_PROVIDERS)"
                )
            elif kind is not None and instance.spec.kind != kind:
                problems.append(
                    f"LLM_DEPLOYMENTS: {model!r} is a {kind} model; {deployment.provider!r} is of kind "
                    f"{instance.spec.kind!r}"
                )
            elif model not in needed.setdefault(deployment.provider, []):
                needed[deployment.provider].append(model)


def build_capacity(settings: Settings, metrics: Metrics, store: CapacityStore | None = None) -> Capacity:
    """The deployments of LLM_DEPLOYMENTS and their rate limits, counted on Redis when LLM_REDIS_URL is
    set (shared by every replica), else in process."""
    plans = {
        model: [
            Deployment(
                d.provider,
                d.weight,
                Rates(
                    d.requests_per_minute,
                    d.tokens_per_minute,
                    d.input_tokens_per_minute,
                    d.output_tokens_per_minute,
                ),
            )
            for d in deployments
        ]
        for model, deployments in settings.llm_deployments.items()
    }
    if store is None:
        if settings.llm_redis_url is not None and plans:
            url = settings.llm_redis_url.get_secret_value()
            store = RedisCapacityStore.from_url(url, settings.llm_redis_timeout)
        else:
            store = MemoryCapacityStore()
    return Capacity(
        plans,
        store,
        max_queued_per_caller=settings.llm_capacity_queue_per_caller,
        observer=metrics.capacity_observer(),
    )


def _roles_problems(settings: Settings) -> list[str]:
    """LLM_ROLES may name only methods of the contract (or "*") and allowed models: a typo would
    otherwise lock a role out, or seem to grant a model it cannot use, in silence."""
    problems = []
    for name, role in settings.llm_roles.items():
        for method in role.methods:
            if method != "*" and method not in METHODS:
                known = ", ".join(sorted(METHODS))
                problems.append(f"LLM_ROLES role {name!r} names unknown method {method!r} ({known})")
        for model in role.models or ():
            if model not in settings.allowed_models:
                problems.append(
                    f"LLM_ROLES role {name!r} names model {model!r}, which is not in ALLOWED_MODELS"
                )
    return problems


def _limit_policy(settings: Settings, problems: list[str]) -> Policy:
    """LLM_LIMITS_FILE's policy; its problems (and models it names outside the allowlist) appended."""
    try:
        policy = load_limit_policy(settings.llm_limits_file)
    except ValueError as error:
        problems.append(str(error))
        return NO_LIMITS
    named = {
        model
        for scoped in (policy.default, *policy.roles.values(), *policy.identities.values())
        for model in scoped.models
    }
    problems += [
        f"LLM_LIMITS_FILE sets limits for model {model!r}, which is not in ALLOWED_MODELS"
        for model in sorted(named - set(settings.allowed_models))
    ]
    return policy


def build_limit_store(settings: Settings) -> LimitStore:
    """On Redis when LLM_REDIS_URL is set (shared by every replica), else in process."""
    if settings.llm_redis_url is not None:
        return RedisLimitStore(settings.llm_redis_url.get_secret_value(), settings.llm_redis_timeout)
    return MemoryLimitStore()


def build_limiter(
    settings: Settings, policy: Policy, metrics: Metrics, store: LimitStore, clock: Clock = time.time
) -> Limiter:
    """The caller limits of LLM_LIMITS_FILE (`policy`), counted in `store`."""

    def unavailable(error: BaseException) -> None:
        metrics.limit_store_errors.inc()
        log.error("limits.store_unavailable", error=str(error), fail_open=settings.llm_limits_fail_open)

    def budget(identity: str, check: Check, spent: int) -> None:
        period = "day" if check.kind is LimitKind.USD_PER_DAY else "month"
        metrics.budget(identity, period, spent / MICRO, check.limit / MICRO)

    return Limiter(
        policy,
        store,
        fail_open=settings.llm_limits_fail_open,
        lease_seconds=settings.llm_request_timeout + 30,
        clock=clock,
        on_refused=lambda refused: metrics.limit_refused(refused.kind.value, refused.scope),
        on_unavailable=unavailable,
        on_budget=budget,
    )


def _transport_problems(settings: Settings) -> list[str]:
    tls_files = (settings.llm_tls_cert_file, settings.llm_tls_key_file)
    if any(tls_files) and not all(tls_files):
        return ["set both LLM_TLS_CERT_FILE and LLM_TLS_KEY_FILE, or neither"]
    if settings.llm_tls_client_ca_file is not None and not all(tls_files):
        return ["LLM_TLS_CLIENT_CA_FILE (mTLS) needs LLM_TLS_CERT_FILE and LLM_TLS_KEY_FILE"]
    if not all(tls_files) and not settings.llm_allow_plaintext:
        return ["no TLS certificate: set LLM_TLS_CERT_FILE and LLM_TLS_KEY_FILE, or LLM_ALLOW_PLAINTEXT=true"]
    unreadable = [
        str(path)
        for path in (*tls_files, settings.llm_tls_client_ca_file)
        if path is not None and not path.is_file()
    ]
    return [f"cannot read TLS file {path}" for path in unreadable]


def _authenticator(settings: Settings, problems: list[str]) -> Authenticator | None:
    """The caller authentication (None when off); its problems appended."""
    if settings.llm_auth_disabled:
        return None
    secret = settings.llm_jwt_hs256_secret
    sources = (secret, settings.llm_jwt_public_key_file, settings.llm_jwt_jwks_file)
    if not any(sources):
        problems.append(
            "authentication is on but has no key: set LLM_JWT_HS256_SECRET, LLM_JWT_PUBLIC_KEY_FILE or "
            "LLM_JWT_JWKS_FILE, or LLM_AUTH_DISABLED=true"
        )
        return None
    if secret is not None and (problem := secret_problem(secret.get_secret_value())) is not None:
        problems.append(problem)
    try:
        return build_authenticator(settings)
    except OSError as error:
        problems.append(f"cannot read {error.filename}: {error.strerror}")
    except (ValueError, TypeError, jwt.PyJWTError) as error:
        problems.append(f"cannot load the JWT key settings: {_one_line(error)}")
    return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


def build_authenticator(settings: Settings) -> Authenticator | None:
    """None when authentication is off. Raises OSError, ValueError or jwt.PyJWTError for an unusable key
    file or JWKS (check_settings turns those into start-up problems)."""
    if settings.llm_auth_disabled:
        return None
    secret = settings.llm_jwt_hs256_secret
    return Authenticator(
        hs256_secret=secret.get_secret_value() if secret is not None else None,
        public_key_file=settings.llm_jwt_public_key_file,
        jwks_file=settings.llm_jwt_jwks_file,
        issuer=settings.llm_jwt_issuer,
        audience=settings.llm_jwt_audience,
        leeway=settings.llm_jwt_leeway,
        roles={
            name: Role(frozenset(role.methods), frozenset(role.models) if role.models is not None else None)
            for name, role in settings.llm_roles.items()
        },
        roles_claim=settings.llm_roles_claim,
        max_subject_length=settings.llm_max_metadata_value_length,
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS with a client CA) credentials, or None to serve plaintext."""
    if settings.llm_tls_cert_file is None or settings.llm_tls_key_file is None:
        return None
    pair = (settings.llm_tls_key_file.read_bytes(), settings.llm_tls_cert_file.read_bytes())
    client_ca = settings.llm_tls_client_ca_file.read_bytes() if settings.llm_tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def build_providers(settings: Settings, plan: Plan) -> dict[ProviderName, Provider]:
    """One adapter per needed provider instance, built by its kind's spec."""
    providers: dict[ProviderName, Provider] = {}
    for name, models in plan.needed.items():
        instance = plan.instances[name]
        providers[name] = instance.spec.factory(
            ProviderSettings(
                name=name,
                api_key=instance.key.get_secret_value() if instance.key is not None else "",
                base_url=instance.base_url,
                max_connections=settings.llm_max_connections,
                default_max_tokens=settings.llm_default_max_tokens,
                azure_endpoint=instance.azure_endpoint,
                api_version=settings.openai_api_version,
                reasoning_summaries=settings.openai_reasoning_summaries,
                vertex_project=instance.vertex_project,
                vertex_region=instance.vertex_region,
                probe_model=next(iter(models), None),
            )
        )
    return providers


def redactor_for(settings: Settings) -> Redactor:
    """Scrubs every configured secret, and anything shaped like a registered provider's key."""
    return Redactor(settings.secrets(), [spec.key_pattern for spec in SPECS.values()])


@dataclass
class App:
    """A built gateway: the grpc.aio server and what it owns."""

    server: grpc.aio.Server
    port: int
    gateway: Gateway
    health_monitor: HealthMonitor
    health_servicer: Any  # grpc_health.v1.health.aio.HealthServicer (untyped)
    providers: dict[ProviderName, Provider]
    metrics: Metrics
    limiter: Limiter
    metrics_address: tuple[str, int] | None
    """Where to serve /metrics (port 0 picks one); None serves no metrics endpoint."""
    tracer_provider: TracerProvider | None = None
    """The tracer provider the app built (and flushes at stop); None when traces are off or injected."""
    metrics_port: int | None = None
    _metrics_server: Any = None
    drain: Drain = field(default_factory=Drain)
    """Counts calls in flight; refuses new ones once the drain notice starts."""
    _capacity_gauges: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve /metrics, then gRPC. ConfigError (one line naming the flag) when the metrics port
        cannot be bound, e.g. another process listens on it."""
        if self.metrics_address is not None:
            host, port = self.metrics_address
            try:
                self._metrics_server, _ = start_http_server(port, host, registry=self.metrics.registry)
            except OSError as error:
                await self.server.stop(None)  # the gRPC port is bound already: release it
                raise ConfigError(
                    f"cannot serve metrics on {host}:{port}: {error.strerror or error}; choose another "
                    "port with --metrics-port (0: any free port, -1: no metrics endpoint)"
                ) from None
            self.metrics_port = self._metrics_server.server_port
        await self.server.start()
        self.health_monitor.start()
        if self.gateway.capacity is not None:
            self._capacity_gauges = asyncio.create_task(_refresh_capacity_gauges(self.gateway.capacity))
        for service in ("", SERVICE_NAME):
            await self.health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = 5.0, notice: float = DRAIN_NOTICE_S) -> None:
        """Report NOT_SERVING, let in-flight calls finish within `grace`, then release everything.

        For up to `notice` seconds (less once no call is in flight) the listener stays open, so health
        checks answer NOT_SERVING and new calls get UNAVAILABLE (server/api/draining.py); then the grpc
        server closes it and gives the calls still running what is left of `grace`."""
        await self.health_servicer.enter_graceful_shutdown()
        waited = await self.drain.notice(0.0 if grace is None else min(notice, grace))
        await self.server.stop(None if grace is None else max(0.0, grace - waited))
        await self.health_monitor.stop()
        if self._capacity_gauges is not None:
            self._capacity_gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._capacity_gauges
        await asyncio.gather(*(provider.aclose() for provider in self.providers.values()))
        await self.limiter.aclose()
        self.gateway.checker.close()  # answer checks are bounded; queued ones are dropped
        if self.gateway.capacity is not None:
            await self.gateway.capacity.aclose()
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)  # flushes the spans still queued
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


CAPACITY_GAUGES_S = 5.0
"""How often the deployments' limit and use gauges are read from the capacity store (all replicas)."""


async def _refresh_capacity_gauges(capacity: Capacity) -> None:
    while True:
        await capacity.states()  # sets the gauges through the capacity observer
        await asyncio.sleep(CAPACITY_GAUGES_S)


def pending_call_limits(max_in_flight: int, providers: int) -> list[tuple[str, int]]:
    """grpc core cancels (CANCELLED, before any handler runs) calls that arrive faster than the server
    takes them, past 3000 waiting by default (1000 before it starts dropping some): a burst of 5000
    streams lost 2000 (docs/benchmarks.md). Raised to what admission control lets in, so that the
    gateway's own limit (RESOURCE_EXHAUSTED, with its reason) is the one a caller meets."""
    admitted = max_in_flight * max(1, providers)
    return [
        ("grpc.server.max_pending_requests", max(1000, admitted)),
        ("grpc.server.max_pending_requests_hard_limit", max(3000, 2 * admitted)),
    ]


def build_app(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 50051,
    metrics_port: int | None = None,
    providers: dict[ProviderName, Provider] | None = None,
    reuse_port: bool = False,
    clock: Clock = time.time,
    limit_store: LimitStore | None = None,
    tracer_provider: TracerProvider | None = None,
    circuit_clock: Clock = time.monotonic,
    capacity_store: CapacityStore | None = None,
) -> App:
    """Build (not start) the gateway. Raises ConfigError when the settings cannot work."""
    plan = check_settings(settings)
    catalogue = plan.catalogue
    warn_of_retiring_models(catalogue, settings.allowed_models)
    providers = providers if providers is not None else build_providers(settings, plan)
    redactor = redactor_for(settings)
    metrics = Metrics()
    endpoint = settings.traces_endpoint()
    owned_tracer = None
    if tracer_provider is None and endpoint is not None:
        tracer_provider = owned_tracer = build_tracer_provider(settings.otel_service_name, endpoint)
    tracing = Tracing(tracer_provider) if tracer_provider is not None else None
    store = limit_store if limit_store is not None else build_limit_store(settings)
    limiter = build_limiter(settings, plan.policy, metrics, store, clock)
    circuit = CircuitBreaker(
        list(providers),
        settings.llm_circuit_failures,
        settings.llm_circuit_cooldown,
        min_trial_seconds=min(MIN_TRIAL_SECONDS, settings.llm_request_timeout),
        clock=circuit_clock,
    )
    gateway = Gateway(
        allowlist=Allowlist(settings.allowed_models, settings.llm_default_model),
        providers=providers,
        retry=RetryPolicy(
            settings.llm_max_retries, settings.llm_retry_base_delay, settings.llm_retry_max_delay
        ),
        limits=Limits(
            max_request_bytes=settings.llm_max_request_bytes,
            max_messages=settings.llm_max_messages,
            max_stop_sequences=settings.llm_max_stop_sequences,
            max_stop_length=settings.llm_max_stop_length,
            max_metadata_value_length=settings.llm_max_metadata_value_length,
            max_image_bytes=settings.llm_max_image_bytes,
            max_document_bytes=settings.llm_max_document_bytes,
            max_attachment_bytes=settings.llm_max_attachment_bytes,
            max_tools=settings.llm_max_tools,
        ),
        request_timeout=settings.llm_request_timeout,
        observer=MetricsObserver(metrics, tracing),
        admission=Admission(
            list(providers),
            settings.llm_max_in_flight,
            settings.llm_queue_timeout,
            settings.max_in_flight_per_caller(),
        ),
        circuit=circuit,
        catalogue=catalogue,
        fallbacks=settings.llm_fallbacks,
        limiter=limiter,
        capacity=build_capacity(settings, metrics, capacity_store) if settings.llm_deployments else None,
        default_max_tokens=settings.llm_default_max_tokens,
    )
    monitor = HealthMonitor(providers, circuit, settings.llm_health_interval)
    # The transport limit sits above the content limit, so an oversize request usually gets the
    # gateway's own INVALID_ARGUMENT naming the limit; only a grossly oversize one meets gRPC's.
    max_message = max(
        4 * 1024 * 1024, 2 * settings.llm_max_request_bytes + 2 * settings.llm_max_attachment_bytes
    )
    drain = Drain()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            # Long-lived HTTP/2 connections would pin a client to one replica forever: ask clients to
            # reconnect every few minutes (with a grace for the calls in flight) so load rebalances.
            ("grpc.max_connection_age_ms", int(settings.llm_max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.llm_max_connection_age_grace * 1000)),
            # Only --workers shares a port; otherwise a second server on a busy port must fail to start.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            *pending_call_limits(settings.llm_max_in_flight, len(providers)),
        ],
    )
    pipeline = Pipeline(
        metrics,
        redactor,
        plan.authenticator,
        settings.llm_max_metadata_value_length,
        tracing=tracing,
        drain=drain,
    )
    add_to_server(LLMServicer(gateway, monitor, metrics, redactor), pipeline, server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    credentials = server_credentials(settings)
    address = f"{host}:{port}"
    try:
        bound = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(
            f"cannot listen on {host}:{port} (is another process using it?); choose another port with "
            "--port (0: any free port) or another address with --host"
        )
    metrics_address = None if metrics_port is None else (host, metrics_port)
    return App(
        server,
        bound,
        gateway,
        monitor,
        health_servicer,
        providers,
        metrics,
        limiter,
        metrics_address,
        owned_tracer,
        drain=drain,
    )
