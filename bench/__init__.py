"""pursuhint benchmarks (not tests): speed, scale and selection quality; see bench/run.py."""
