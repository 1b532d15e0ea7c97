"""raw_audio: every recording of the run's calls, downloaded once and kept with its sha256."""

from functools import partial

import dagster as dg

from calltexts_assets.assets.call_list import call_list
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, run_period
from calltexts_assets.fetch_audio import fetch_recording, needs_fetch
from calltexts_assets.ledger import Status
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.run_context import CallSteps
from calltexts_assets.workdir import prepared_workdir


@dg.asset(
    deps=[call_list],
    **DAILY_SINGLE_RUN,
    group_name="calls",
    kinds={"bitrix24", "storage"},
    description="Recordings at exports/<month>/raw/YYYY/MM/DD/call_<id>.mp3. 404/410 -> "
    "missing_audio. A re-run downloads nothing already stored with a matching checksum.",
)
def raw_audio(
    context: dg.AssetExecutionContext,
    bitrix24: Bitrix24Resource,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> dg.MaterializeResult:
    period = run_period(context)
    db = ledger.get()
    client = bitrix24.get_client()
    todo = (
        record
        for record in db.iter_records(period.export_ids)
        if needs_fetch(record, retry_missing=export_settings.retry_missing_audio)
    )
    steps = CallSteps(
        context,
        db,
        stage="raw_audio",
        failure_status=Status.DOWNLOAD_ERROR,
        log_dir=export_settings.log_dir,
    )
    tally = steps.run(
        todo,
        partial(
            fetch_recording,
            client=client,
            storage=storage.get(),
            verify_checksum=export_settings.verify_checksums,
            workdir=prepared_workdir(export_settings.work_dir),
        ),
        max_workers=export_settings.max_concurrency,
    )
    totals = db.totals(period.export_ids)
    return dg.MaterializeResult(
        metadata={
            "period": period.label,
            "downloaded": tally.outcomes["downloaded"],
            "skipped_already_stored": tally.outcomes["stored"],
            "failed": tally.outcomes["failed"],
            "missing_audio": totals.count(Status.MISSING_AUDIO),
            "calls_with_audio": totals.with_audio,
            "bytes_downloaded": steps.bytes,
        }
    )
