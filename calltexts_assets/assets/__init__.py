"""The asset graph: call_list -> raw_audio -> transcripts -> summaries -> registry_csv ->
cost_report, plus qa_sample beside the reporting assets."""

from calltexts_assets.assets.call_list import call_list
from calltexts_assets.assets.cost_report import cost_report
from calltexts_assets.assets.qa_sample import qa_sample
from calltexts_assets.assets.raw_audio import raw_audio
from calltexts_assets.assets.registry_csv import registry_csv
from calltexts_assets.assets.summaries import summaries
from calltexts_assets.assets.transcripts import transcripts

all_assets = [call_list, raw_audio, transcripts, summaries, registry_csv, qa_sample, cost_report]
