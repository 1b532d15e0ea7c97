"""Business settings of an export, shared by the assets."""

from __future__ import annotations

import hashlib
import json

import dagster as dg


class ExportSettings(dg.ConfigurableResource):
    """Defaults come from the environment in definitions.py; run config can override
    `generate_summary` per run (see the summaries asset)."""

    summaries_enabled: bool = False
    max_concurrency: int = 10
    # The order the period's calls are downloaded and transcribed (CALLTEXTS_CALL_ORDER):
    # "longest_first" keeps the STT's slots busy to the end of the run; "day" as listed
    call_order: str = "longest_first"
    # STT requests in flight across all runs on the ledger's database (0: no shared limit,
    # only max_concurrency per run): CALLTEXTS_STT_MAX_IN_FLIGHT
    stt_max_in_flight: int = 0
    # WHISPER_MODEL and its tariff: a ledger row is priced by the models it names
    # (billing/tariffs.py), these for the configured ones, list prices for the others
    stt_model: str = "whisper-1"
    price_per_minute_usd: float = 0.006
    # How a request is billed: "second" (OpenAI's models) or "minute" (per started minute);
    # clients.stt_models.billing_unit of WHISPER_MODEL and STT_BILLING_UNIT
    billing_unit: str = "second"
    # The second opinion (WHISPER_FALLBACK_MODEL, "" none), its tariff and billing unit
    fallback_model: str = ""
    fallback_price_per_minute_usd: float = 0.0
    fallback_billing_unit: str = "minute"
    usd_rub_rate: float = 100.0
    budget_usd: float = 0.0  # 0: no budget set
    csv_decimal_mark: str = ","  # the registry CSV's, for the spreadsheets that open it
    mask_phones_in_transcripts: bool = False
    # The language of the report and the transcript headers: "ru" or "en" (CALLTEXTS_LANGUAGE)
    language: str = "ru"
    # How stereo lines get their speakers: "energy" (one STT pass, roles from the channels),
    # "per_channel" (each side sent on its own: for servers without times; twice the bill),
    # "none" (one speaker label)
    stt_role_mode: str = "energy"
    # "speech": only the stretches the voice activity detector calls speech are sent (no
    # speech at all: nothing sent, `no_speech`); "all": the recording whole. The settings'
    # default (STT_SEND) is speech and definitions.py always passes it; a resource built
    # without it (tests on the sandbox's tone calls) sends the recording whole.
    stt_send: str = "all"
    # True: hash every stored recording on every run (an audit); else only those modified
    # since they were stored
    verify_checksums: bool = False
    retry_missing_audio: bool = False
    is_sandbox: bool = False
    # No defaults: a relative default would land in whatever folder the process runs in.
    work_dir: str  # spooled downloads and audio chunks (personal data)
    log_dir: str  # logs/call_export_<timestamp>.jsonl of every run

    def outputs_fingerprint(self) -> str:
        """A hash of the settings that shape the period's files (registry, report, QA
        sample): a re-run after one of them changed makes the files again (#26)."""
        shaping = (
            "stt_model", "price_per_minute_usd", "billing_unit", "fallback_model",
            "fallback_price_per_minute_usd", "fallback_billing_unit", "usd_rub_rate",
            "budget_usd", "csv_decimal_mark", "mask_phones_in_transcripts", "language",
            "stt_role_mode", "stt_send", "is_sandbox",
        )  # fmt: skip
        values = json.dumps({name: getattr(self, name) for name in shaping}, sort_keys=True)
        return hashlib.sha256(values.encode()).hexdigest()


def outputs_stamp(settings: ExportSettings, period_stamp: str) -> str:
    """What a deliverable of a period was made from: the ledger's rows and the settings."""
    return hashlib.sha256(f"{settings.outputs_fingerprint()}:{period_stamp}".encode()).hexdigest()
