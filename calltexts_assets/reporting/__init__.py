"""Registry CSV, cost, quality checks and the period report: pure functions over the ledger."""
