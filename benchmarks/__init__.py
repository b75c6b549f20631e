"""Benchmarks: end-to-end ATM load, ledger-only and soft-HSM microbenchmarks."""
