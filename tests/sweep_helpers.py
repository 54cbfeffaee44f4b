"""Shared bits of the sweep tests: a tiny config and MLflow look-ups."""

from __future__ import annotations

from pathlib import Path

TINY_SWEEP = """
name: {name}
seed: 0
data: {{dataset: digits, image_size: 8, train_samples: 300, val_samples: 120, probe_size: 150}}
teacher: {{arch: resnet14, train: {{epochs: 2, batch_size: 64, lr: 0.05, lr_schedule: cosine}}}}
student: {{arch: resnet8}}
selection:
  similarity: r2_cca
  n_hints: 3
  # rbf_max_samples does not change r2_cca hints: every searched trial trains the same student,
  # so all but the first are duplicates that reuse its result.
  rbf_max_samples: {{choice: [100, 200]}}
distill: {{method: {{choice: [at]}}, hint_weight: 10}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
search: {{num_samples: {samples}, max_concurrent_trials: 2, grace_period: 1, scheduler: {scheduler}}}
"""


def write_config(folder: Path, name: str, epochs: int = 3, samples: int = 3, scheduler: str = "asha",
                 extra: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(TINY_SWEEP.format(name=name, epochs=epochs, samples=samples, scheduler=scheduler) + extra)
    return path


def children(uri: str, name: str):
    """(parent run, child runs) of the newest sweep named ``name``."""
    from pursuhint import tracking
    from pursuhint.export import find_parent

    exp_id, parent = find_parent(uri, name)
    runs = tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent})
    return tracking.client(uri).get_run(parent), runs
