"""Benchmark configs: ``experiments/configs/benchmarks/<name>.py``."""
