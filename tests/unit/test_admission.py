"""Admission: the provider limit and the per-caller limit, and that every slot is given back."""

from __future__ import annotations

import asyncio

import pytest

from server.core.admission import Admission
from server.core.errors import CallerOverLimit, Overloaded

OPENAI, GEMINI = "openai", "gemini"


def _admission(max_in_flight: int = 10, max_per_caller: int = 10) -> Admission:
    return Admission([OPENAI, GEMINI], max_in_flight, max_wait=0.0, max_per_caller=max_per_caller)


async def test_the_caller_limit_counts_every_provider_together() -> None:
    admission = _admission(max_per_caller=2)
    async with admission.slot(OPENAI, "a", 1.0), admission.slot(GEMINI, "a", 1.0):
        with pytest.raises(CallerOverLimit) as refused:
            async with admission.slot(GEMINI, "a", 1.0):
                pass
        async with admission.slot(GEMINI, "b", 1.0):
            assert admission.in_flight("b") == 1

    assert refused.value.metadata() == {"caller": "a", "limit": "2"}


async def test_a_caller_at_its_limit_is_refused_before_it_can_wait_for_a_provider_slot() -> None:
    admission = _admission(max_in_flight=1, max_per_caller=1)
    async with admission.slot(OPENAI, "a", 1.0):
        with pytest.raises(CallerOverLimit):
            async with admission.slot(OPENAI, "a", 1.0):
                pass
        with pytest.raises(Overloaded):
            async with admission.slot(OPENAI, "b", 1.0):
                pass


async def test_slots_are_given_back_when_the_call_fails_or_is_refused() -> None:
    admission = _admission(max_in_flight=1, max_per_caller=5)
    with pytest.raises(RuntimeError):
        async with admission.slot(OPENAI, "a", 1.0):
            raise RuntimeError("the provider call failed")
    async with admission.slot(OPENAI, "a", 1.0):
        with pytest.raises(Overloaded):
            async with admission.slot(OPENAI, "a", 1.0):
                pass
        assert admission.in_flight("a") == 1

    assert admission.in_flight("a") == 0


def test_callers_without_a_source_agent_are_reported_as_anonymous() -> None:
    assert CallerOverLimit("", 3).subject == "anonymous"


async def test_idle_waits_for_the_last_slot_to_be_given_back() -> None:
    admission = _admission()
    await admission.idle()  # nothing held: at once
    release = asyncio.Event()

    async def hold(caller: str) -> None:
        async with admission.slot(OPENAI, caller, 1.0):
            await release.wait()

    holders = [asyncio.create_task(hold(caller)) for caller in ("a", "b")]
    await asyncio.sleep(0)  # let both take their slots
    waiting = asyncio.create_task(admission.idle())
    await asyncio.sleep(0)
    assert not waiting.done()

    release.set()
    await asyncio.gather(*holders)
    await waiting

    assert admission.in_flight("a") == admission.in_flight("b") == 0
