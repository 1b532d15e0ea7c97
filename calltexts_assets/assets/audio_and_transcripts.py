"""raw_audio and transcripts: two assets of the graph, computed by one step.

A call is transcribed as soon as its recording is stored, not after the last download of
the period: with both assets selected (every run of the export job), the downloads run in
their own workers at most 2 x concurrency calls ahead of the transcriptions, so the STT
is kept busy from the first minute of a 60-day backfill. Either asset can still be
materialized alone (the step is subsettable): raw_audio alone only downloads, transcripts
alone only transcribes what is stored.
"""

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, nullcontext
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.assets.call_list import call_list, require_listed
from calltexts_assets.assets.call_steps import call_steps, stopping_the_step
from calltexts_assets.assets.checks import check_result, check_spec, model_lifecycle
from calltexts_assets.assets.figures import minutes, record_day_figures, run_totals, tariffs, usd
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, RunPeriod, run_period
from calltexts_assets.audio.fetch import (
    about_to_download,
    already_stored,
    fetch_recording,
    needs_fetch,
)
from calltexts_assets.audio.links import LinkPrefetcher
from calltexts_assets.billing.budget import Budget, within_budget
from calltexts_assets.billing.cost import billed_seconds, call_cost_usd
from calltexts_assets.clients.storage import Storage
from calltexts_assets.files.workdir import prepared_workdir, released_when_done, sweep_leftovers
from calltexts_assets.limits.processes import owner_is_over, owner_name
from calltexts_assets.quality.checks import coverage
from calltexts_assets.quality.duplicates import duplicate_transcripts
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import WhisperResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.state.ledger import CallRecord, Ledger, PeriodTotals, Status
from calltexts_assets.state.progress import PROGRESS_RECORD, ProgressWatch, snapshot
from calltexts_assets.state.schedule import DAY_ORDER, in_order
from calltexts_assets.state.shared_limits import stt_slots
from calltexts_assets.state.steps import CallSteps, StepOutcome
from calltexts_assets.transcripts.dialogue import RequestsInFlight
from calltexts_assets.transcripts.step import (
    ADOPTED,
    REMADE,
    SecondOpinion,
    from_stored_answer,
    needs_transcript,
    needs_work,
    stored_answer_first,
    stored_transcript_keys,
    transcribe_record,
)

raw_audio = dg.AssetSpec(
    "raw_audio",
    deps=[call_list],
    group_name="calls",
    kinds={"bitrix24", "storage"},
    description="Recordings at `exports/<month>/raw/YYYY/MM/DD/call_<id>.<mp3|wav|...>` (the "
    "real format), from the call's link or its Bitrix24 Drive file. 404/410 -> "
    "missing_audio. A re-run downloads nothing already stored with a matching checksum.",
)

transcripts = dg.AssetSpec(
    "transcripts",
    deps=[raw_audio],
    group_name="calls",
    kinds={"openai", "storage"},
    description="`exports/<month>/transcripts/call_<id>.txt`: UTF-8, metadata header, dialogue "
    "by roles (stereo: left = operator, right = client). Calls already transcribed are skipped.",
)

PROGRESS_EVERY_SEC = 10.0
# fetch outcomes that leave a stored recording
_STORED = frozenset({"downloaded", "stored", ADOPTED})


