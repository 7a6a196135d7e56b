"""CostGuard: a call's token totals against its agent's limits, and the goodbye's deadline, with
literal usage and literal times."""

from __future__ import annotations

from agent.call.cost import CostGuard, CostLimitReached
from agent.config.models import CallPolicy
from agent.observability.pricing import ModelPrices, PriceTable

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
# USD per million tokens: audio in 3, audio out 12 (the default table's native-audio prices).
PRICES = PriceTable({"gemini-2.5-flash-native-audio": ModelPrices({"AUDIO": 3.0}, {"AUDIO": 12.0})})


def guard(**policy: object) -> CostGuard:
    return CostGuard(CallPolicy(**policy), MODEL, PRICES)  # type: ignore[arg-type]


def test_without_limits_the_guard_never_fires() -> None:
    watch = guard()
    assert watch.usage({"prompt_audio": 10**9, "response_audio": 10**9}) is None
    assert watch.reached is None
    assert watch.deadline is None


def test_the_token_limit_counts_prompt_and_response_tokens_of_every_modality() -> None:
    watch = guard(max_tokens=1000)
    assert watch.usage({"prompt_text": 400, "prompt_audio": 300, "response_audio": 299}) is None
    reached = watch.usage({"prompt_text": 400, "prompt_audio": 300, "response_audio": 300})
    # 300 audio tokens in at $3/M and 300 out at $12/M: $0.0045 (the text is not priced here).
    assert reached == CostLimitReached("tokens", 1000, 0.0045)
    assert watch.usage({"prompt_audio": 5000}) is None  # it fires once


def test_the_cost_limit_uses_the_price_table() -> None:
    watch = guard(max_cost_usd=0.01)
    # 1,000 audio tokens in ($0.003) and 500 out ($0.006): $0.009, under the limit.
    assert watch.usage({"prompt_audio": 1000, "response_audio": 500}) is None
    # 1,000 in and 584 out: $0.003 + $0.007008 = $0.010008.
    reached = watch.usage({"prompt_audio": 1000, "response_audio": 584})
    assert reached == CostLimitReached("cost", 1584, 0.010008)


def test_a_cost_limit_for_a_model_without_prices_is_flagged_and_never_fires() -> None:
    watch = CostGuard(CallPolicy(max_cost_usd=0.01), "some-unlisted-model", PRICES)
    assert watch.unpriced
    assert watch.usage({"prompt_audio": 10**9}) is None
    assert not guard(max_cost_usd=0.01).unpriced
    assert not guard(max_tokens=5).unpriced


def test_the_goodbye_has_a_deadline_that_fires_once() -> None:
    watch = guard(max_tokens=10, cost_limit_goodbye_s=15.0)
    assert watch.usage({"response_audio": 10}) is not None
    watch.goodbye_requested(100.0)
    watch.goodbye_requested(104.0)  # asked again: the first deadline stands
    assert watch.deadline == 115.0
    assert not watch.overdue(114.9)
    assert watch.overdue(115.0)
    assert watch.deadline is None
    assert not watch.overdue(200.0)
