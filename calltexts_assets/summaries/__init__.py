"""Optional call summaries from the transcripts."""
