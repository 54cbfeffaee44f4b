"""The baseline hint placements a configuration is compared with, and how reports name them.

Kept free of torch, Ray and MLflow so configuration checks and statistics can import it cheaply.
"""

from __future__ import annotations

BASELINE_KINDS = ("default", "kd_only", "uniform", "random", "ce_only", "dkd", "reviewkd", "semckd")
NO_TEACHER = "ce_only"  # the student trained alone (cross-entropy, no teacher): did distillation help at all?
# baselines trained without a hint set: one arm each, shared by every confirmed configuration (ReviewKD and
# SemCKD choose their layers themselves: the stage ends)
WITHOUT_HINTS = ("kd_only", NO_TEACHER, "dkd", "reviewkd", "semckd")

# The words a verdict uses for each baseline: "better than default hints", "worse than KD only", ...
BASELINE_LABELS = {
    "default": "default hints",
    "kd_only": "KD only",
    "uniform": "uniform hints",
    "random": "random hints",
    "ce_only": "the CE-only student",
    "dkd": "DKD",
    "reviewkd": "ReviewKD",
    "semckd": "SemCKD",
}
