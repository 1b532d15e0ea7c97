"""`calltexts estimate` and the API's dry run: the period's cost before anything is spent, and
whether the configured models are near or past their shutdown date (`calltexts run` too)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from calltexts_assets.clients.bitrix24 import Bitrix24Client
from calltexts_assets.clients.model_lifecycle import REFUSE, WARN, ModelNotice, configured_models
from calltexts_assets.clients.openai_base import OpenAIConnection, OpenAIService
from calltexts_assets.clients.stt_models import billing_unit
from calltexts_assets.listing.estimate import Estimate, estimate
from calltexts_assets.settings import Settings, portal_today
from calltexts_assets.state.ledger import Ledger


def bitrix24_client(settings: Settings) -> Bitrix24Client:
    """The client a run's resource would build, outside a run (CLI, API)."""
    return Bitrix24Client(
        webhook_url=settings.secret_value(settings.bitrix24_webhook_url),
        oauth_token=settings.secret_value(settings.bitrix24_oauth_token),
        portal_url=settings.bitrix24_portal_url,
        requests_per_second=settings.bitrix24_requests_per_second,
        retry_wait_scale=settings.retry_scale,
    )


def estimate_period(settings: Settings, period_from: date, period_to: date) -> Estimate:
    zone = ZoneInfo(settings.timezone)
    start = datetime(period_from.year, period_from.month, period_from.day, tzinfo=zone)
    end_day = period_to + timedelta(days=1)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone)
    days = [
        (period_from + timedelta(days=n)).isoformat() for n in range((end_day - period_from).days)
    ]
    client = bitrix24_client(settings)
    ledger = Ledger(settings.ledger_url())
    try:
        return estimate(
            client.iter_call_batches(start, end),
            ledger.transcribed_keys(days),
            period_from=period_from,
            period_to=period_to,
            price_per_minute=settings.price_per_minute_usd,
            unit=billing_unit(settings.whisper_model, settings.stt_billing_unit),
            usd_rub_rate=settings.usd_rub_rate,
        )
    finally:
        client.close()
        ledger.dispose()


def configured_model_notices(settings: Settings, *, summaries: bool) -> list[ModelNotice]:
    """The STT model's (and, when summaries will be written, the summary model's) shutdown
    dates from the service's `GET /v1/models` (one request; a server without the list
    refuses nothing)."""
    connection = OpenAIConnection(
        api_key=settings.secret_value(settings.openai_api_key),
        base_url=settings.openai_base_url,
        proxy_url=settings.secret_value(settings.chatgpt_proxy_url),
        timeout_sec=30.0,
    )
    models = {"WHISPER_MODEL": settings.whisper_model}
    if summaries:
        models["SUMMARY_MODEL"] = settings.summary_model
    service = OpenAIService(connection)
    try:
        return configured_models(service, models, portal_today(settings.timezone))
    finally:
        service.close()


def model_problems(notices: list[ModelNotice]) -> tuple[list[str], list[str]]:
    """(refusals, warnings): one line each, naming the setting and the replacement."""
    refused = [n.message for n in notices if n.status == REFUSE]
    warned = [n.message for n in notices if n.status == WARN]
    return refused, warned
