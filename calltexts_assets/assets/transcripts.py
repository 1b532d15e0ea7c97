"""transcripts: one text file per call with audio, dialogue by roles."""

from collections.abc import Iterator
from functools import partial

import dagster as dg

from calltexts_assets.assets.checks import check_result, check_spec
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, run_period
from calltexts_assets.assets.raw_audio import raw_audio
from calltexts_assets.ledger import Status
from calltexts_assets.quality import coverage, duplicate_transcripts
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.resources.whisper import WhisperResource
from calltexts_assets.run_context import CallSteps
from calltexts_assets.transcribe_audio import (
    needs_transcript,
    stored_transcript_keys,
    transcribe_record,
)
from calltexts_assets.workdir import prepared_workdir


def _minutes(seconds: float) -> dg.FloatMetadataValue:
    return dg.FloatMetadataValue(round(seconds / 60, 2))


def _usd(amount: float) -> dg.FloatMetadataValue:
    return dg.FloatMetadataValue(round(amount, 4))


@dg.asset(
    deps=[raw_audio],
    **DAILY_SINGLE_RUN,
    group_name="calls",
    kinds={"openai", "storage"},
    pool="stt",
    check_specs=[
        check_spec(
            "coverage",
            "transcripts",
            ">= 99 % of calls with available audio have a transcript (warn from 98 %).",
        ),
        check_spec(
            "duplicate_transcripts",
            "transcripts",
            "No call transcribed twice, no two files for one record.",
            blocking=True,
        ),
    ],
    description="exports/<month>/transcripts/call_<id>.txt: UTF-8, metadata header, dialogue "
    "by roles (stereo: left = operator, right = client). Calls already transcribed are skipped.",
)
def transcripts(
    context: dg.AssetExecutionContext,
    whisper: WhisperResource,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    period = run_period(context)
    db = ledger.get()
    todo = (r for r in db.iter_records(period.export_ids) if needs_transcript(r))
    steps = CallSteps(
        context,
        db,
        stage="transcripts",
        failure_status=Status.TRANSCRIPTION_ERROR,
        log_dir=export_settings.log_dir,
        summed=("stt_duration_sec", "cost"),
    )
    tally = steps.run(
        todo,
        partial(
            transcribe_record,
            whisper=whisper,
            storage=storage.get(),
            price_per_minute=export_settings.price_per_minute_usd,
            labels=export_settings.role_labels,
            mask_phones=export_settings.mask_phones_in_transcripts,
            sandbox=export_settings.is_sandbox,
            workdir=prepared_workdir(export_settings.work_dir),
        ),
        max_workers=export_settings.max_concurrency,
    )
    totals = db.totals(period.export_ids)
    transcribed_now = tally.outcomes["transcribed"]
    transcribed_total = totals.count(Status.TRANSCRIBED)
    yield dg.MaterializeResult(
        metadata={
            "period": period.label,
            "transcribed_now": transcribed_now,
            "failed_now": tally.outcomes["failed"],
            "skipped_already_done": transcribed_total - transcribed_now,
            "transcribed_total": transcribed_total,
            "transcription_errors": totals.count(Status.TRANSCRIPTION_ERROR),
            "audio_minutes_now": _minutes(steps.sums["stt_duration_sec"]),
            "audio_minutes_total": _minutes(totals.transcribed_seconds),
            "cost_usd_now": _usd(steps.sums["cost"]),
            "cost_usd_total": _usd(totals.transcribed_cost),
            "whisper_requests": whisper.stats.requests,
            "whisper_retries": whisper.stats.retries,
            "languages": dg.JsonMetadataValue(totals.languages),
        }
    )
    stored_keys = stored_transcript_keys(storage.get(), period.days)
    yield check_result(coverage(db.iter_records(period.export_ids)))
    yield check_result(duplicate_transcripts(db.iter_records(period.export_ids), stored_keys))
