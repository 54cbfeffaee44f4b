"""Selection quality, the paper's claim: do clustered hint points train a better student than the default
ones (the last block of each teacher stage) or than random ones of the same K?

Digits at 16 px; teacher: the benchmark's cached resnet56 (all 1 438 training images); student: resnet8
trained on a 200-image stratified subset, so it is not saturated. For FitNet, AT and VID, the same
student budget is trained through: paper-mode clustered hints (r2_cca / pursuhint / mean_index, K = 3;
also cka_linear in the full run), the default hints, a random sorted set of 3 distinct candidates, and no
hints at all (CE only). Each over several seeds (the seed changes the student's initialisation and batch
order; teacher and data stay). Then a sweep of ≥ 24 trials searches hint sets for the best method, and its
best set is trained again over the same seeds. Accuracy is the final-epoch val_acc (359 held-out images).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pursuhint.config import Config, config_from_text
from pursuhint.data import ImageDataset
from pursuhint.distill.trainer import train_student
from pursuhint.hints import HintSet
from pursuhint.hints.pipeline import SelectionInputs, choose_hints, prepare_selection
from pursuhint.teacher import Teacher, dataset_for

from .common import command, digits_quick, machine, now, pick_device, ratio, table, threads
from .sweep_overhead import digits_teacher, shutdown_ray, sweep_storage, workspace

NAME = "selection_quality"
TITLE = "Selection quality: clustered vs default vs random hint points"
AIM = "paper-mode clustered hints train a student at least as accurate as the default hints (ratio ≥ 1)"
K = 3
TRAIN_SAMPLES = 200
PROBE_SIZE = 1000  # images of the teacher's full training split (the paper probes the teacher's training set)
# β per method for 16-px maps, set so that the weighted hint term starts at 1–3 × the CE term with the
# default hints (the benchmark's at 1000 / fitnet 100 are tuned for 32 px; here fitnet's per-element MSE
# starts near 30, and β = 1 already costs the student 9 points).
WEIGHTS = {"fitnet": 0.1, "at": 100.0, "vid": 1.0}

STUDENT_YAML = """
name: {name}
seed: 0
data: {{dataset: digits, image_size: 16, train_samples: {train}, probe_size: {probe}}}
teacher: {{arch: resnet56, checkpoint: {checkpoint}}}
student: {{arch: resnet8}}
selection:
  similarity: {similarity}
  n_hints: {k}
  algorithm: {algorithm}
  center: {center}
  on_collision: warn
