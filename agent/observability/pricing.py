"""What a call cost: token prices per model, and the estimate in each call's summary line."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import yaml

from agent.errors import ConfigError

# -- what a call cost ------------------------------------------------------------------------------

Direction = Literal["prompt", "response"]


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per million tokens for one model, by direction and upper-case modality (``AUDIO``).

    ``prompt`` is what the model reads (the Live API bills each turn's whole context again, which
    its per-turn ``promptTokenCount`` already includes); ``response`` is what it generates.
    """

    prompt: Mapping[str, float]
    response: Mapping[str, float]

    def per_million(self, direction: str, modality: str) -> float | None:
        """The price of a million ``direction`` tokens of ``modality``, or None if not listed."""
        table = self.prompt if direction == "prompt" else self.response
        return table.get(modality.upper())


def _same_price_media(text: float, media: float) -> dict[str, float]:
    return {"TEXT": text, "AUDIO": media, "VIDEO": media, "IMAGE": media}


#: USD per 1M tokens, Gemini Developer API paid tier, by model-name prefix. Estimates for
#: dashboards and call records, never for billing: prices change; check
#: https://ai.google.dev/gemini-api/docs/pricing and override with ``PRICE_TABLE``.
DEFAULT_PRICES: Final[Mapping[str, ModelPrices]] = {
    # Gemini 2.5 Flash native audio (Live API); Vertex AI names it gemini-live-2.5-flash-*.
    "gemini-2.5-flash-native-audio": ModelPrices(
        prompt=_same_price_media(0.50, 3.00), response={"TEXT": 2.00, "AUDIO": 12.00}
    ),
    "gemini-live-2.5-flash": ModelPrices(
        prompt=_same_price_media(0.50, 3.00), response={"TEXT": 2.00, "AUDIO": 12.00}
    ),
    "gemini-2.0-flash-live": ModelPrices(
        prompt=_same_price_media(0.35, 2.10), response={"TEXT": 1.50, "AUDIO": 8.50}
    ),
}


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What a call's tokens cost, by the table: ``usd`` is None when no price matched the model.

    ``unpriced_tokens`` counts tokens of a modality the model's prices do not list: when it is not
    0 the estimate is low.
    """

    usd: float | None
    priced_as: str | None
    unpriced_tokens: int

    def summary_fields(self) -> dict[str, object]:
        """The fields for the ``call.ended`` line and the call record's summary."""
        return {
            "cost_usd": None if self.usd is None else round(self.usd, 6),
            "cost_priced_as": self.priced_as,
            "cost_unpriced_tokens": self.unpriced_tokens,
        }


class PriceTable:
    """Prices by model name; a model matches its exact name, else the longest listed prefix, else
    ``"*"`` if listed. ``models/`` and Vertex resource paths are stripped first."""

    def __init__(self, prices: Mapping[str, ModelPrices] = DEFAULT_PRICES) -> None:
        self.prices: Mapping[str, ModelPrices] = dict(prices)

    def lookup(self, model: str) -> tuple[str, ModelPrices] | None:
        """The table entry ``model`` is priced as: (its key, its prices), or None."""
        name = model.rsplit("/", 1)[-1]
        if name in self.prices:
            return name, self.prices[name]
        prefixes = [key for key in self.prices if key != "*" and name.startswith(key)]
        if prefixes:
            key = max(prefixes, key=len)
            return key, self.prices[key]
        if "*" in self.prices:
            return "*", self.prices["*"]
        return None

    def estimate(self, model: str, usage: Mapping[str, int]) -> CostEstimate:
        """The cost of ``usage``, keyed ``<direction>_<modality>`` (``prompt_audio``,
        ``response_text``: the shape of ``CallStats.usage`` and of call records)."""
        found = self.lookup(model)
        if found is None:
            return CostEstimate(None, None, sum(usage.values()))
        key, prices = found
        usd = 0.0
        unpriced = 0
        for usage_key, tokens in usage.items():
            direction, _, modality = usage_key.partition("_")
            price = prices.per_million(direction, modality)
            if price is None:
                unpriced += tokens
            else:
                usd += tokens * price / 1_000_000
        return CostEstimate(usd, key, unpriced)

    @classmethod
    def from_spec(cls, spec: str | None, *, defaults: bool = True) -> PriceTable:
        """The table ``PRICE_TABLE`` describes: unset or empty gives :data:`DEFAULT_PRICES`;
        inline JSON (starting with ``{``) or the path of a ``.json``, ``.yaml`` or ``.yml`` file
        gives those entries on top of the defaults (``defaults=False``: instead of them)::

            {"gemini-2.5-flash-native-audio": {"prompt": {"TEXT": 0.5, "AUDIO": 3.0},
                                               "response": {"TEXT": 2.0, "AUDIO": 12.0}},
             "*": {"prompt": {"AUDIO": 3.0}, "response": {"AUDIO": 12.0}}}

        Raises :class:`~agent.errors.ConfigError` naming ``PRICE_TABLE`` (and the file) when the
        text cannot be read or is not such a table.
        """
        base: dict[str, ModelPrices] = dict(DEFAULT_PRICES) if defaults else {}
        if spec is None or not spec.strip():
            return cls(base)
        text = spec.strip()
        source: str | None = None
        try:
            if text.startswith("{"):
                raw: object = json.loads(text)
            else:
                source = text
                content = Path(text).read_text(encoding="utf-8")
                if text.endswith((".yaml", ".yml")):
                    raw = yaml.safe_load(content)
                else:
                    raw = json.loads(content)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"cannot read the price table: {exc}", file=source, key="PRICE_TABLE"
            ) from exc
        base.update(_parse_prices(raw, source))
        return cls(base)


def _parse_prices(raw: object, source: str | None) -> dict[str, ModelPrices]:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"price table: {message}", file=source, key="PRICE_TABLE")

    if not isinstance(raw, Mapping):
        raise fail("must map model names to {prompt: {...}, response: {...}}")
    parsed: dict[str, ModelPrices] = {}
    for model, entry in raw.items():
        if not isinstance(model, str) or not model:
            raise fail(f"model names must be text, got {model!r}")
        if not isinstance(entry, Mapping) or set(entry) - {"prompt", "response"}:
            raise fail(f"{model}: must have only 'prompt' and 'response' tables")
        tables: dict[str, dict[str, float]] = {}
        for direction in ("prompt", "response"):
            table = entry.get(direction, {})
            if not isinstance(table, Mapping):
                raise fail(f"{model}.{direction}: must map modalities to USD per 1M tokens")
            prices: dict[str, float] = {}
            for modality, price in table.items():
                if (
                    isinstance(price, bool)
                    or not isinstance(price, int | float)
                    or not math.isfinite(price)
                    or price < 0
                ):
                    raise fail(f"{model}.{direction}.{modality}: must be a number >= 0")
                prices[str(modality).upper()] = float(price)
            tables[direction] = prices
        parsed[model] = ModelPrices(prompt=tables["prompt"], response=tables["response"])
    return parsed
