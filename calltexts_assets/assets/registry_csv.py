"""registry_csv: one `;`-separated row per call of the run's period, and the same rows
as a typed .xlsx beside it; computed by one step with `summaries`, which it lists.

One step, because an optional asset cannot be an upstream step of its own: Dagster skips
every step downstream of an output that was not yielded, so a `summaries` left
unmaterialized when summaries are off would skip the registry and the report. Here the
summaries (when on) are written first, then the registry, in the same step. The op keeps the
name `summaries`, so run config `{"ops": {"summaries": {"config": {"generate_summary": ...}}}}`
is what it always was (the API, the CLI and the runbook send it).
"""

import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import dagster as dg

from calltexts_assets.assets.checks import check_result, check_spec, table_preview
from calltexts_assets.assets.figures import record_day_figures, run_totals, tariffs
from calltexts_assets.assets.partitions import (
    DAILY_SINGLE_RUN,
    RunPeriod,
    files_period,
    run_period,
)
from calltexts_assets.assets.summaries import (
    OFF_REASON,
    SummariesConfig,
    summaries,
    summaries_enabled,
    summarise_period,
)
from calltexts_assets.files.storage_keys import registry_key
from calltexts_assets.files.workdir import prepared_workdir, released_when_done
from calltexts_assets.limits.processes import owner_name
from calltexts_assets.quality.checks import (
    cost_matches,
    duration_variance,
    registry_complete,
    stt_durations,
)
from calltexts_assets.registry.rows import PREVIEW_ROWS, registry_frame, write_registry_file
from calltexts_assets.registry.xlsx import RegistryWorkbook
from calltexts_assets.resources.export_settings import ExportSettings, outputs_stamp
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource
from calltexts_assets.resources.storage import StorageResource

_UPLOAD_CHUNK = 1024 * 1024


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    file.seek(0)
    while chunk := file.read(_UPLOAD_CHUNK):
        yield chunk


registry_csv = dg.AssetSpec(
    "registry_csv",
    deps=[summaries],
    group_name="reporting",
    kinds={"csv", "excel", "storage"},
    description="`exports/<from>_<to>/registry/calls_<from>_<to>.csv` (and `.xlsx`) for the "
    "run's period (a single-run backfill: the whole range), built from the ledger.",
)


@dg.multi_asset(
    name="summaries",
    specs=[summaries, registry_csv],
    can_subset=True,
    **DAILY_SINGLE_RUN,
    check_specs=[
        check_spec(
            "duration_variance",
            "registry_csv",
            "Measured audio vs Bitrix24 durations differ by <= 0.5 %. Blocks the report.",
            blocking=True,
        ),
        check_spec(
            "stt_durations",
            "registry_csv",
            "No call whose STT answer reported a length other than the audio sent "
            "(stt_duration_mismatch). Blocks the report.",
            blocking=True,
        ),
        check_spec(
            "registry_complete",
            "registry_csv",
            "The CSV parses back and has every required field of "
            "docs/specs/call_registry_schema.yaml.",
            blocking=True,
        ),
        check_spec(
            "cost_matches",
            "registry_csv",
            "Every transcribed call costs what the service bills: its requests in the model's "
            "billing unit (STT_BILLING_UNIT) x tariff.",
            blocking=True,
        ),
    ],
)
def summaries_and_registry(
    context: dg.AssetExecutionContext,
    config: SummariesConfig,
    summariser: SummariserResource,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    period = run_period(context)
    selected = context.selected_asset_keys
    if summaries.key in selected:
        if summaries_enabled(config, export_settings):
            metadata = summarise_period(
                context, period, summariser, storage, ledger, export_settings
            )
            yield dg.MaterializeResult(asset_key=summaries.key, metadata=metadata)
        else:
            # No materialization: the UI shows the summaries' days as missing, as they are.
            context.log.info(f"{OFF_REASON}: no summary written, summaries not materialized")
    if registry_csv.key in selected:
        yield from _registry(
            context, period, files_period(context), storage, ledger, export_settings
        )


def _registry(
    context: dg.AssetExecutionContext,
    period: RunPeriod,
    files: RunPeriod,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    db = ledger.get()
    prices = tariffs(export_settings)  # each row priced by the models it names
    mark = export_settings.csv_decimal_mark
    store = storage.get()
    # `files`: the run's period, or the wider one whose changed days alone it runs (#26)
    key, xlsx_key = (registry_key(files.first, files.last, fmt) for fmt in ("csv", "xlsx"))
    stamp = outputs_stamp(export_settings, db.period_stamp(files.export_ids))
    work_dir = prepared_workdir(export_settings.work_dir, owner_name())
    # A 60-day registry is written, uploaded and validated through files, a day of rows at a
    # time: memory does not grow with the period. They hold phone numbers (personal data),
    # so they are staged in the work dir, not the system's /tmp; unnamed files leave nothing
    # behind if the run is killed.
    with (
        released_when_done(work_dir),
        tempfile.TemporaryFile(dir=work_dir) as staged,
        tempfile.TemporaryFile(dir=work_dir) as staged_xlsx,
    ):
        with RegistryWorkbook(staged_xlsx, tmpdir=work_dir) as workbook:
            written = write_registry_file(
                db.days(files.export_ids),
                staged,
                tariffs=prices,
                decimal_mark=mark,
                also=workbook.add_rows,
            )
        written_csv = store.write_stream(key, _chunks(staged))
        if workbook.incomplete:
            context.log.warning(workbook.incomplete)
            store.delete(xlsx_key)  # an older, shorter workbook would pass for this one
            xlsx_sha256 = ""  # left unwritten on purpose
        else:
            xlsx_sha256 = store.write_stream(xlsx_key, _chunks(staged_xlsx)).sha256
        staged.seek(0)
        complete = registry_complete(staged, decimal_mark=mark)
    run_id = context.run.run_id
    db.record_deliverable(key, written_csv.sha256, stamp, run_id)
    db.record_deliverable(xlsx_key, xlsx_sha256, stamp, run_id)
    record_day_figures(
        context,
        period,
        lambda day: {"rows": written.rows_by_day.get(day, 0)},
        asset_key=registry_csv.key,
    )
    yield dg.MaterializeResult(
        asset_key=registry_csv.key,
        metadata={
            **run_totals(files, {"rows": written.rows, "bytes": written.size}),
            "path": dg.PathMetadataValue(store.uri(key)),
            **(
                {"xlsx_not_written": workbook.incomplete}
                if workbook.incomplete
                else {"xlsx_path": dg.PathMetadataValue(store.uri(xlsx_key))}
            ),
            "preview": table_preview(registry_frame(written.preview), rows=PREVIEW_ROWS),
        },
    )
    # Fresh single-pass iterators: the ledger is read again, a day at a time, per check.
    yield check_result(duration_variance(db.iter_records(files.export_ids)))
    yield check_result(stt_durations(db.iter_records(files.export_ids)))
    yield check_result(complete)
    yield check_result(cost_matches(db.iter_records(files.export_ids), tariffs=prices))
