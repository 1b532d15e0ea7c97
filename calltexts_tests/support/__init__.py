"""Support shared by the tests and the benchmarks: the sandbox wired into resources, ledger
rows, export runs in a child process."""
