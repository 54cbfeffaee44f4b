"""Duplicate trials: two trials that resolve to the same hint set, method, weights and recipe train
the same student, so the second reuses the first one's result instead of training again. ``train_key`` says
what "the same student" is; ``duplicate_index.py`` holds the index the trials claim keys in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

from ..config import Config
from ..distill.methods import hint_weight_for, own_params


def train_key(cfg: Config, hint_indices: Optional[list[int]]) -> str:
    """What determines a trained student: the hint points and everything in student/distill/train/data."""
    dump = cfg.model_dump(mode="json")
    payload = {
        "hints": hint_indices,
        "student": dump["student"], "train": dump["train"], "data": dump["data"], "seed": dump["seed"],
        "distill": {**dump["distill"], "hint_weight": hint_weight_for(cfg.distill.method, cfg.distill.hint_weight),
                    "params": own_params(cfg.distill.method, cfg.distill.params)},  # only what the method gets
        "granularity": dump["selection"]["granularity"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
