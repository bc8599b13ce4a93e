"""Structured output: the gateway's own check of an answer against the request's ResponseFormat.

Providers enforce schemas to different degrees (OpenAI strict mode, Anthropic and Gemini best effort),
so the gateway checks every JSON answer itself and tells the caller, rather than trusting the label.

A schema is the caller's, so everything it can make the gateway do is bounded (docs/security.md):

- at request time (`schema_limit_problem`): its size, its nesting, its `$ref`s (count, chain depth, and
  how far following them expands it; every one must resolve inside the schema itself);
- at answer time (`OutputChecker`): nothing is ever fetched (an explicit `referencing.Registry` whose
  retrieve refuses every URI, so jsonschema's remote-retrieving default registry never runs), and the
  check runs on a worker thread, off the event loop, within a budget of keyword applications and of CPU
  seconds counted inside the validator. Past the budget the verdict is "not checked" with a reason; the
  call itself stays OK.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import referencing
import referencing.exceptions
import referencing.jsonschema
import regex
from jsonschema import exceptions, validators

from server.core.types import FinishReason, ResponseFormat, ResponseFormatType, StructuredOutput

MAX_ERROR_LENGTH = 300
"""An error quotes the offending value; long values are cut so the response stays small."""

# --- request-time limits of a caller's schema (response_format and tool parameters) ----------------
MAX_SCHEMA_BYTES = 128 * 1024
"""JSON text of one schema. OpenAI's own structured-output limits (5000 properties, 120 000 characters
of names and enum values) fit well inside."""
MAX_SCHEMA_DEPTH = 64
"""Nesting of JSON objects and arrays in one schema (one schema level is two JSON levels: `properties`
then the property)."""
MAX_SCHEMA_REFS = 256
"""`$ref` / `$dynamicRef` / `$recursiveRef` keywords in one schema."""
MAX_REF_DEPTH = 16
"""`$ref`s followed one after another, a definition referring to another (a cycle counts once)."""
MAX_SCHEMA_EXPANSION = 20_000
"""Subschemas of the schema with every `$ref` followed (each cycle counted once): what makes checking an
answer cost more than the schema's size (the 2^N `anyOf` bomb expands to 2^N)."""

# --- answer-time budget -----------------------------------------------------------------------------
PATTERN_TIMEOUT = 0.02
"""Seconds one `pattern` may take on one value: a caller's regex must not freeze the server (Python's
`re` backtracks without bound; the `regex` module's matching stops in time and releases the GIL)."""
CHECK_CPU_SECONDS = 0.25
"""CPU seconds (of the checking thread) one answer's check may take; past it the answer is reported
unchecked."""
CHECK_STEPS = 200_000
"""Keyword applications (and items compared) one answer's check may take."""
CHECK_WAIT_SECONDS = 2.0
"""Seconds a call waits for its check, queueing included; then the check is stopped and the answer
reported unchecked."""
CHECK_WORKERS = 2
"""Threads that check answers (a bounded pool: a flood of costly schemas queues, it does not multiply)."""

ANCHOR_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
DATA_KEYS = frozenset({"enum", "const", "default", "examples"})
"""Keywords whose values are data, not subschemas: a `$ref` inside them is just a string."""


class Unchecked:
    """Why an answer was not checked (`StructuredOutput.unchecked_reason`)."""

    BUDGET = "SCHEMA_CHECK_BUDGET_EXCEEDED"
    TIMEOUT = "SCHEMA_CHECK_TIMEOUT"
    NESTING = "SCHEMA_CHECK_TOO_DEEP"
    UNRESOLVABLE = "SCHEMA_REF_UNRESOLVABLE"
    FAILED = "SCHEMA_CHECK_FAILED"


def _refuse(uri: str) -> referencing.Resource[Any]:
    """The registry's retrieve: the gateway fetches nothing a caller names, ever."""
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]
"""A registry that knows nothing and retrieves nothing: only the schema itself (its root and the
resources inside it) resolves; jsonschema adds its bundled metaschemas (no network)."""


@dataclass(slots=True, frozen=True)
class SchemaLimitProblem:
    """A schema over one of the limits above: which (`limit`, e.g. `max_schema_refs`), and a message."""

    limit: str
    message: str


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """What makes `schema` not a valid JSON Schema (by its own `$schema`, else the latest draft), or None.
    Whatever the caller sent, the answer is a message, never an exception. Run `schema_limit_problem`
    first: this walks the schema."""
    try:
        validators.validator_for(schema).check_schema(dict(schema))
    except exceptions.SchemaError as error:
        return _shorten(f"{_path(error.absolute_path)}: {error.message}")
    except RecursionError:
        return "nested too deeply"
    except Exception as error:  # a malformed `$schema` (a list, a number) and the like
        return _shorten(f"cannot be read as a JSON Schema ({type(error).__name__})")
    return None


