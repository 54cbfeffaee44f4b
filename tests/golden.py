"""The golden sweep: one small sweep, search then confirmation, on the session's local Ray and a real sqlite
MLflow store, that the modules which each used to run a sweep of their own read instead (test_confirm_sweep,
test_modern_methods, test_faults). test_sweep (the search-only regime: ASHA, a fixed β, duplicates) and
test_plugins (``--plugin`` shipping, which needs a Ray the sweep starts) keep their own. What it holds:

- a search stage of AT and the plugin method ``toy_meanmatch`` (``plugins: [toy_method]``, imported by the Ray
  workers from their PYTHONPATH), with the default and uniform hints of each method and KD only; its 2 searched
  trials are Optuna's seeded start-up samples, one of each method with seed 0 (the toy one cannot pair its
  K = 2 hints either, so only AT's configuration is confirmed);
- a **diverging point**: ``toy_meanmatch`` trains with β = 1e30 (a by_method weight), so its default baseline
  (3 stage-end hints) diverges in its first epoch;
- an **invalid point**: ``toy_meanmatch`` pairs hints by ``stage_ends``, which needs one hint per student stage
  (resnet8: 3): its uniform baseline at K = 2 cannot be built;
- a confirmation stage that races the AT configuration (a calibrated β) 2-3 seeds against every baseline,
  the published methods DKD, ReviewKD and SemCKD among them, in cohorts (``cohort: auto``).

Keep it small: every reader pays for it once per session, and a new point belongs here rather than in a new
sweep. A reader asserts what its module is about and reads the rest as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep_helpers import mlflow_db

NAME = "t_golden"
STUDENT_STAGE_STARTS = "layer1.0,layer2.0,layer3.0"  # resnet8's: where ReviewKD and SemCKD pair their hints
TEACHER_STAGE_ENDS = "layer1.1,layer2.1,layer3.1"  # resnet14's: the teacher layers ReviewKD and SemCKD read

CONFIG = f"""
name: {NAME}
plugins: [toy_method]
seed: 0
data: {{dataset: digits, image_size: 8, train_samples: 300, val_samples: 120, probe_size: 150}}
teacher: {{arch: resnet14, train: {{epochs: 2, batch_size: 64, lr: 0.05, lr_schedule: cosine}}}}
student: {{arch: resnet8}}
selection: {{similarity: r2_cca, n_hints: 2}}
distill:
  method: {{choice: [at, toy_meanmatch]}}
  hint_weight: {{by_method: {{toy_meanmatch: 1.0e+30, default: auto}}}}
  hint_ratio: 0.5
  mapping: {{by_method: {{toy_meanmatch: stage_ends, default: auto}}}}
  kd_weight: 0.0
train: {{epochs: 2, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
search:
  num_samples: 2
  max_concurrent_trials: 2
  scheduler: fifo
  baselines: [default, uniform, kd_only]
  confirm:
    top_k: 1
    seeds: {{min: 2, max: 3}}
    baselines: [default, kd_only, ce_only, uniform, random, dkd, reviewkd, semckd]
"""


@dataclass(frozen=True)
class Golden:
    """What a reader gets: the config, the MLflow URI, run_sweep's result and the folder holding it all."""

    cfg: Any
    uri: str
    result: Any
    folder: Path

    @property
    def storage(self) -> Path:
        return self.folder / "ray_results"

    @property
    def experiment_dir(self) -> Path:
        return self.storage / NAME


def run_golden(folder: Path) -> Golden:
    """Write the golden config into ``folder`` and run it on the Ray already started in this process."""
    from pursuhint.config import load_config
    from pursuhint.search.sweep import run_sweep

    path = folder / f"{NAME}.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    uri = mlflow_db(folder)
    result = run_sweep(cfg, tracking_uri=uri, storage_path=str(folder / "ray_results"), verbose=0, progress=False)
    return Golden(cfg, uri, result, folder)
