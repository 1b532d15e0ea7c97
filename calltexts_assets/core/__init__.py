"""What every stage shares: the ledger, per-call steps, run log, keys, masking, retries, pacing."""