def schema_limit_problem(schema: Mapping[str, Any], text_bytes: int) -> SchemaLimitProblem | None:
    """Which limit `schema` (parsed from `text_bytes` of JSON) is over, or None. Linear in the schema's
    size: every node is visited once, whatever its `$ref`s."""
    if text_bytes > MAX_SCHEMA_BYTES:
        return SchemaLimitProblem(
            "max_schema_bytes", f"is {text_bytes} bytes; the limit (max_schema_bytes) is {MAX_SCHEMA_BYTES}"
        )
    depth, refs = _depth_and_refs(schema)
    if depth > MAX_SCHEMA_DEPTH:
        return SchemaLimitProblem(
            "max_schema_depth", f"nests deeper than the limit (max_schema_depth) of {MAX_SCHEMA_DEPTH}"
        )
    if refs > MAX_SCHEMA_REFS:
        return SchemaLimitProblem(
            "max_schema_refs", f"has {refs} $refs; the limit (max_schema_refs) is {MAX_SCHEMA_REFS}"
        )
    if refs:
        return _expansion_problem(schema)
    return None


def _depth_and_refs(schema: Any) -> tuple[int, int]:
    deepest = refs = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_SCHEMA_DEPTH:
            break
        if isinstance(node, dict):
            refs += sum(1 for key in ANCHOR_KEYS if key in node)
            stack.extend((value, depth + 1) for value in node.values() if isinstance(value, dict | list))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node if isinstance(value, dict | list))
    return deepest, refs


_ENTER, _EXIT = 0, 1


