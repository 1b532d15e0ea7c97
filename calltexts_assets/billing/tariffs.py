"""What each model's STT requests cost: one lookup, by the model a ledger row names.

A row is priced by its own models, not by today's settings: `model` names the model the
requests of `stt_request_sec` went to, `fallback_model` those of `fallback_request_sec`. A
stored answer re-adopted after WHISPER_MODEL or WHISPER_FALLBACK_MODEL changed costs what its
models bill. The configured models' tariffs come first (STT_PRICE_PER_MINUTE_USD and
STT_BILLING_UNIT for WHISPER_MODEL, WHISPER_FALLBACK_PRICE_PER_MINUTE_USD for the fallback,
else their list prices), then OpenAI's list prices (clients/stt_models.py); a model in
neither has no known tariff (`of` gives None).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from calltexts_assets.billing.cost import (
    MINUTE,
    PRICE_PER_MINUTE_USD,
    SECOND,
    decode_request_seconds,
    record_billed_seconds,
    requests_billed_seconds,
    seconds_cost_usd,
)
from calltexts_assets.state.ledger import CallRecord


@dataclass(frozen=True)
class Tariff:
    price_per_minute: Decimal
    unit: str = MINUTE

    @classmethod
    def of(cls, price_per_minute: float | Decimal, unit: str = MINUTE) -> Tariff:
        return cls(Decimal(str(price_per_minute)), unit)

    def billed_seconds(self, requests: Iterable[float]) -> int:
        return requests_billed_seconds(requests, self.unit)

    def cost(self, requests: Iterable[float]) -> Decimal:
        """Exact cost of requests billed on these seconds, each rounded up on its own."""
        return seconds_cost_usd(self.billed_seconds(requests), self.price_per_minute)


class UnpricedModel(ValueError):
    """A row names a model that has no known tariff now."""


@dataclass(frozen=True)
class Tariffs:
    """The tariff of each model. `model` "" (`flat`): every model at `primary`."""

    primary: Tariff
    model: str = ""  # WHISPER_MODEL
    fallback: Tariff | None = None
    fallback_model: str = ""  # WHISPER_FALLBACK_MODEL
    listed: Mapping[str, Tariff] = field(default_factory=dict)

    @classmethod
    def flat(cls, price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD, unit: str = MINUTE):
        return cls(Tariff.of(price_per_minute, unit))

    def of(self, model: str | None, *, fallback: bool = False) -> Tariff | None:
        """The tariff of `model`'s requests, as the first model (or, `fallback`, as the
        second opinion: a model may be both, on two servers); None: no tariff known. A row
        without a model (from before models were recorded) is priced as the configured one."""
        if not self.model:
            return self.primary
        mine = [(self.model, self.primary), (self.fallback_model, self.fallback)]
        if fallback:
            mine.reverse()
        if not model:
            return mine[0][1] or self.primary
        for name, tariff in mine:
            if tariff is not None and model == name:
                return tariff
        return self.listed.get(model)

    def _of(self, model: str | None, *, fallback: bool = False) -> Tariff:
        tariff = self.of(model, fallback=fallback)
        if tariff is None:
            raise UnpricedModel(f"no tariff known for the STT model {model!r}")
        return tariff

    def unpriced(self, record: CallRecord) -> tuple[str, ...]:
        """The models a row names whose tariff is not known."""
        found = [] if self.of(record.model) else [record.model or ""]
        if record.fallback_model and not self.of(record.fallback_model, fallback=True):
            found.append(record.fallback_model)
        return tuple(found)

    def billed_seconds(self, record: CallRecord) -> tuple[int, int]:
        """What a row's requests are billed on, each in its model's unit: the first model's
        (`cost.record_billed_seconds`: a row from before requests were recorded, its
        duration) and the second opinion's. Raises UnpricedModel."""
        first = record_billed_seconds(record, self._of(record.model).unit)
        requests = decode_request_seconds(record.fallback_request_sec) or []
        if not requests:
            return first, 0
        return first, self._of(record.fallback_model, fallback=True).billed_seconds(requests)

    def cost(self, record: CallRecord) -> Decimal:
        """The exact bill of a row's requests, each model at its own tariff."""
        first, second = self.billed_seconds(record)
        cost = seconds_cost_usd(first, self._of(record.model).price_per_minute)
        if second:
            cost += seconds_cost_usd(
                second, self._of(record.fallback_model, fallback=True).price_per_minute
            )
        return cost

    def request_cost(
        self, model: str, requests: Iterable[float], *, fallback: bool = False
    ) -> Decimal:
        return self._of(model, fallback=fallback).cost(requests)


# Every model at whisper-1's list price, per second: the default of the functions that take
# tariffs (tests, and callers that price nothing but rows without a cost).
WHISPER_1 = Tariffs.flat(PRICE_PER_MINUTE_USD, SECOND)
