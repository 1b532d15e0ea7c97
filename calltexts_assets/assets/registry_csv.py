"""registry_csv: one `;`-separated row per call of the run's period, for Excel."""

from collections.abc import Iterator

import dagster as dg

from calltexts_assets.assets.checks import check_result, check_spec, table_preview
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, run_period
from calltexts_assets.assets.summaries import summaries
from calltexts_assets.quality import cost_matches, duration_variance, registry_complete
from calltexts_assets.registry import registry_frame, registry_rows, write_registry_csv
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.storage_keys import registry_key


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
    description="exports/<from>_<to>/registry/calls_<from>_<to>.csv for the run's period "
    "(a single-run backfill: the whole range), built from the ledger.",
)
def registry_csv(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    period = run_period(context)
    records = ledger.get().records(period.export_ids)
    with_summaries = export_settings.summaries_enabled or any(r.summary_path for r in records)
    rows = registry_rows(
        records,
        summaries_enabled=with_summaries,
        price_per_minute=export_settings.price_per_minute_usd,
    )
    frame = registry_frame(rows, summaries_enabled=with_summaries)
    data = write_registry_csv(frame)
    store = storage.get()
    key = registry_key(period.first, period.last)
    store.write_bytes(key, data)
    yield dg.MaterializeResult(
        metadata={
            "period": period.label,
            "rows": frame.height,
            "path": dg.PathMetadataValue(store.uri(key)),
            "bytes": len(data),
            "preview": table_preview(frame),
        }
    )
    yield check_result(duration_variance(records))
    yield check_result(registry_complete(data, summaries_enabled=with_summaries))
    yield check_result(cost_matches(records, export_settings.price_per_minute_usd))