def _expansion_problem(schema: Mapping[str, Any]) -> SchemaLimitProblem | None:
    """Follow every `$ref` (with the same resolution rules as the check, and the same refusing registry)
    and count what the schema expands to, each node's size computed once (iteratively: no recursion)."""
    specification = referencing.jsonschema.specification_with(
        str(schema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012
    )
    root = specification.create_resource(dict(schema))
    resolver = NO_RETRIEVAL.resolver_with_root(root)
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    values: list[int] = []
    work: list[tuple[int, Any, Any, int]] = [(_ENTER, root.contents, resolver, 0)]
    while work:
        op, node, node_resolver, ref_depth = work.pop()
        key = id(node)
        if op == _EXIT:
            count = node_resolver  # the number of children, carried in the resolver's slot
            size = 1 + sum(values[len(values) - count :])
            del values[len(values) - count :]
            if size > MAX_SCHEMA_EXPANSION:
                return SchemaLimitProblem(
                    "max_schema_expansion",
                    f"expands past the limit (max_schema_expansion) of {MAX_SCHEMA_EXPANSION} subschemas "
                    "when its $refs are followed",
                )
            sizes[key] = size
            on_path.discard(key)
            values.append(size)
            continue
        if key in sizes:
            values.append(sizes[key])
            continue
        if key in on_path or not isinstance(node, dict):  # a cycle is bounded by the answer's depth
            values.append(1)
            continue
        on_path.add(key)
        inner = node_resolver.in_subresource(specification.create_resource(node))
        children: list[tuple[Any, Any, int]] = []
        for name, value in node.items():
            if name in DATA_KEYS:
                continue
            if name in ANCHOR_KEYS and isinstance(value, str):
                if ref_depth >= MAX_REF_DEPTH:
                    return SchemaLimitProblem(
                        "max_ref_depth",
                        f"chains more than {MAX_REF_DEPTH} $refs one after another (the limit, "
                        "max_ref_depth)",
                    )
                try:
                    resolved = inner.lookup(value)
                except referencing.exceptions.Unresolvable:
                    return SchemaLimitProblem(
                        "local_refs_only",
                        _shorten(
                            f"$ref {value!r} does not resolve inside the schema (the gateway fetches "
                            "nothing: every $ref must point into the schema itself)"
                        ),
                    )
                children.append((resolved.contents, resolved.resolver, ref_depth + 1))
            elif isinstance(value, dict):
                children.append((value, inner, ref_depth))
            elif isinstance(value, list):
                children.extend((item, inner, ref_depth) for item in value if isinstance(item, dict))
        work.append((_EXIT, node, len(children), ref_depth))
        work.extend((_ENTER, child, child_resolver, depth) for child, child_resolver, depth in children)
    return None


# --- the answer check ----------------------------------------------------------------------------


class _OverBudget(Exception):
    """The check used up its budget (raised inside the validator; `reason` and `why` say which)."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


class _Stopped(BaseException):
    """A check told to stop before it began (its wait was over while it queued)."""


@dataclass(slots=True)
class _Budget:
    cpu_deadline: float
    """`time.thread_time()` past which the check stops."""
    steps_left: int
    stop: threading.Event = field(default_factory=threading.Event)


_budget: ContextVar[_Budget | None] = ContextVar("llm_grpc_schema_budget", default=None)


def _tick(steps: int = 1) -> _Budget:
    """Count work inside the validator; raise _OverBudget when the check's budget is used up."""
    budget = _budget.get()
    if budget is None:  # pragma: no cover - the validators below run only inside a budget
        raise _OverBudget(Unchecked.FAILED, "the check ran without a budget")
    budget.steps_left -= steps
    if budget.steps_left < 0:
        raise _OverBudget(
            Unchecked.BUDGET, f"the schema needs more than {CHECK_STEPS} steps to check this answer"
        )
    if time.thread_time() > budget.cpu_deadline:
        raise _OverBudget(
            Unchecked.BUDGET, f"checking took more than its {CHECK_CPU_SECONDS:g} s of CPU time"
        )
    if budget.stop.is_set():
        raise _OverBudget(Unchecked.TIMEOUT, f"checking took more than {CHECK_WAIT_SECONDS:g} s")
    return budget


def _search(pattern: str, text: str) -> bool:
    budget = _tick()
    left = budget.cpu_deadline - time.thread_time()
    try:
        return (
            regex.search(pattern, text, timeout=max(0.001, min(PATTERN_TIMEOUT, left)), concurrent=True)
            is not None
        )
    except TimeoutError:
        raise _OverBudget(
            Unchecked.BUDGET, f"the schema's pattern {pattern[:40]!r} took too long to match"
        ) from None


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[exceptions.ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[exceptions.ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if _search(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Any
) -> Iterator[exceptions.ValidationError]:
    """jsonschema's `uniqueItems` compares unsortable items pairwise (quadratic in the answer's length);
    this one hashes each item once."""
    if not unique or not validator.is_type(instance, "array"):
        return
    _tick(len(instance))
    seen: set[Any] = set()
    for item in instance:
        key = _hashable(item)
        if key in seen:  # not the whole array in the message: it can be the whole answer
            yield exceptions.ValidationError(f"has non-unique elements ({_shorten(repr(item))} repeats)")
            return
        seen.add(key)


def _hashable(value: Any) -> Any:
    """A key equal for JSON values JSON Schema calls equal: 1 and 1.0 alike, true and 1 not."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_hashable(item) for item in value))
    return ("o", frozenset((name, _hashable(item)) for name, item in value.items()))


def _counted(keyword: Any) -> Any:
    def apply(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _tick()
        return keyword(validator, value, instance, schema)

    return apply


@functools.cache
def _bounded(draft: type[Any]) -> type[Any]:
    """The draft's validator with every keyword application counted against the check's budget, pattern
    matching that stops in time and a linear `uniqueItems`."""
    keywords = {name: _counted(keyword) for name, keyword in draft.VALIDATORS.items()}
    keywords.update(
        pattern=_counted(_pattern),
        patternProperties=_counted(_pattern_properties),
        uniqueItems=_unique_items,
    )
    extended: type[Any] = validators.extend(draft, keywords)  # type: ignore[no-untyped-call]
    return extended


def check_output(
    text: str,
    response_format: ResponseFormat | None,
    finish_reason: FinishReason,
    *,
    cpu_seconds: float = CHECK_CPU_SECONDS,
    steps: int = CHECK_STEPS,
    stop: threading.Event | None = None,
) -> StructuredOutput | None:
    """The check of an answer for a JSON response format; None for free text, and for a turn that ended
    in tool calls (it is not the answer yet: the answer comes after the tool results). Blocking and
    CPU-bound (within its budget): the gateway runs it through `OutputChecker`, off the event loop."""
    if response_format is None or response_format.type is ResponseFormatType.TEXT:
        return None
    if finish_reason is FinishReason.TOOL_CALLS:
        return None
    try:
        document = json.loads(text)
    except ValueError as error:
        return StructuredOutput(valid=False, error=_shorten(f"the answer is not JSON: {error}"))
    except RecursionError:
        return _unchecked(Unchecked.NESTING, "the answer nests too deeply to read")
    if response_format.type is ResponseFormatType.JSON_OBJECT or response_format.schema is None:
        if isinstance(document, dict):
            return StructuredOutput(valid=True)
        return StructuredOutput(valid=False, error="the answer is JSON but not an object")
    schema = response_format.schema
    budget = _Budget(time.thread_time() + cpu_seconds, steps, stop or threading.Event())
    token = _budget.set(budget)
    try:
        validator = _bounded(validators.validator_for(schema))(dict(schema), registry=NO_RETRIEVAL)
        first = exceptions.best_match(validator.iter_errors(document))
    except _OverBudget as over:
        return _unchecked(over.reason, over.why)
    except RecursionError:
        return _unchecked(Unchecked.NESTING, "the answer or the schema is nested too deeply")
    except Exception as error:  # the answer stays, unchecked; the message names the kind of error only
        # jsonschema wraps referencing's error (in a private class): look inside.
        wrapped = getattr(error, "_wrapped", error)
        if isinstance(wrapped, referencing.exceptions.Unresolvable):
            return _unchecked(Unchecked.UNRESOLVABLE, _unresolvable(wrapped))
        return _unchecked(Unchecked.FAILED, type(error).__name__)
    finally:
        _budget.reset(token)
    if first is None:
        return StructuredOutput(valid=True)
    return StructuredOutput(valid=False, error=_shorten(f"{_path(first.absolute_path)}: {first.message}"))


def _unresolvable(error: referencing.exceptions.Unresolvable) -> str:
    """Names the reference only: nothing retrieved (there is nothing) can reach the caller."""
    return f"$ref {str(error.ref)[:100]!r} does not resolve inside the schema"


def _unchecked(reason: str, why: str) -> StructuredOutput:
    return StructuredOutput(valid=False, error=_shorten(f"not checked: {why}"), unchecked_reason=reason)


class OutputChecker:
    """Runs `check_output` on a small pool of threads so the event loop keeps answering (the validator
    is pure Python; it gives the GIL up at least every `sys.getswitchinterval()`), each check within its
    CPU and step budget. A call waits at most `wait_seconds` (queueing included); a check still running
    then is told to stop, which its budget sees at its next counted step."""

    def __init__(
        self,
        *,
        workers: int = CHECK_WORKERS,
        cpu_seconds: float = CHECK_CPU_SECONDS,
        steps: int = CHECK_STEPS,
        wait_seconds: float = CHECK_WAIT_SECONDS,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-schema-check")
        self._cpu_seconds = cpu_seconds
        self._steps = steps
        self._wait_seconds = wait_seconds

    async def check(
        self, text: str, response_format: ResponseFormat | None, finish_reason: FinishReason
    ) -> StructuredOutput | None:
        if response_format is None or response_format.type is ResponseFormatType.TEXT:
            return None
        if finish_reason is FinishReason.TOOL_CALLS:
            return None
        job = _Job(threading.Event())
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, self._run, job, text, response_format, finish_reason
        )
        try:
            return await asyncio.wait_for(future, self._wait_seconds)
        except TimeoutError:
            job.abandon()
            return _unchecked(Unchecked.TIMEOUT, f"checking took more than {self._wait_seconds:g} s")

    def _run(
        self, job: _Job, text: str, response_format: ResponseFormat, finish_reason: FinishReason
    ) -> StructuredOutput | None:
        try:
            job.begin()
            return check_output(
                text,
                response_format,
                finish_reason,
                cpu_seconds=self._cpu_seconds,
                steps=self._steps,
                stop=job.stop,
            )
        except _Stopped:
            return _unchecked(Unchecked.TIMEOUT, "checking was stopped")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(slots=True)
class _Job:
    stop: threading.Event

    def begin(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    def abandon(self) -> None:
        """Stop the check: its budget sees the flag at its next counted step. (No exception is injected
        into the worker thread: PyThreadState_SetAsyncExc once left the event loop spinning in this
        method, the very freeze the budget exists to prevent.)"""
        self.stop.set()


def _path(parts: Any) -> str:
    """A JSONPath-like location: `$`, `$.user.age`, `$.items[2]`."""
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _shorten(message: str) -> str:
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 1] + "…"