distill: {{method: {method}, hint_weight: {weight}, kd_weight: 0.0}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
search: {{num_samples: {samples}, scheduler: fifo, baselines: [default], max_concurrent_trials: 2,
          resources_per_trial: {{cpu: 1, gpu: 0}}, confirm: {{top_k: 0}}}}
"""


def _settings(quick: bool, tiny: bool) -> dict[str, Any]:
    if tiny:
        return {"methods": ("at",), "seeds": (0,), "epochs": 1, "measures": ("r2_cca",), "sweep_samples": 0}
    if quick:
        return {"methods": ("fitnet", "at", "vid"), "seeds": (0, 1, 2), "epochs": 12, "measures": ("r2_cca",),
                "sweep_samples": 0}
    return {"methods": ("fitnet", "at", "vid"), "seeds": (0, 1, 2, 3, 4), "epochs": 40,
            "measures": ("r2_cca", "cka_linear"), "sweep_samples": 24}


def student_config(checkpoint: Path, method: str, epochs: int, samples: int = 1, searched: bool = False) -> Config:
    """The student's config; ``searched`` turns the selection keys into the sweep's search space."""
    sel = ({"similarity": "{choice: [r2_cca, cka_linear, cka_rbf]}",
            "algorithm": "{choice: [pursuhint, agglomerative, spectral, kmedoids]}",
            "center": "{choice: [mean_index, medoid, last]}"} if searched
           else {"similarity": "r2_cca", "algorithm": "pursuhint", "center": "mean_index"})
    return config_from_text(STUDENT_YAML.format(
        name=f"bench_selection_quality_{method}", train=TRAIN_SAMPLES, probe=TRAIN_SAMPLES, checkpoint=checkpoint,
        k=K, method=method, weight=WEIGHTS[method], epochs=epochs, samples=max(samples, 1), **sel))


def random_hint_set(sel: SelectionInputs, k: int, seed: int) -> HintSet:
    """``k`` distinct candidate positions drawn uniformly with ``seed``, sorted by depth."""
    idx = sorted(int(i) for i in np.random.default_rng(seed).choice(len(sel.layers), size=k, replace=False))
    names = sel.names
    return sel._stamp(HintSet(layers=[names[i] for i in idx], indices=idx, n_hints=k, candidates=list(names),
                              algorithm="random", center=None, similarity=None, seed=seed))


def probe_sensitivity(teacher: Teacher, full: ImageDataset, student_ds: ImageDataset,
                      sizes: tuple[int, ...] = (200, 500, 1000, 1438)) -> list[dict[str, Any]]:
    """Paper-mode hint sets (K = 3) of the teacher for several probe sets: ``sizes`` evenly spaced
    images of its full training split, and the student's own subset; for r2_cca and cka_linear."""
    out = []
    probes = [("teacher's training split", full, n) for n in sizes if n <= full.train_x.shape[0]]
    probes.append(("the student's subset", student_ds, int(student_ds.train_x.shape[0])))
    for where, ds, n in probes:
        with threads(1):
            sel = prepare_selection(teacher.model, teacher.arch, teacher.sha256, ds, ["r2_cca", "cka_linear"],
                                    probe_size=n)
        out.append({"probe": where, "images": n, **{m: choose_hints(sel, m, K, on_collision="warn").indices
                                                    for m in ("r2_cca", "cka_linear")}})
    return out


def _train(cfg: Config, hs: Optional[HintSet], teacher: Teacher, ds: ImageDataset, seed: int) -> dict[str, Any]:
    """One student at ``seed`` (one torch thread: deterministic, and steady on a shared machine)."""
    with threads(1):
        r = train_student(cfg.with_values({"seed": seed}), hs, teacher.model, ds, teacher_sha256=teacher.sha256)
    return {"seed": seed, "final": r.final_val_acc, "best": r.best_val_acc, "status": r.status,
            "seconds": round(r.seconds, 2)}


def summarise(accs: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "n": len(accs)}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean ± std of the per-seed differences a − b (same seed: same init and batch order)."""
    return summarise([x - y for x, y in zip(a, b)])


def _sweep(teacher: Teacher, folder: Path, method: str, epochs: int, samples: int) -> dict[str, Any]:
    """A FIFO sweep over similarity × clustering × centre (K = 3) for ``method``: its best searched trial."""
    from pursuhint.search.results import rows_from_mlflow
    from pursuhint.search.sweep import run_sweep

    cfg = student_config(teacher.checkpoint, method, epochs, samples=samples, searched=True)
    t0 = time.perf_counter()
    result = run_sweep(cfg, verbose=0, progress=False, **sweep_storage(folder / cfg.name))
    wall = time.perf_counter() - t0
    rows = rows_from_mlflow(result.tracking_uri, result.parent_run_id)  # ranked, best first
    default = next(r for r in rows if r.baseline == "default")
    searched = [r for r in rows if r.baseline == "none" and r.hint_indices]
    best = searched[0]
    keep = ("similarity", "algorithm", "center", "hint_indices", "best_val_acc")
    return {"wall_s": wall, "trials": len(rows), "searched": len(searched),
            "trained": sum(1 for r in rows if not r.duplicate_of),
            "distinct_sets": len({r.hint_indices for r in searched}),
            "best_val_acc": best.best_val_acc, "best_row": {k: getattr(best, k) for k in keep},
            "best_set_indices": [p - 1 for p in best.positions],
            "default_best_val_acc": default.best_val_acc,
            "trials_table": [{k: getattr(r, k) for k in keep} for r in searched]}


def sweep_set(sel: SelectionInputs, indices: list[int], row: dict[str, Any]) -> HintSet:
    """The hint set of a sweep trial, rebuilt from its positions (same teacher, same candidates)."""
    names = sel.names
    return sel._stamp(HintSet(layers=[names[i] for i in indices], indices=list(indices), n_hints=len(indices),
                              candidates=list(names), algorithm=row["algorithm"], center=row["center"],
                              similarity=row["similarity"]))


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Every (method, hint kind, seed) student, then the sweep for the best method; the results.json entry."""
    s = _settings(quick, tiny)
    device = pick_device()
    t_start = time.perf_counter()
    with workspace() as folder:
        teacher, teacher_info = digits_teacher()
        full = dataset_for(digits_quick("bench_teacher"))
        with threads(1):
            sel = prepare_selection(teacher.model, teacher.arch, teacher.sha256, full, list(s["measures"]),
                                    probe_size=PROBE_SIZE)
        sets: dict[str, HintSet] = {"default": sel.default()}
        for m in s["measures"]:
            sets[f"clustered {m}"] = choose_hints(sel, m, K, "pursuhint", "mean_index", on_collision="warn")
        randoms = {seed: random_hint_set(sel, K, 1000 + seed) for seed in s["seeds"]}
        base_cfg = student_config(teacher.checkpoint, "at", s["epochs"])
        ds = dataset_for(base_cfg)  # the 200-image student subset (fixed by the config's seed 0)
        sensitivity = probe_sensitivity(teacher, full, ds) if not tiny else []

        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        ce_only = [_train(base_cfg, None, teacher, ds, seed) for seed in s["seeds"]]
        for method in s["methods"]:
            cfg = student_config(teacher.checkpoint, method, s["epochs"])
            runs[method] = {kind: [_train(cfg, hs, teacher, ds, seed) for seed in s["seeds"]]
                            for kind, hs in sets.items()}
            runs[method]["random"] = [_train(cfg, randoms[seed], teacher, ds, seed) | {"hints": randoms[seed].indices}
                                      for seed in s["seeds"]]
        t_direct = time.perf_counter() - t_start

        finals = {m: {k: [r["final"] for r in v] for k, v in kinds.items()} for m, kinds in runs.items()}
        stats = {m: {k: summarise(v) for k, v in kinds.items()} for m, kinds in finals.items()}
        main = f"clustered {s['measures'][0]}"
        ratios = {m: ratio(stats[m][main]["mean"], stats[m]["default"]["mean"]) for m in s["methods"]}
        best_method = max(s["methods"], key=lambda m: stats[m][main]["mean"])

        sweep: Optional[dict[str, Any]] = None
        if s["sweep_samples"]:
            sweep = _sweep(teacher, folder, best_method, s["epochs"], s["sweep_samples"])
            shutdown_ray()
            hs = sets["default"] if sweep["best_set_indices"] == sets["default"].indices else sweep_set(
                sel, sweep["best_set_indices"], sweep["best_row"])
            cfg = student_config(teacher.checkpoint, best_method, s["epochs"])
            sweep["retrained"] = [_train(cfg, hs, teacher, ds, seed) for seed in s["seeds"]]
            sweep["retrained_stats"] = summarise([r["final"] for r in sweep["retrained"]])
            sweep["retrained_minus_default"] = paired([r["final"] for r in sweep["retrained"]],
                                                      finals[best_method]["default"])

    headline = ratios[best_method]
    ce = summarise([r["final"] for r in ce_only])
    entry = {
        "title": TITLE, "aim": AIM, "ratio": headline,
        "ratio_definition": f"mean val_acc with paper-mode clustered hints ({main.split()[1]}) ÷ with the default "
                            f"hints, for the method whose clustered hints scored best ({best_method})",
        "aim_met": bool(headline >= 1.0),
        "figures": {
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
            "train_samples": TRAIN_SAMPLES, "probe_size": PROBE_SIZE, "weights": WEIGHTS, "teacher": teacher_info,
            "hint_sets": {k: v.indices for k, v in sets.items()},
            "random_sets": {str(seed): h.indices for seed, h in randoms.items()},
            "ce_only": ce_only, "ce_only_stats": ce, "runs": runs, "stats": stats,
            "ratio_clustered_over_default": ratios, "best_method": best_method,
            "paired_clustered_minus_default": {m: paired(finals[m][main], finals[m]["default"])
                                               for m in s["methods"]},
            "sweep": sweep, "direct_part_s": round(t_direct, 1), "candidates": len(sel.layers),
            "probe_sensitivity": sensitivity,
        },
        "notes": [
            f"Teacher: the benchmark's digits resnet56 (val_acc {teacher_info['val_acc']:.1f} %); its paper-mode "
            f"hints come from a probe of {PROBE_SIZE} images of its full training split (1,438 images). Student: "
            f"resnet8 on a stratified {TRAIN_SAMPLES}-image subset, {s['epochs']} epochs, batch 64, SGD lr 0.05 "
            "cosine, loss CE + β·Σ hint (no KD term, as the CRD benchmark trains FitNet, AT and VID); one torch "
            "thread per run.",
            "β per method: " + ", ".join(f"{m} {w:g}" for m, w in WEIGHTS.items()) + " — chosen so the weighted "
            "hint term starts at 1–3 × the CE term on 16-px maps; fitnet at β = 1 already loses 9 points.",
            "Random hint sets: sorted distinct positions drawn uniformly (numpy default_rng, seed 1000 + training "
            "seed), a new set for every training seed, so their spread includes the choice of set.",
            "The sweep (full run only) trains with seed 0 and ranks trials by their best-epoch val_acc on the same "
            "validation images the table reports: its best is selected on them and so flatters itself; the "
            "retrained row removes the seed luck, not the selection. Its matrices come from its own config's probe "
            f"(the {TRAIN_SAMPLES} student images), so its paper-mode point may differ from the table's.",
        ],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
    entry["tables"] = tables(entry["figures"])
    return entry


def tables(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The Markdown tables of an entry, from its figures alone."""
    s, sets, stats, weights = f["settings"], f["hint_sets"], f["stats"], f["weights"]
    finals = {m: {k: [r["final"] for r in v] for k, v in kinds.items()} for m, kinds in f["runs"].items()}
    one = lambda idx: ", ".join(str(i + 1) for i in idx)  # noqa: E731 - 1-based, as the paper numbers blocks
    ms = lambda st: f"{st['mean']:.2f} ± {st['std']:.2f}"  # noqa: E731
    rows = [["—", "none (CE only)", "—", ms(f["ce_only_stats"]), "—"]]
    for m in s["methods"]:
        for kind in [*sets, "random"]:
            hints = one(sets[kind]) if kind in sets else "a new one per seed"
            diff = "—" if kind == "default" else ms(paired(finals[m][kind], finals[m]["default"]))
            rows.append([f"{m} (β = {weights[m]:g})", kind, hints, ms(stats[m][kind]), diff])
    out = [table(
        f"Final val_acc (%) of resnet8 after {s['epochs']} epochs on {f['train_samples']} digits, mean ± std over "
        f"{len(s['seeds'])} seeds; hint positions 1-based among resnet56's {f['candidates']} blocks",
        ["method", "hint points", "positions", "val_acc mean ± std", "− default, paired by seed"], rows)]
    if f.get("probe_sensitivity"):
        out.append(table("The paper-mode hint set (K = 3, positions 1-based) depends on the probe set: the same "
                         "teacher, probes of different sizes",
                         ["probe images", "from", "r2_cca", "cka_linear"],
                         [[p["images"], p["probe"], one(p["r2_cca"]), one(p["cka_linear"])]
                          for p in f["probe_sensitivity"]]))
    sweep, best = f["sweep"], f["best_method"]
    if sweep is not None:
        n = len(s["seeds"])
        out.append(table(
            f"Sweep for {best}: {sweep['trials']} trials (similarity × clustering × centre, K = {K}, seed 0; "
            f"{sweep['trained']} trained, the rest duplicates) and its best hint set trained again over the seeds",
            ["what", "hint points", "val_acc", "− default, paired by seed"],
            [["sweep's default baseline (best epoch, seed 0)", one(sets["default"]), sweep["default_best_val_acc"],
              "—"],
             [f"sweep's best searched trial (best epoch, seed 0; {sweep['best_row']['similarity']} / "
              f"{sweep['best_row']['algorithm']} / {sweep['best_row']['center']})", one(sweep["best_set_indices"]),
              sweep["best_val_acc"], sweep["best_val_acc"] - sweep["default_best_val_acc"]],
             [f"its best hint set, final epoch over {n} seeds", one(sweep["best_set_indices"]),
              ms(sweep["retrained_stats"]), ms(sweep["retrained_minus_default"])],
             [f"default hints, final epoch over {n} seeds", one(sets["default"]), ms(stats[best]["default"]), "—"]]))
    return out
