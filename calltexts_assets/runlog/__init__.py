"""What a run tells: the masked JSONL run log, scrubbed module loggers and the masking itself."""
