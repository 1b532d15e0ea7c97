"""raw_audio and transcripts: two assets of the graph, computed by one step.

A call is transcribed as soon as its recording is stored, not after the last download of
the period: with both assets selected (every run of the export job), the downloads run in
their own workers at most 2 x concurrency calls ahead of the transcriptions, so the STT
is kept busy from the first minute of a 60-day backfill. Either asset can still be
materialized alone (the step is subsettable): raw_audio alone only downloads, transcripts
alone only transcribes what is stored.
"""

import os
from collections.abc import Iterable, Iterator
from functools import partial

import dagster as dg

from calltexts_assets.assets.call_list import call_list
from calltexts_assets.assets.checks import check_result, check_spec
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, RunPeriod, run_period
from calltexts_assets.audio.fetch import about_to_download, fetch_recording, needs_fetch
from calltexts_assets.audio.links import LinkPrefetcher
from calltexts_assets.clients.whisper import WhisperClient
from calltexts_assets.core.ledger import CallRecord, Ledger, Status
from calltexts_assets.core.steps import CallSteps
from calltexts_assets.core.workdir import prepared_workdir
from calltexts_assets.orchestration.call_steps import call_steps, stopping_the_step
from calltexts_assets.reporting.duplicates import duplicate_transcripts
from calltexts_assets.reporting.quality import coverage
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import WhisperResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.transcripts.dialogue import RequestsInFlight
from calltexts_assets.transcripts.step import (
    needs_transcript,
    stored_transcript_keys,
    transcribe_record,
)

raw_audio = dg.AssetSpec(
    "raw_audio",
    deps=[call_list],
    group_name="calls",
    kinds={"bitrix24", "storage"},
    description="Recordings at exports/<month>/raw/YYYY/MM/DD/call_<id>.<mp3|wav|...> (the "
    "real format), from the call's link or its Bitrix24 Drive file. 404/410 -> "
    "missing_audio. A re-run downloads nothing already stored with a matching checksum.",
)

transcripts = dg.AssetSpec(
    "transcripts",
    deps=[raw_audio],
    group_name="calls",
    kinds={"openai", "storage"},
    description="exports/<month>/transcripts/call_<id>.txt: UTF-8, metadata header, dialogue "
    "by roles (stereo: left = operator, right = client). Calls already transcribed are skipped.",
)

_STORED = frozenset({"downloaded", "stored"})  # fetch outcomes that leave a stored recording


def _minutes(seconds: float) -> dg.FloatMetadataValue:
    return dg.FloatMetadataValue(round(seconds / 60, 2))


def _usd(amount: float) -> dg.FloatMetadataValue:
    return dg.FloatMetadataValue(round(amount, 4))


def stored_now(db: Ledger, fetched: Iterable[tuple[CallRecord, str]]) -> Iterator[CallRecord]:
    """The calls of the download stage, as it finishes each, that now need a transcript."""
    for record, outcome in fetched:
        if outcome not in _STORED:
            continue
        # A fresh download changed the row; a copy already stored left it as it was read.
        current = db.record(record.key) if outcome == "downloaded" else record
        if current is not None and needs_transcript(current):
            yield current


