"""Reading a sweep back: its leaderboard and its best hint sets, from MLflow (or Tune's results folder
when MLflow is unreachable), and writing them for other training code (JSON, YAML, torchdistill)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml

from . import tracking
from .errors import PursuhintError
from .fileio import write_text_atomic
from .hints.hintset import HintSet

FORMATS = ("json", "yaml", "torchdistill")


def find_parent(uri: str, name: str) -> tuple[str, str]:
    """(experiment id, newest sweep parent run id) of the sweep named ``name``."""
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        raise PursuhintError(f"no sweep named {name!r} in the MLflow store {uri}; check the name "
                             f"(the config's `name`) or --tracking-uri")
    parents = tracking.find_runs(uri, exp.experiment_id, **{tracking.ROLE_TAG: "sweep"})
    if not parents:
        raise PursuhintError(f"experiment {name!r} in {uri} has no sweep run; run `pursuhint sweep` first")
    parents.sort(key=lambda r: r.info.start_time, reverse=True)
    return exp.experiment_id, parents[0].info.run_id


def leaderboard_rows(uri: str, parent: str) -> list[dict[str, Any]]:
    """One row per trial of the sweep, best first, with gains over the baselines of the same method."""
    c = tracking.client(uri)
    exp_id = c.get_run(parent).info.experiment_id
    runs = tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent})
    rows = []
    for run in runs:
        p, t, m = run.data.params, run.data.tags, run.data.metrics
        best = m.get("best_val_acc", m.get("val_acc", float("nan")))
        rows.append({
            "run_id": run.info.run_id, "trial_id": t.get(tracking.TRIAL_TAG, ""),
            "baseline": t.get(tracking.BASELINE_TAG, "none"), "status": t.get(tracking.STATUS_TAG, ""),
            "best_val_acc": float(best), "hint_layers": p.get("hint_layers", ""),
            "hint_indices": p.get("hint_indices", ""), "similarity": p.get("similarity", ""),
            "algorithm": p.get("algorithm", ""), "center": p.get("center", ""), "n_hints": p.get("n_hints", ""),
            "method": p.get("method", ""), "hint_weight": _num(p.get("hint_weight")),
            "kd_weight": _num(p.get("kd_weight")), "lr": _num(p.get("lr")),
            "duplicate_of": t.get(tracking.DUPLICATE_TAG, ""), "student_layers": p.get("student_layers", ""),
            "n_candidates": int(_num(p.get("n_candidates")) if math.isfinite(_num(p.get("n_candidates"))) else 0),
        })
    return rank(rows)


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort best first and add ``rank``, ``gain_default`` (vs the default-hints baseline of the same
    method) and ``gain_kd`` (vs the KD-only baseline)."""
    default = {r["method"]: r["best_val_acc"] for r in rows if r["baseline"] == "default"}
    kd = next((r["best_val_acc"] for r in rows if r["baseline"] == "kd_only"), float("nan"))
    rows = sorted(rows, key=lambda r: (-_finite(r["best_val_acc"]), r["trial_id"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
        r["gain_default"] = r["best_val_acc"] - default.get(r["method"], float("nan"))
        r["gain_kd"] = r["best_val_acc"] - kd
    return rows


def format_leaderboard(rows: list[dict[str, Any]], limit: Optional[int] = None) -> str:
    """A plain-text table of the leaderboard."""
    head = ("rank", "best_val_acc", "hints", "similarity", "algorithm", "center", "method", "hint_w",
            "kd_w", "lr", "vs_default", "vs_kd", "kind")
    lines = [head]
    for r in rows[:limit]:
        kind = r["baseline"] if r["baseline"] not in ("", "none") else ("dup" if r.get("duplicate_of") else "")
        lines.append((str(r["rank"]), _f(r["best_val_acc"]), r["hint_indices"] or "-", r["similarity"],
                      r["algorithm"], r["center"], r["method"], _f(r["hint_weight"], 4), _f(r["kd_weight"], 3),
                      _f(r["lr"], 4), _signed(r["gain_default"]), _signed(r["gain_kd"]), kind))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)


def best_hint_sets(uri: str, parent: str, top: int = 1) -> list[HintSet]:
    """The ``top`` best distinct hint sets of the sweep (by hint indices), with score and provenance."""
    c = tracking.client(uri)
    exp_name = c.get_experiment(c.get_run(parent).info.experiment_id).name

    def load(row: dict[str, Any]) -> Optional[HintSet]:
        with tempfile.TemporaryDirectory() as d:
            try:
                return HintSet.load(c.download_artifacts(row["run_id"], "hint_set.json", d))
            except Exception:
                return None

    return _top_hint_sets(leaderboard_rows(uri, parent), load, exp_name, parent, top)


def _top_hint_sets(rows: list[dict[str, Any]], load: Any, sweep: str, parent: str, top: int) -> list[HintSet]:
    out: list[HintSet] = []
    seen: set[str] = set()
    for row in rows:
        if not row["hint_indices"] or row["hint_indices"] in seen or not math.isfinite(row["best_val_acc"]):
            continue
        hs = load(row)
        if hs is None:
            continue
        seen.add(row["hint_indices"])
        hs.score = row["best_val_acc"]
        hs.provenance.update({
            "sweep": sweep, "trial_id": row["trial_id"], "mlflow_run_id": row["run_id"],
            "sweep_run_id": parent, "method": row["method"], "hint_weight": row["hint_weight"],
            "kd_weight": row["kd_weight"], "lr": row["lr"], "baseline": row["baseline"],
            "student_layers": row["student_layers"],
        })
        out.append(hs)
        if len(out) >= top:
            break
    return out


# ----------------------------------------------------------------------- Tune results fallback


def tune_rows(exp_dir: Path) -> list[dict[str, Any]]:
    """Leaderboard rows read from Tune's results folder (when MLflow is unreachable): each trial's
    sampled config, per-epoch results and the hint set kept in its latest checkpoint."""
    from .config import config_from_text
    from .distill.trainer import hint_weight_for
    from .search.sync import read_marker, read_trials

    exp_dir = Path(exp_dir)
    info = read_marker(exp_dir)
    base = config_from_text(info["config_yaml"])
    rows = []
    for trial in read_trials(exp_dir, silent=True):
        trial_dir, results = trial.folder, trial.results
        sampled = json.loads((trial_dir / "params.json").read_text())
        baseline = sampled.get("pursuhint.baseline", "") or "none"
        cfg = base.with_values({k: v for k, v in sampled.items() if k != "pursuhint.baseline"})
        if baseline == "kd_only":
            from .distill.trainer import kd_only_config

            cfg = kd_only_config(cfg)
        ckpts = sorted(trial_dir.glob("checkpoint_*/artifacts/hint_set.json"))
        hs = HintSet.load(ckpts[-1]) if ckpts else None
        accs = [r["val_acc"] for r in results if isinstance(r.get("val_acc"), (int, float))]
        last = results[-1] if results else {}
        rows.append({
            "run_id": "", "trial_id": trial.trial_id,
            "baseline": baseline, "status": trial.status(bool(info.get("finished"))) or "running",
            "best_val_acc": float(max(accs)) if accs else float("nan"),
            "hint_layers": ",".join(hs.layers) if hs else "",
            "hint_indices": ",".join(str(i + 1) for i in hs.indices) if hs else "",
            "similarity": hs.similarity or "none" if hs else "none", "algorithm": hs.algorithm if hs else "none",
            "center": (hs.center or "none") if hs else "none", "n_hints": hs.n_hints if hs else 0,
            "method": cfg.distill.method,
            "hint_weight": hint_weight_for(cfg.distill.method, cfg.distill.hint_weight) if hs else 0.0,
            "kd_weight": cfg.distill.kd_weight, "lr": cfg.train.lr,
            "duplicate_of": last.get("duplicate_of", ""), "student_layers": "",
            "n_candidates": len(hs.candidates) if hs else 0, "hint_set_path": str(ckpts[-1]) if ckpts else "",
        })
    return rank(rows)


def tune_hint_sets(exp_dir: Path, top: int = 1) -> list[HintSet]:
    """``best_hint_sets`` from Tune's results folder."""
    rows = tune_rows(exp_dir)
    return _top_hint_sets(rows, lambda r: HintSet.load(r["hint_set_path"]) if r["hint_set_path"] else None,
                          Path(exp_dir).name, "", top)


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


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _finite(v: float) -> float:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else -1.0


def _f(v: Any, digits: int = 2) -> str:
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits > 2 else f"{v:.{digits}f}"


def _signed(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:+.2f}"
