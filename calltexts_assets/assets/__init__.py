"""The asset graph: call_list -> raw_audio -> transcripts -> summaries -> registry_csv ->
cost_report, plus qa_sample beside the reporting assets."""

import warnings

import dagster as dg

# Single-run backfill policies are a beta API of the pinned Dagster version (1.13.27); the
# project relies on them knowingly, so the warning on every import is noise.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from calltexts_assets.assets.audio_and_transcripts import (  # noqa: E402
    raw_audio,
    raw_audio_and_transcripts,
    transcripts,
)
from calltexts_assets.assets.call_list import call_list  # noqa: E402
from calltexts_assets.assets.cost_report import cost_report  # noqa: E402
from calltexts_assets.assets.qa_sample import qa_sample  # noqa: E402
from calltexts_assets.assets.registry_csv import (  # noqa: E402
    registry_csv,
    summaries_and_registry,
)
from calltexts_assets.assets.summaries import summaries  # noqa: E402

# raw_audio and transcripts are the two assets of `raw_audio_and_transcripts` (one step);
# summaries and registry_csv those of `summaries_and_registry` (the op `summaries`).
all_assets = [
    call_list,
    raw_audio_and_transcripts,
    summaries_and_registry,
    qa_sample,
    cost_report,
]

__all__ = [
    "all_assets",
    "call_list",
    "cost_report",
    "qa_sample",
    "raw_audio",
    "raw_audio_and_transcripts",
    "registry_csv",
    "summaries",
    "summaries_and_registry",
    "transcripts",
]
