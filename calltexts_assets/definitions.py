"""The code location: assets, checks, jobs, schedules and resources built from the environment."""

from __future__ import annotations

from typing import Any

import dagster as dg

from calltexts_assets.assets import all_assets
from calltexts_assets.assets.partitions import backfill_policy, with_backfill_policy
from calltexts_assets.audio.memory import return_large_buffers_to_os
from calltexts_assets.clients.stt_models import billing_unit
from calltexts_assets.orchestration.jobs import calls_export
from calltexts_assets.orchestration.retention_job import retention
from calltexts_assets.orchestration.schedules import build_schedules
from calltexts_assets.orchestration.sensors import (
    reap_dead_runs_sensor,
    record_export_failure,
    record_export_success,
)
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource, WhisperResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.settings import (
    Secret,
    Settings,
    apply_dagster_environment,
    load_settings,
)

# Every process that loads the code location (run, step subprocess, webserver) decodes or
# may decode audio: keep its freed buffers from pinning memory.
return_large_buffers_to_os()
# Fewer Dagster event writes per range run (settings.DAGSTER_ENVIRONMENT).
apply_dagster_environment()


def _env_var(secret: Secret) -> Any:
    """A secret resolved by Dagster at run time, or "" when it is not set at all."""
    return dg.EnvVar(secret.name) if secret else ""


def _openai(settings: Settings) -> dict[str, Any]:
    return {
        "api_key": _env_var(settings.openai_api_key),
        "base_url": settings.openai_base_url,
        "proxy_url": _env_var(settings.chatgpt_proxy_url),
        "retry_wait_scale": settings.retry_scale,
    }


def build_resources(settings: Settings) -> dict[str, Any]:
    ledger_url = _env_var(settings.database_url) or settings.sqlite_url
    return {
        "bitrix24": Bitrix24Resource(
            webhook_url=_env_var(settings.bitrix24_webhook_url),
            oauth_token=_env_var(settings.bitrix24_oauth_token),
            portal_url=settings.bitrix24_portal_url,
            oauth_refresh_token=_env_var(settings.bitrix24_oauth_refresh_token),
            client_id=settings.bitrix24_client_id,
            client_secret=_env_var(settings.bitrix24_client_secret),
            oauth_server=settings.bitrix24_oauth_server,
            token_store_url=ledger_url,
            requests_per_second=settings.bitrix24_requests_per_second,
            shared_pacing_url=ledger_url if settings.bitrix24_shared_pacing else "",
            pace_downloads=settings.bitrix24_pace_downloads,
            recording_hosts=list(settings.recording_hosts),
            recording_networks=list(settings.recording_networks),
            allow_private_addresses=settings.sandbox,
            max_recording_mb=settings.max_recording_mb,
            download_deadline_sec=settings.download_deadline_sec,
            retry_wait_scale=settings.retry_scale,
        ),
        "whisper": WhisperResource(
            **_openai(settings),
            model=settings.whisper_model,
            language=settings.whisper_language,
            keywords=list(settings.whisper_keywords),
            max_upload_mb=settings.stt_max_upload_mb,
            max_request_sec=settings.stt_max_request_sec,
            fallback_model=settings.whisper_fallback_model,
            fallback_base_url=settings.whisper_fallback_base_url,
            fallback_api_key=_env_var(settings.whisper_fallback_api_key),
        ),
        "summariser": SummariserResource(**_openai(settings), model=settings.summary_model),
        "storage": _storage(settings),
        "ledger": LedgerResource(database_url=ledger_url, journal_dir=str(settings.log_dir)),
        "export_settings": ExportSettings(
            summaries_enabled=settings.summaries_enabled,
            max_concurrency=settings.concurrency,
            call_order=settings.call_order,
            stt_max_in_flight=settings.stt_max_in_flight,
            stt_model=settings.whisper_model,
            price_per_minute_usd=settings.price_per_minute_usd,
            billing_unit=billing_unit(settings.whisper_model, settings.stt_billing_unit),
            fallback_model=settings.whisper_fallback_model,
            fallback_price_per_minute_usd=settings.whisper_fallback_price_per_minute_usd,
            # STT_BILLING_UNIT is the bill of WHISPER_MODEL's server: the fallback's too when
            # it is served there; its own server bills in the model's unit
            fallback_billing_unit=billing_unit(
                settings.whisper_fallback_model,
                "model" if settings.whisper_fallback_base_url else settings.stt_billing_unit,
            ),
            usd_rub_rate=settings.usd_rub_rate,
            budget_usd=settings.budget_usd,
            csv_decimal_mark=settings.csv_decimal_mark,
            language=settings.language,
            stt_role_mode=settings.stt_role_mode,
            stt_send=settings.stt_send,
            mask_phones_in_transcripts=settings.mask_phones_in_transcripts,
            verify_checksums=settings.verify_checksums,
            is_sandbox=settings.sandbox,
            log_dir=str(settings.log_dir),
            work_dir=str(settings.work_dir),
        ),
    }


def _storage(settings: Settings) -> StorageResource:
    fields: dict[str, Any] = {
        "backend": settings.storage_backend,
        "local_root": str(settings.home),
        "s3_bucket": settings.s3_bucket,
        "s3_prefix": settings.s3_prefix,
        "sse": settings.s3_sse,
        "kms_key_id": settings.s3_kms_key_id,
    }
    if settings.storage_backend != "s3":
        return StorageResource(**fields)
    # Here, not at the top: only the S3 backend needs dagster-aws (~0.6 s of import, #26).
    from dagster_aws.s3 import S3Resource

    from calltexts_assets.resources.s3_storage import S3StorageResource

    s3 = S3Resource(
        endpoint_url=settings.s3_endpoint_url or None, region_name=settings.aws_region or None
    )
    return S3StorageResource(**fields, s3=s3)


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    return dg.Definitions(
        assets=with_backfill_policy(all_assets, backfill_policy(settings.backfill_run_days)),
        jobs=[calls_export, retention],
        schedules=build_schedules(settings.schedules_running),
        sensors=[record_export_success, record_export_failure, reap_dead_runs_sensor],
        resources=build_resources(settings),
        # Materializations and backfills launched from the UI run the implicit asset job:
        # in-process as calls_export (orchestration/jobs.py), not a process per step.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
