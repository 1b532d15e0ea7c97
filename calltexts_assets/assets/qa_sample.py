"""qa_sample: 50 transcribed calls picked reproducibly per period, for the QA analyst."""

from collections import Counter
from collections.abc import Iterator

import dagster as dg

from calltexts_assets.assets.audio_and_transcripts import transcripts
from calltexts_assets.assets.checks import check_result, check_spec
from calltexts_assets.assets.figures import record_day_figures, run_totals
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, files_period, run_period
from calltexts_assets.files.storage_keys import qa_sample_key
from calltexts_assets.quality.qa_sample import qa_sample as pick_sample
from calltexts_assets.quality.qa_sample import qa_sample_csv, qa_sample_outcome
from calltexts_assets.resources.export_settings import ExportSettings, outputs_stamp
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.state.ledger import SUMMARY_FIELDS


@dg.asset(
    deps=[transcripts],
    **DAILY_SINGLE_RUN,
    group_name="reporting",
    kinds={"csv"},
    check_specs=[
        check_spec(
            "qa_sample",
            "qa_sample",
            "min(50, transcribed calls) distinct transcribed calls, seeded by the period.",
        )
    ],
    description="`exports/<from>_<to>/reports/qa_sample_<from>_<to>.csv`: the same period "
    "always gives the same calls.",
)
def qa_sample(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    period = run_period(context)
    # The sample's period: the run's, or the wider one whose changed days alone it runs (#26)
    files = files_period(context)
    db = ledger.get()
    # Drawn before or after the summaries' step: the stamp leaves out what that step writes.
    stamp = outputs_stamp(export_settings, db.period_stamp(files.export_ids, SUMMARY_FIELDS))
    # Each pass reads the ledger afresh, a day at a time: memory does not grow with the period.
    sample = pick_sample(db.iter_records(files.export_ids), files.label)
    store = storage.get()
    key = qa_sample_key(files.first, files.last)
    written = store.write_bytes(key, qa_sample_csv(sample))
    db.record_deliverable(key, written.sha256, stamp, context.run.run_id)
    sampled = Counter(r.run_id for r in sample)
    record_day_figures(context, period, lambda day: {"calls": sampled[day]})
    yield dg.MaterializeResult(
        metadata={
            **run_totals(files, {"calls": len(sample)}),
            "path": dg.PathMetadataValue(store.uri(key)),
            "call_ids": dg.JsonMetadataValue([r.call_id for r in sample]),
        }
    )
    yield check_result(qa_sample_outcome(sample, db.iter_records(files.export_ids)))
