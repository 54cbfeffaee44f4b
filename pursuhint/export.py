"""Writing a sweep's results out: the leaderboard as text, and its best hint sets for other training code
(JSON, YAML, a torchdistill fragment). Reading them is ``search.results``'s job."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import PursuhintError
from .fileio import write_text_atomic
from .hints.hintset import HintSet
from .search.results import TrialRow

FORMATS = ("json", "yaml", "torchdistill")


def format_leaderboard(rows: list[TrialRow], limit: Optional[int] = None) -> str:
    """A plain-text table of the leaderboard (rows from ``search.results``, ranked): ``val_acc`` is the last
    epoch's selection-split accuracy, ``best`` the best epoch's; ``rank`` and the gains follow ``search.metric``."""
    head = ("rank", "val_acc", "best", "hints", "similarity", "algorithm", "center", "method", "hint_w", "ratio",
            "kd_w", "lr", "vs_default", "vs_kd", "kind")
    lines = [head]
    for r in rows[:limit]:
        kind = r.baseline if r.baseline not in ("", "none") else ("dup" if r.duplicate_of else "")
        lines.append((str(r.rank), _f(r.final_val_acc), _f(r.best_val_acc), r.hint_indices or "-", r.similarity, r.algorithm,
                      r.center, r.method, _f(r.hint_weight, 4), _f(r.hint_ratio, 3), _f(r.kd_weight, 3), _f(r.lr, 4),
                      _signed(r.gain_default), _signed(r.gain_kd), kind))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)


def write_hint_sets(sets: list[HintSet], out_dir: Path, fmt: str) -> list[Path]:
    """Write each hint set as ``hint_set_<rank>.<json|yaml>``, or a torchdistill YAML fragment."""
    if fmt not in FORMATS:
        raise PursuhintError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, hs in enumerate(sets, 1):
        if fmt == "json":
            paths.append(_save(hs, out_dir / f"hint_set_{i}.json"))
        elif fmt == "yaml":
            paths.append(_save(hs, out_dir / f"hint_set_{i}.yaml"))
        else:
            students = [x for x in str(hs.provenance.get("student_layers", "")).split(",") if x]
            paths.append(write_text_atomic(out_dir / f"torchdistill_{i}.yaml", torchdistill_fragment(hs, students)))
    return paths


def torchdistill_fragment(hs: HintSet, student_layers: list[str]) -> str:
    """A torchdistill config fragment: forward hooks on the hint modules of teacher and student."""
    def hooks(paths: list[str]) -> dict[str, Any]:
        return {"forward_hook": {"input": [], "output": list(paths)}, "wrapper": None, "requires_grad": True}

    frag = {
        "# pursuhint": f"hint set from sweep {hs.provenance.get('sweep')} trial {hs.provenance.get('trial_id')}, "
                       f"val_acc {hs.score}",
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [],
                    "forward_hook": {"input": [], "output": list(hs.layers)}, "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "sequential": [],
                    "forward_hook": {"input": [], "output": list(student_layers)}, "requires_grad": True},
        "hint_pairs": [{"teacher": {"io": "output", "path": t}, "student": {"io": "output", "path": s}}
                       for t, s in zip(hs.layers, student_layers)],
        "pursuhint_hint_set": hs.to_dict(),
    }
    return yaml.safe_dump(frag, sort_keys=False)


def _save(hs: HintSet, path: Path) -> Path:
    hs.save(path)
    return path


def _f(v: Any, digits: int = 2) -> str:
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits > 2 else f"{v:.{digits}f}"


def _signed(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:+.2f}"
