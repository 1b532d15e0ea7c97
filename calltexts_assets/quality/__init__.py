"""The asset checks' pure functions: coverage, duplicates, reconciliation with Bitrix24, cost,
the QA sample and the one-pass figures."""
