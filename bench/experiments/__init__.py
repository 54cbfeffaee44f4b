"""pursuhint's research experiments: long runs (a quarter of an hour to two hours) that answer a question about
the method with the product (selection quality, search waste, hint-ratio transfer, decisive answers). Run each
like the micro-benchmarks: ``python bench/run.py --only NAME``."""