def stored_now(db: Ledger, fetched: Iterable[tuple[CallRecord, str]]) -> Iterator[CallRecord]:
    """The calls of the download stage, as it finishes each, that now need a transcript."""
    for record, outcome in fetched:
        if outcome not in _STORED:
            continue
        # A fresh download changed the row; a copy already stored left it as it was read.
        current = db.record(record.key) if outcome != "stored" else record
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
    require_listed(db, period)
    store = storage.get()
    # What runs that are over left (kill -9 mid-download, mid-STT, mid-write); live runs' stay.
    leftovers = sweep_leftovers(
        export_settings.work_dir, store.remove_partial_writes, owner_is_over
    )
    if leftovers.total:
        context.log.info(f"removed the leftovers of runs that are over: {leftovers.figures()}")
    workdir = prepared_workdir(export_settings.work_dir, owner_name())
    workers = export_settings.max_concurrency
    # `workers` requests in flight to the STT, and one more worker per core decoding the next
    # call meanwhile (RequestsInFlight holds the extra ones back at the STT). Concurrency 1
    # stays one call at a time.
    stt_workers = workers + (os.cpu_count() or 1) if workers > 1 else 1
    downloading = raw_audio.key in context.selected_asset_keys
    transcribing = transcripts.key in context.selected_asset_keys

    stt = whisper.get_client()
    # Before any request: a model past its shutdown date stops the step with one line.
    lifecycle = model_lifecycle(context, stt, "WHISPER_MODEL", stt.model) if transcribing else {}
    fallback_stt = whisper.get_fallback_client()
    if fallback_stt is not None and transcribing:
        model_lifecycle(context, fallback_stt, "WHISPER_FALLBACK_MODEL", fallback_stt.model)
    downloads = call_steps(
        context,
        db,
        stage="raw_audio",
        failure_status=Status.DOWNLOAD_ERROR,
        log_dir=export_settings.log_dir,
        needed=partial(needs_fetch, retry_missing=export_settings.retry_missing_audio),
        settled=partial(
            already_stored, storage=store, verify_checksum=export_settings.verify_checksums
        ),
    )
    transcriptions = call_steps(
        context,
        db,
        stage="transcripts",
        failure_status=Status.TRANSCRIPTION_ERROR,
        log_dir=export_settings.log_dir,
        needed=partial(needs_work, storage=store, verify=export_settings.verify_checksums),
        summed=("stt_duration_sec", "cost", "stt_sent_sec", "stt_requests", "hallucinations"),
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
        several_recordings=db.calls_with_several_recordings(period.export_ids),
    )
    # The account's limit across all runs (CALLTEXTS_STT_MAX_IN_FLIGHT), on the ledger's db.
    shared_stt = stt_slots(db.engine, export_settings.stt_max_in_flight, owner=context.run.run_id)
    primary = RequestsInFlight(stt, workers, shared=shared_stt)
    fallback = (
        SecondOpinion(
            # Its own server's requests are bounded by this run's concurrency alone; on
            # WHISPER_MODEL's server it takes the same slots: `concurrency` requests in all.
            RequestsInFlight(fallback_stt, workers)
            if whisper.fallback_base_url
            else primary.sharing_with(fallback_stt),
            expected_languages=(stt.language,) if stt.language else (),
        )
        if fallback_stt is not None
        else None
    )
    transcribe = _transcriber(primary, store, export_settings, workdir, fallback)

    retry_missing = export_settings.retry_missing_audio
    # Longest first by default (CALLTEXTS_CALL_ORDER): the run ends on short calls, so the
    # STT's slots stay busy to the end; the transcriptions follow the downloads, which stay
    # at most the two stages' windows ahead. Only the calls with work left are sorted (and
    # held). One worker gains nothing from an order: it keeps the ledger's.
    order = export_settings.call_order if workers > 1 else DAY_ORDER
    to_fetch = links.ahead(
        in_order(
            (
                r
                for r in db.iter_records(period.export_ids)
                if needs_fetch(r, retry_missing=retry_missing)
            ),
            order,
        ),
        about_to_download,
    )
    # Every call that needs a transcript, read when the sweep gets to it: in the export job
    # also those an overlapping run downloaded (calls this stage already took are skipped);
    # and every transcribed one whose file went missing or changed since it was written.
    verify = export_settings.verify_checksums
    to_transcribe = in_order(
        (r for r in db.iter_records(period.export_ids) if needs_work(r, store, verify=verify)),
        order,
    )
    # A line in the run log every 5 % of the period's calls (hours against the real STT) and
    # at the end of the step, marked so that `calltexts run` leaves it to its own progress line.
    progress = ProgressWatch(
        lambda: snapshot(db, period.export_ids),
        lambda line: context.log.info(line, extra={PROGRESS_RECORD: True}),
        interval=PROGRESS_EVERY_SEC,
        only_changes=True,
        final=True,
    )
    # Slots still held when the step ends (it failed mid-call) are given back here.
    with (
        released_when_done(workdir),
        stopping_the_step(),
        progress,
        closing(shared_stt) if shared_stt else nullcontext(),
    ):
        if downloading and transcribing:
            fetched = downloads.stream(to_fetch, fetch, max_workers=workers)
            # Raises, after the calls in flight, if the downloads were stopped (e.g. token).
            transcriptions.run(
                chain(stored_now(db, fetched), to_transcribe), transcribe, max_workers=stt_workers
            )
        elif downloading:
            downloads.run(to_fetch, fetch, max_workers=workers)
        elif transcribing:
            transcriptions.run(to_transcribe, transcribe, max_workers=stt_workers)

    if downloading:
        yield _result(
            context,
            period,
            db,
            downloads,
            raw_audio,
            _raw_audio_figures,
            # source/format of every stored recording of the period: link/mp3, drive/wav, ...
            recordings=db.stored_recordings(period.export_ids),
            # REST requests: link batches, and Drive downloads (the portal's /rest/ path)
            bitrix24_requests=client.stats.requests + client.stats.rest_downloads - requests_before,
            links_resolved_ahead=links.resolved,
            links_resolved_alone=links.fresh,
            **leftovers.figures(),
        )
    if transcribing:
        yield _result(
            context,
            period,
            db,
            transcriptions,
            transcripts,
            _transcripts_figures,
            whisper_requests=stt.stats.requests,
            whisper_retries=stt.stats.retries,
            **(
                {"fallback_requests": fallback_stt.stats.requests}
                if fallback_stt is not None
                else {}
            ),
            **lifecycle,
            languages=db.totals(period.export_ids).languages,
            **leftovers.figures(),
        )
    yield from _checks(context, db, store, period)


