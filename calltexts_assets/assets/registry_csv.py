"""registry_csv: one `;`-separated row per call of the run's period, for Excel."""

import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import dagster as dg

from calltexts_assets.assets.checks import check_result, check_spec, table_preview
from calltexts_assets.assets.figures import record_day_figures, run_totals
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, run_period
from calltexts_assets.assets.summaries import summaries
from calltexts_assets.core.storage_keys import registry_key
from calltexts_assets.core.workdir import prepared_workdir
from calltexts_assets.reporting.quality import cost_matches, duration_variance, registry_complete
from calltexts_assets.reporting.registry import PREVIEW_ROWS, registry_frame, write_registry_file
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource

_UPLOAD_CHUNK = 1024 * 1024


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    file.seek(0)
    while chunk := file.read(_UPLOAD_CHUNK):
        yield chunk


@dg.asset(
    deps=[summaries],
    **DAILY_SINGLE_RUN,
    group_name="reporting",
    kinds={"csv", "storage"},
    check_specs=[
        check_spec(
            "duration_variance",
            "registry_csv",
            "Measured audio vs Bitrix24 durations differ by <= 0.5 %. Blocks the report.",
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
            "Every transcribed call costs ceil(minutes) x tariff.",
            blocking=True,
        ),
    ],
    description="`exports/<from>_<to>/registry/calls_<from>_<to>.csv` for the run's period "
    "(a single-run backfill: the whole range), built from the ledger.",
)
def registry_csv(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    period = run_period(context)
    db = ledger.get()
    price = export_settings.price_per_minute_usd
    # Summary columns appear once any call has a summary, even if summaries are now off.
    with_summaries = export_settings.summaries_enabled or db.has_summaries(period.export_ids)
    store = storage.get()
    key = registry_key(period.first, period.last)
    # A 60-day registry is written, uploaded and validated through a file, a day of rows at a
    # time: memory does not grow with the period. It holds phone numbers (personal data), so
    # it is staged in the work dir, not the system's /tmp; an unnamed file leaves nothing
    # behind if the run is killed.
    with tempfile.TemporaryFile(dir=prepared_workdir(export_settings.work_dir)) as staged:
        written = write_registry_file(
            db.days(period.export_ids),
            staged,
            summaries_enabled=with_summaries,
            price_per_minute=price,
        )
        store.write_stream(key, _chunks(staged))
        staged.seek(0)
        complete = registry_complete(staged, summaries_enabled=with_summaries)
    preview = registry_frame(written.preview, summaries_enabled=with_summaries)
    record_day_figures(context, period, lambda day: {"rows": written.rows_by_day.get(day, 0)})
    yield dg.MaterializeResult(
        metadata={
            **run_totals(period, {"rows": written.rows, "bytes": written.size}),
            "path": dg.PathMetadataValue(store.uri(key)),
            "preview": table_preview(preview, rows=PREVIEW_ROWS),
        }
    )
    # Fresh single-pass iterators: the ledger is read again, a day at a time, per check.
    yield check_result(duration_variance(db.iter_records(period.export_ids)))
    yield check_result(complete)
    yield check_result(cost_matches(db.iter_records(period.export_ids), price))
