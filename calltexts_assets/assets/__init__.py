"""The asset graph: call_list -> raw_audio -> transcripts -> summaries -> registry_csv ->
cost_report, plus qa_sample beside the reporting assets."""

import warnings

import dagster as dg

# Single-run backfill policies are a beta API of the pinned Dagster version (1.13.27); the
# project relies on them knowingly, so the warning on every import is noise.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from calltexts_assets.assets.call_list import call_list  # noqa: E402
from calltexts_assets.assets.cost_report import cost_report  # noqa: E402
from calltexts_assets.assets.qa_sample import qa_sample  # noqa: E402
from calltexts_assets.assets.raw_audio import raw_audio  # noqa: E402
from calltexts_assets.assets.registry_csv import registry_csv  # noqa: E402
from calltexts_assets.assets.summaries import summaries  # noqa: E402
from calltexts_assets.assets.transcripts import transcripts  # noqa: E402

all_assets = [call_list, raw_audio, transcripts, summaries, registry_csv, qa_sample, cost_report]
