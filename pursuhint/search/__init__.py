"""The sweep: its search space, searcher and scheduler, trials on Ray Tune, duplicate trials, reading the
results back (``results``) and mirroring them into MLflow (``sync``).

Nothing is imported here: the modules that need Ray import it themselves, so ``search.results`` can be
read without starting it.
"""