def _transcriber(
    whisper: RequestsInFlight,
    store: Storage,
    settings: ExportSettings,
    workdir: Path,
    fallback: SecondOpinion | None = None,
) -> Callable[[CallRecord], StepOutcome]:
    """The per-call transcription step: what the STT answered before when it is stored, else a
    request, stopped by the run's budget when one is set (the second opinion's request too:
    its expected cost is reserved before it is sent)."""
    prices = tariffs(settings)
    stored = partial(
        from_stored_answer,
        storage=store,
        tariffs=prices,
        labels=settings.language,
        mask_phones=settings.mask_phones_in_transcripts,
        sandbox=settings.is_sandbox,
    )
    transcribe = partial(
        transcribe_record,
        whisper=whisper,
        storage=store,
        tariffs=prices,
        role_mode=settings.stt_role_mode,
        send=settings.stt_send,
        labels=settings.language,
        mask_phones=settings.mask_phones_in_transcripts,
        sandbox=settings.is_sandbox,
        workdir=workdir,
        fallback=fallback,
        expected_languages=(whisper.language,) if whisper.language else (),
    )
    if settings.budget_usd > 0:
        price = settings.price_per_minute_usd
        paid = within_budget(
            Budget(settings.budget_usd),
            lambda record: call_cost_usd(billed_seconds(record), price, settings.billing_unit),
            lambda record, reserve: transcribe(record, reserve=reserve),
        )
        return partial(stored_answer_first, stored=stored, paid=paid)
    return partial(stored_answer_first, stored=stored, paid=transcribe)


def _checks(
    context: dg.AssetExecutionContext, db: Ledger, store: Storage, period: RunPeriod
) -> Iterator[dg.AssetCheckResult]:
    checks = {key.name for key in context.selected_asset_check_keys}
    records = partial(db.iter_records, period.export_ids)  # a fresh pass per check
    if "coverage" in checks:
        yield check_result(coverage(records()))
    if "duplicate_transcripts" in checks:
        stored = stored_transcript_keys(store, period.days)
        yield check_result(duplicate_transcripts(records(), stored))


def _raw_audio_figures(
    outcomes: Mapping[str, int], sums: Mapping[str, float], totals: PeriodTotals
) -> dict[str, int | float]:
    return {
        "downloaded": outcomes.get("downloaded", 0),
        # stored under the call's name while the ledger had no row of it: hashed, not fetched
        "recordings_adopted": outcomes.get(ADOPTED, 0),
        "skipped_already_stored": outcomes.get("stored", 0),
        "failed": outcomes.get("failed", 0),
        "missing_audio": totals.count(Status.MISSING_AUDIO),
        "calls_with_audio": totals.with_audio,
        "bytes_downloaded": int(sums.get("bytes", 0)),
    }


def _transcripts_figures(
    outcomes: Mapping[str, int], sums: Mapping[str, float], totals: PeriodTotals
) -> dict[str, int | float]:
    transcribed_now = outcomes.get("transcribed", 0)
    transcribed_total = totals.count(Status.TRANSCRIBED)
    adopted = outcomes.get(ADOPTED, 0)
    return {
        "transcribed_now": transcribed_now,
        "failed_now": outcomes.get("failed", 0),
        "skipped_already_done": transcribed_total - transcribed_now - adopted,
        # from the STT's stored answers, no request: files missing or changed since written,
        # and calls the ledger did not have as transcribed (a lost ledger)
        "transcripts_remade": outcomes.get(REMADE, 0),
        "answers_adopted": adopted,
        "transcribed_total": transcribed_total,
        "transcription_errors": totals.count(Status.TRANSCRIPTION_ERROR),
        "audio_minutes_now": minutes(sums.get("stt_duration_sec", 0.0)),
        "audio_minutes_total": minutes(totals.transcribed_seconds),
        # what went to the STT now: minutes sent (both sides in per-channel mode) and
        # requests (retries included); hallucinated lines dropped
        "stt_minutes_sent_now": minutes(sums.get("stt_sent_sec", 0.0)),
        "stt_requests_now": int(sums.get("stt_requests", 0)),
        "hallucinations_dropped_now": int(sums.get("hallucinations", 0)),
        "cost_usd_now": usd(sums.get("cost", 0.0)),
        "cost_usd_total": usd(totals.transcribed_cost),
    }


def _result(
    context: dg.AssetExecutionContext,
    period: RunPeriod,
    db: Ledger,
    done: CallSteps,
    spec: dg.AssetSpec,
    figures: Callable[[Mapping[str, int], Mapping[str, float], PeriodTotals], dict[str, Any]],
    **run_only: Any,
) -> dg.MaterializeResult:
    record_day_figures(
        context,
        period,
        lambda day: figures(done.by_day[day], done.sums_by_day[day], db.totals([day])),
        asset_key=spec.key,
    )
    sums = {**done.sums, "bytes": done.bytes}
    run = figures(done.tally.outcomes, sums, db.totals(period.export_ids))
    return dg.MaterializeResult(
        asset_key=spec.key, metadata=run_totals(period, {**run, **run_only})
    )