@dg.multi_asset(
    name="raw_audio_and_transcripts",
    specs=[raw_audio, transcripts],
    can_subset=True,
    **DAILY_SINGLE_RUN,
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
)
def raw_audio_and_transcripts(
    context: dg.AssetExecutionContext,
    bitrix24: Bitrix24Resource,
    whisper: WhisperResource,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    period = run_period(context)
    db = ledger.get()
    store = storage.get()
    workdir = prepared_workdir(export_settings.work_dir)
    workers = export_settings.max_concurrency
    # `workers` requests in flight to the STT, and one more worker per core decoding the next
    # call meanwhile (RequestsInFlight holds the extra ones back at the STT). Concurrency 1
    # stays one call at a time, in the ledger's order.
    stt_workers = workers + (os.cpu_count() or 1) if workers > 1 else 1
    downloading = raw_audio.key in context.selected_asset_keys
    transcribing = transcripts.key in context.selected_asset_keys

    stt = whisper.get_client()
    downloads = call_steps(
        context,
        db,
        stage="raw_audio",
        failure_status=Status.DOWNLOAD_ERROR,
        log_dir=export_settings.log_dir,
    )
    transcriptions = call_steps(
        context,
        db,
        stage="transcripts",
        failure_status=Status.TRANSCRIPTION_ERROR,
        log_dir=export_settings.log_dir,
        summed=("stt_duration_sec", "cost"),
    )
    client = bitrix24.get_client()
    requests_before = client.stats.requests + client.stats.rest_downloads
    links = LinkPrefetcher(client)
    fetch = partial(
        fetch_recording,
        client=client,
        links=links,
        storage=store,
        verify_checksum=export_settings.verify_checksums,
        workdir=workdir,
    )
    transcribe = partial(
        transcribe_record,
        whisper=RequestsInFlight(stt, workers),
        storage=store,
        price_per_minute=export_settings.price_per_minute_usd,
        labels=export_settings.role_labels,
        mask_phones=export_settings.mask_phones_in_transcripts,
        sandbox=export_settings.is_sandbox,
        workdir=workdir,
    )

    retry_missing = export_settings.retry_missing_audio
    to_fetch = links.ahead(
        (
            r
            for r in db.iter_records(period.export_ids)
            if needs_fetch(r, retry_missing=retry_missing)
        ),
        about_to_download,
    )
    with stopping_the_step():
        if downloading and transcribing:
            fetched = downloads.stream(to_fetch, fetch, max_workers=workers)
            # Raises, after the calls in flight, if the downloads were stopped (e.g. token).
            transcriptions.run(stored_now(db, fetched), transcribe, max_workers=stt_workers)
        elif downloading:
            downloads.run(to_fetch, fetch, max_workers=workers)
        elif transcribing:
            to_transcribe = (r for r in db.iter_records(period.export_ids) if needs_transcript(r))
            transcriptions.run(to_transcribe, transcribe, max_workers=stt_workers)

    if downloading:
        yield _raw_audio_result(
            period,
            db,
            downloads,
            links,
            bitrix24_requests=client.stats.requests + client.stats.rest_downloads - requests_before,
        )
    if transcribing:
        yield _transcripts_result(period, db, transcriptions, stt)
    checks = {key.name for key in context.selected_asset_check_keys}
    records = partial(db.iter_records, period.export_ids)  # a fresh pass per check
    if "coverage" in checks:
        yield check_result(coverage(records()))
    if "duplicate_transcripts" in checks:
        stored = stored_transcript_keys(store, period.days)
        yield check_result(duplicate_transcripts(records(), stored))


def _raw_audio_result(
    period: RunPeriod, db: Ledger, done: CallSteps, links: LinkPrefetcher, *, bitrix24_requests: int
) -> dg.MaterializeResult:
    totals = db.totals(period.export_ids)
    return dg.MaterializeResult(
        asset_key=raw_audio.key,
        metadata={
            "period": period.label,
            "downloaded": done.tally.outcomes["downloaded"],
            "skipped_already_stored": done.tally.outcomes["stored"],
            "failed": done.tally.outcomes["failed"],
            "missing_audio": totals.count(Status.MISSING_AUDIO),
            "calls_with_audio": totals.with_audio,
            "bytes_downloaded": done.bytes,
            # source/format of every stored recording of the period: link/mp3, drive/wav, ...
            "recordings": dg.JsonMetadataValue(db.stored_recordings(period.export_ids)),
            # REST requests: link batches, and Drive downloads (the portal's /rest/ path)
            "bitrix24_requests": bitrix24_requests,
            "links_resolved_ahead": links.resolved,
            "links_resolved_alone": links.fresh,
        },
    )


def _transcripts_result(
    period: RunPeriod, db: Ledger, done: CallSteps, whisper: WhisperClient
) -> dg.MaterializeResult:
    totals = db.totals(period.export_ids)
    transcribed_now = done.tally.outcomes["transcribed"]
    transcribed_total = totals.count(Status.TRANSCRIBED)
    return dg.MaterializeResult(
        asset_key=transcripts.key,
        metadata={
            "period": period.label,
            "transcribed_now": transcribed_now,
            "failed_now": done.tally.outcomes["failed"],
            "skipped_already_done": transcribed_total - transcribed_now,
            "transcribed_total": transcribed_total,
            "transcription_errors": totals.count(Status.TRANSCRIPTION_ERROR),
            "audio_minutes_now": _minutes(done.sums["stt_duration_sec"]),
            "audio_minutes_total": _minutes(totals.transcribed_seconds),
            "cost_usd_now": _usd(done.sums["cost"]),
            "cost_usd_total": _usd(totals.transcribed_cost),
            "whisper_requests": whisper.stats.requests,
            "whisper_retries": whisper.stats.retries,
            "languages": dg.JsonMetadataValue(totals.languages),
        },
    )
