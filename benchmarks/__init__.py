"""Benchmarks: `make bench` (or `python -m benchmarks NAME`) prints throughput, peak memory, accuracy."""
