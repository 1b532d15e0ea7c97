"""The code location: assets, checks, jobs, schedules and resources built from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from calltexts_assets.assets import all_assets
from calltexts_assets.core.memory import return_large_buffers_to_os
from calltexts_assets.orchestration.jobs import calls_export
from calltexts_assets.orchestration.retention_job import retention
from calltexts_assets.orchestration.schedules import daily_export, weekly_catch_up
from calltexts_assets.orchestration.sensors import record_export_failure, record_export_success
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource, WhisperResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.settings import database_url, env_flag, env_float, home_dir

# Every process that loads the code location (run, step subprocess, webserver) decodes or
# may decode audio: keep its freed buffers from pinning memory.
return_large_buffers_to_os()


def _secret(name: str, env: Mapping[str, str]) -> Any:
    """A secret resolved by Dagster at run time, or "" when it is not set at all."""
    return dg.EnvVar(name) if env.get(name) else ""


def _openai_settings(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "api_key": _secret("OPENAI_API_KEY", env),
        "base_url": env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
        "proxy_url": _secret("CHATGPT_PROXY_URL", env),
        "retry_wait_scale": env_float("CALLTEXTS_RETRY_SCALE", 1.0, env),
    }


def build_resources(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    retry_scale = env_float("CALLTEXTS_RETRY_SCALE", 1.0, env)
    storage_backend = env.get("CALLTEXTS_STORAGE", "local")
    return {
        "bitrix24": Bitrix24Resource(
            webhook_url=_secret("BITRIX24_WEBHOOK_URL", env),
            oauth_token=_secret("BITRIX24_OAUTH_TOKEN", env),
            portal_url=env.get("BITRIX24_PORTAL_URL", ""),
            requests_per_second=env_float("BITRIX24_REQUESTS_PER_SECOND", 2.0, env),
            retry_wait_scale=retry_scale,
        ),
        "whisper": WhisperResource(
            **_openai_settings(env),
            model=env.get("WHISPER_MODEL", "whisper-1"),
            language=env.get("WHISPER_LANGUAGE", ""),
        ),
        "summariser": SummariserResource(
            **_openai_settings(env), model=env.get("SUMMARY_MODEL", "gpt-4o-mini")
        ),
        "storage": StorageResource(
            backend=storage_backend,
            local_root=str(home_dir(env)),
            s3_bucket=env.get("CALLTEXTS_S3_BUCKET", ""),
            s3_prefix=env.get("CALLTEXTS_S3_PREFIX", ""),
            sse=env.get("CALLTEXTS_S3_SSE", "AES256"),
            kms_key_id=env.get("CALLTEXTS_S3_KMS_KEY_ID", ""),
            s3=S3Resource(
                endpoint_url=env.get("CALLTEXTS_S3_ENDPOINT_URL") or None,
                region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            ),
        ),
        "ledger": LedgerResource(
            database_url=dg.EnvVar("CALLTEXTS_DATABASE_URL")
            if env.get("CALLTEXTS_DATABASE_URL")
            else database_url(env)
        ),
        "export_settings": ExportSettings(
            summaries_enabled=env_flag("EXPORT_SUMMARY_ENABLED", False, env),
            max_concurrency=int(env_float("CALLTEXTS_CONCURRENCY", 10, env)),
            price_per_minute_usd=env_float("STT_PRICE_PER_MINUTE_USD", 0.006, env),
            usd_rub_rate=env_float("USD_RUB_RATE", 100.0, env),
            budget_usd=env_float("CALLTEXTS_BUDGET_USD", 0.0, env),
            mask_phones_in_transcripts=env_flag("TRANSCRIPT_MASK_PHONES", False, env),
            verify_checksums=env_flag("CALLTEXTS_VERIFY_CHECKSUMS", False, env),
            is_sandbox=env_flag("CALLTEXTS_SANDBOX", False, env),
            log_dir=str(home_dir(env) / "logs"),
            work_dir=str(home_dir(env) / "tmp"),
        ),
    }


def build_definitions(env: Mapping[str, str] = os.environ) -> dg.Definitions:
    return dg.Definitions(
        assets=all_assets,
        jobs=[calls_export, retention],
        schedules=[daily_export, weekly_catch_up],
        sensors=[record_export_success, record_export_failure],
        resources=build_resources(env),
    )


defs = build_definitions()
