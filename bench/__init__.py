"""Benchmark harness: drives sharevault like Portal does and measures it against baselines."""
