"""pursuhint's research experiments: long runs (13 minutes to two hours in full) that answer a question about
the method with the product (selection quality, search waste, hint-ratio transfer, decisive answers). Run each
like the micro-benchmarks: ``python bench/run.py --only NAME``."""
