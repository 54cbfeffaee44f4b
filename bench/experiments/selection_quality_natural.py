"""Selection quality on natural images: do clustered hint points train a better student than the default
ones (the last block of each teacher stage), evenly spaced or random ones of the same K, KD alone, or the
student trained alone — on real CIFAR-10 photographs, through `pursuhint sweep` and its confirmation stage?

The digits benchmark (``selection_quality``) answers this on 16-px handwriting; this one asks it where the
paper does, on 32-px photographs. A resnet20 teacher is trained once on the training part and cached with
the benchmarks (the same config, hence the same cached file, as ``search_waste``'s CIFAR teacher); a resnet8
student learns from a small stratified subset, so the teacher clearly beats the student trained alone and
distillation has a gap to close. For AT and FitNet, each alone (CE + hints) and with KD on top (CE weight 1,
KD weight 1.5, as in the authors' reproducible AT run), with the calibrated hint weight (``hint_weight:
auto``, ``hint_ratio: 1``): one sweep per (method, measure) runs the paper-mode configuration (r2_cca or
cka_linear / pursuhint / mean_index, K = 3) once, then its confirmation stage retrains it and the default,
uniform, random (and, with KD, KD-only) baselines over fresh seeds and scores them on the held-out test
photographs. The student trained alone (CE only) is trained with the same recipe, splits and seeds by
``train_student``. Gains are paired by seed with Student's t 95 % CIs (``pursuhint.search.stats``).

It also measures the natural-image data path: decoding and caching the 25 000 JPEGs with an empty cache,
loading them again from the cache, the cache's size and the peak memory of each load.

Without the photographs (``bench.common.cifar10_subset()`` is None) the entry says it was skipped, and why.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Optional

import torch

from pursuhint.config import Config, config_from_dict, config_from_text
from pursuhint.data import DeviceLoader
from pursuhint.hints.pipeline import choose_hints, prepare_selection
from pursuhint.search.sweep import run_sweep
from pursuhint.train.teacher import dataset_for, load_teacher, teacher_cache_dir, train_teacher
from pursuhint.train.loop import evaluate

from ..common import (CIFAR10_SUBSET_ENV, KD_WEIGHT, cache_dir, ce_only, cifar10_subset, cifar_raw, command, machine,
                      natural_settings, now, pick_device, ratio, shutdown_ray, sweep_storage, table, threads, workspace)
from .selection_quality import probe_sensitivity

NAME = "selection_quality_natural"
TITLE = "Selection quality on natural images: clustered vs default vs random hint points on CIFAR-10 photographs"
AIM = ("on real photographs, the paper-mode clustered hints train a student at least as accurate as the default "
       "hints (ratio ≥ 1; AT with KD, the authors' recipe)")
ROOT = Path(__file__).resolve().parents[2]
PAIR = ("resnet20", "resnet8")
K = 3
MEASURES = ("r2_cca", "cka_linear")
HEADLINE_SWEEPS = ("at+kd r2_cca", "at r2_cca")  # the first one present gives the headline ratio

STUDENT_YAML = """
name: {name}
seed: 0
data: {{dataset: imagefolder, root: {root}, train_samples: {train}, val_samples: {test}, probe_size: {probe}}}
teacher: {{arch: {teacher}, checkpoint: {checkpoint}}}
student: {{arch: {student}}}
selection: {{similarity: {measure}, n_hints: {k}, algorithm: pursuhint, center: mean_index, on_collision: warn}}
distill: {{method: {method}, hint_weight: auto, hint_ratio: 1.0, kd_weight: {kd}, ce_weight: 1.0}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
search: {{num_samples: 1, scheduler: fifo, baselines: [], max_concurrent_trials: 2,
          resources_per_trial: {{cpu: 1, gpu: {gpu}}},
          confirm: {{top_k: 1, seeds: {seeds}, baselines: {baselines}}}}}
"""


def trial_gpu() -> float:
    """A trial's share of the GPU where there is one: 0.5, so the two concurrent trials share it (the GPU check's
    confirmation sweep then trains Tune trials on the GPU); 0 on CPUs."""
    return 0.5 if torch.cuda.is_available() else 0


def family_label(method: str, kd: float) -> str:
    """``at`` (CE + hints) or ``at+kd`` (CE + KD + hints)."""
    return f"{method}+kd" if kd else method


def confirm_baselines(kd: float, measure: str, full: bool) -> list[str]:
    """The confirmation stage's baselines of one sweep: the r2_cca sweep of a family carries them (KD only
    where the family trains with KD: the question there is whether hints add to KD); the cka_linear sweep
    none, its gains are paired with the r2_cca sweep's runs of the same seeds. ``full`` False (tiny): the
    default hints only."""
    if measure != MEASURES[0]:
        return []
    if not full:
        return ["default"]
    return ["default", "uniform", "random"] + (["kd_only"] if kd else [])


def student_config(root: Path, checkpoint: str, method: str, kd: float, measure: str,
                   s: dict[str, Any], baselines: Optional[list[str]] = None, seeds: Any = None,
                   suffix: str = "") -> Config:
    """One sweep's config: the paper-mode configuration itself (nothing searched, no search-stage baselines),
    FIFO, two 1-CPU trials at a time (sharing the GPU where there is one), a confirmation stage over
    ``s["seeds"]`` seeds (or ``seeds``: a number, or ``{"min": a, "max": b}`` to race) against
    :func:`confirm_baselines` (or ``baselines``)."""
    train = s["train"]
    seeds = s["seeds"] if seeds is None else seeds
    if baselines is None:
        baselines = confirm_baselines(kd, measure, s["full_baselines"])
    return config_from_text(STUDENT_YAML.format(
        name=f"bench_natural_{family_label(method, kd).replace('+', '_')}_{measure}{suffix}", root=root,
        train=train, test="null" if s["test"] is None else s["test"], probe=train - round(0.1 * train),
        teacher=PAIR[0], checkpoint=checkpoint, student=PAIR[1], measure=measure, k=K, method=method, kd=kd,
        epochs=s["epochs"], seeds=json.dumps(seeds), baselines="[" + ", ".join(baselines) + "]", gpu=trial_gpu()))


# ------------------------------------------------------------------------------------------------
# the teacher


def teacher_raw(root: Path, s: dict[str, Any]) -> dict[str, Any]:
    """The teacher's config data: search_waste's CIFAR teacher (resnet20, 32 px, the demo's recipe) at this
    variant's size, so both benchmarks train and cache one teacher."""
    return cifar_raw(root, {"cifar_train": s["teacher_train"], "teacher_epochs": s["teacher_epochs"]})


def natural_teacher(root: Path, s: dict[str, Any]) -> tuple[Any, Config, dict[str, Any]]:
    """The teacher (trained now if the benchmark cache lacks it), its config, and how it was obtained."""
    cfg = config_from_dict({**teacher_raw(root, s), "name": "bench_natural_teacher"}, source="bench_natural_teacher")
    cached = (teacher_cache_dir(cfg) / "teacher.pt").exists()
    t0 = time.perf_counter()
    with threads(s["teacher_threads"]):
        train_teacher(cfg, progress=False)
    teacher = load_teacher(cfg, progress=False)
    return teacher, cfg, {"arch": teacher.arch, "checkpoint": str(teacher.checkpoint), "checkpoint_cached": cached,
                          "seconds": round(time.perf_counter() - t0, 1), "val_acc": teacher.meta.get("val_acc"),
                          "train_images": None, "epochs": s["teacher_epochs"], "sha256": teacher.sha256}


def teacher_test_accuracy(model: torch.nn.Module, ds: Any) -> float:
    """Top-1 accuracy (%) of ``model`` on the data set's test split (in order, no augmentation)."""
    device = next(model.parameters()).device
    loader = DeviceLoader(ds.test_x, ds.test_y, 256, train=False, augment="none", mean=ds.mean, std=ds.std,
                          device=device)
    with threads(2):
        return float(evaluate(model, loader, device)[0])


# ------------------------------------------------------------------------------------------------
# the student trained alone


def student_alone_worker(config_yaml: str, seed: int) -> dict[str, Any]:
    """One CE-only student (no teacher term, no hints) with the sweep's recipe and splits and run seed ``seed``,
    scored on the test split; runs in its own process with one torch thread, as a 1-CPU trial does."""
    torch.set_num_threads(1)
    cfg = config_from_text(config_yaml).with_values({"train.seed": seed})
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, ds=ds, progress=False)  # train_student runs it; CE alone ignores its outputs
    result = ce_only(cfg, teacher, ds, evaluate_test=True)
    last = result.fit.history[-1]
    return {"seed": seed, "status": result.status, "test_acc": float(last.extra.get("test_acc", float("nan"))),
            "final_val_acc": float(result.final_val_acc), "seconds": round(result.seconds, 1)}


def students_alone(cfg: Config, seeds: list[int]) -> dict[str, Any]:
    """The student trained alone over the confirmation stage's seeds, two processes at a time."""
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(2, len(seeds)), mp_context=get_context("spawn")) as pool:
        runs = list(pool.map(student_alone_worker, [cfg.to_yaml()] * len(seeds), seeds))
    return {"seeds": {str(r["seed"]): r["test_acc"] for r in runs}, "runs": runs,
            "wall_s": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------------------------------------
# the data path: decode and cache the JPEGs, load them again


def decode_worker(root: str, cache: str) -> None:
    """Body of one measurement process: load the ImageFolder at 32 px with the image cache in ``cache`` only
    (never beside the data), print seconds, image count and this process's peak RSS as JSON."""
    from pursuhint.data import load_dataset  # loaded here: this process measures its own peak memory
    from pursuhint.data.image_cache import IMAGE_CACHE_ENV

    os.environ[IMAGE_CACHE_ENV] = cache  # the measurement's own cache, empty at first, the only one read
    t0 = time.perf_counter()
    ds = load_dataset("imagefolder", root=root, image_size=32)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "images": int(ds.train_x.shape[0] + ds.val_x.shape[0]),
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def _folder_mb(folder: Path, suffixes: Optional[tuple[str, ...]] = None) -> float:
    """Total size (MB) of the files under ``folder`` (only those ending in ``suffixes`` when given)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if suffixes is None or name.lower().endswith(suffixes):
                total += os.path.getsize(os.path.join(dirpath, name))
    return round(total / 2**20, 3)


def data_path(root: Path) -> dict[str, Any]:
    """First load with an empty cache (decode every JPEG, write the cache) and a second load (read the
    cache), each in a fresh process; the cache's size, each process's peak RSS, and RUSAGE_CHILDREN's."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out: dict[str, Any] = {"jpeg_mb": _folder_mb(root, (".jpg", ".jpeg"))}
    with tempfile.TemporaryDirectory(prefix="pursuhint-decode-") as cache:
        for label in ("first_load", "second_load"):
            code = (f"from bench.experiments.selection_quality_natural import decode_worker; "
                    f"decode_worker({str(root)!r}, {cache!r})")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                  cwd=str(ROOT), timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"the {label} measurement failed: {proc.stderr[-2000:]}")
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            if label == "first_load":
                out["cache_mb"] = _folder_mb(Path(cache))
    out["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out["cold_over_warm"] = ratio(out["first_load"]["seconds"], out["second_load"]["seconds"])
    out["cpus"] = os.cpu_count()
    return out


# ------------------------------------------------------------------------------------------------
# hint positions and the sweeps


def hint_positions(teacher: Any, ds: Any, cfg: Config, seeds: list[int]) -> dict[str, Any]:
    """Every placement's teacher layers (0-based candidate indices) for the sweeps' probe: the paper-mode set
    per measure, the default, uniform and (per seed) random sets, as the sweep's trials choose them. Also
    fills the similarity cache the sweeps' shared work then reads."""
    with threads(2):
        sel = prepare_selection(teacher.model, teacher.arch, teacher.sha256, ds, list(MEASURES),
                                probe_size=cfg.data.probe_size)
    out = {m: choose_hints(sel, m, K, "pursuhint", "mean_index", seed=cfg.seed, on_collision="warn").indices
           for m in MEASURES}
    out |= {"default": sel.default().indices, "uniform": sel.uniform(K).indices,
            "random": {str(s): sel.random(K, s).indices for s in seeds}, "candidates": sel.names}
    return out


def one_sweep(cfg: Config, folder: Path) -> dict[str, Any]:
    """``pursuhint sweep`` as users run it (a fixed configuration: one search trial), with its confirmation
    stage; its wall time and confirmation table."""
    t0 = time.perf_counter()
    with threads(1):
        result = run_sweep(cfg, verbose=0, progress=False, **sweep_storage(folder / cfg.name))
    shutdown_ray()  # each sweep starts its own local Ray and ends it, as `pursuhint sweep` does
    return {"wall_s": round(time.perf_counter() - t0, 1), "trials": len(result.leaderboard),
            "confirmation": result.confirmation}


def all_sweeps(root: Path, checkpoint: str, s: dict[str, Any], positions: dict[str, Any],
               folder: Path, m: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One sweep per (method ± KD, measure), keyed ``"<family> <measure>"``; a cka_linear sweep whose hints
    equal r2_cca's is not run, only marked ``same_as``. With ``m["in_family_sweep"]`` (the tiny variant) the
    published methods' family's r2_cca sweep takes their baselines too, and is their race."""
    sweeps: dict[str, Any] = {}
    for method, kd in s["families"]:
        for measure in s["measures"]:
            key = f"{family_label(method, kd)} {measure}"
            if measure != MEASURES[0] and positions[measure] == positions[MEASURES[0]]:
                sweeps[key] = {"family": family_label(method, kd), "measure": measure,
                               "same_as": f"{family_label(method, kd)} {MEASURES[0]}"}
                continue
            races = bool(m and m.get("in_family_sweep")) and key == race_key(m)
            cfg = student_config(root, checkpoint, method, kd, measure, s, baselines=m["baselines"] if races else None)
            sweeps[key] = {"family": family_label(method, kd), "measure": measure, **one_sweep(cfg, folder)}
    return sweeps


# ------------------------------------------------------------------------------------------------
# the methods that choose no layer: DKD, ReviewKD, SemCKD


MODERN = ("dkd", "reviewkd", "semckd")  # the published methods, as confirmation baselines
ONLY_ENV = "PURSUHINT_NATURAL_ONLY"  # "modern": run only these sweeps, keep the entry's other figures


def modern_settings(quick: bool, tiny: bool) -> dict[str, Any]:
    """The published methods' part: the hint family they are raced against (the authors' AT + KD recipe; in the
    tiny smoke test AT alone), its baselines, and the seeds (``{min, max}``: a race)."""
    if tiny:  # the smoke test: the family's own sweep races them (the SemCKD-over-hints config: a unit test)
        return {"family": ("at", 0.0), "baselines": ["default", "kd_only", *MODERN], "seeds": 2,
                "semckd_hints": False, "in_family_sweep": True}
    return {"family": ("at", KD_WEIGHT), "baselines": ["default", "kd_only", *MODERN],
            "seeds": {"min": 2, "max": 3} if quick else {"min": 3, "max": 5}, "semckd_hints": True}


def modern_configs(root: Path, checkpoint: str, s: dict[str, Any], m: dict[str, Any]) -> dict[str, Config]:
    """Two sweeps. ``race``: the family's paper-mode configuration (r2_cca) raced against its default hints, KD
    only, DKD, ReviewKD and SemCKD over the teacher's stage ends, each with its published recipe.
    ``semckd_hints``: SemCKD with its published recipe over the paper-mode hint set's layers instead (its
    candidates clustered by PURSUhInT), over the race's first seeds, paired with the race's runs afterwards."""
    method, kd = m["family"]
    race = student_config(root, checkpoint, method, kd, MEASURES[0], s, baselines=m["baselines"], seeds=m["seeds"],
                          suffix="_modern")
    first = m["seeds"]["min"] if isinstance(m["seeds"], dict) else m["seeds"]
    hints = student_config(root, checkpoint, method, kd, MEASURES[0], s, baselines=[], seeds=first).with_values({
        "name": f"bench_natural_semckd_hints_{MEASURES[0]}", "distill.method": "semckd",
        "distill.hint_weight": None, "distill.kd_weight": 1.0, "distill.ce_weight": 1.0,
        "distill.params": {"candidates": "hints"}})
    return {"race": race, "semckd_hints": hints} if m.get("semckd_hints", True) else {"race": race}


def race_key(m: dict[str, Any]) -> str:
    """The key in :func:`all_sweeps` of the family sweep that races the published methods in the tiny variant."""
    return f"{family_label(*m['family'])} {MEASURES[0]}"


def modern_sweeps(root: Path, checkpoint: str, s: dict[str, Any], m: dict[str, Any], folder: Path,
                  sweeps: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Both sweeps of :func:`modern_configs`, with their walls and confirmation tables (in the tiny variant the
    race is the family's own sweep, already run: ``sweeps[race_key(m)]``)."""
    if m.get("in_family_sweep") and sweeps is not None:
        return {"race": sweeps[race_key(m)]}
    return {key: one_sweep(cfg, folder) for key, cfg in modern_configs(root, checkpoint, s, m).items()}


def modern_arms(f: dict[str, Any]) -> dict[str, tuple[str, dict[int, float]]]:
    """Every arm of the published-methods part by key: its label and test accuracy by seed."""
    mo = f.get("modern") or {}
    race = (mo.get("sweeps", {}).get("race") or {}).get("confirmation") or {}
    fam = family_label(*mo.get("settings", {}).get("family", ("at", 0.0)))
    arms: dict[str, tuple[str, dict[int, float]]] = {}
    for c in race.get("configurations", [])[:1]:
        arms["paper"] = (f"{fam}, paper-mode hints ({MEASURES[0]})", _seeds(c["seeds"]))
    names = {"default": f"{fam}, default hints", "kd_only": "KD only", "dkd": "DKD", "reviewkd": "ReviewKD",
             "semckd": "SemCKD over the stage ends"}
    for b in race.get("baselines", []):
        if b["kind"] in names:
            arms[b["kind"]] = (names[b["kind"]], _seeds(b["seeds"]))
    hints = (mo.get("sweeps", {}).get("semckd_hints") or {}).get("confirmation") or {}
    for c in hints.get("configurations", [])[:1]:
        arms["semckd_hints"] = ("SemCKD over the paper-mode hints", _seeds(c["seeds"]))
    if f.get("ce_only", {}).get("seeds"):
        arms["ce_only"] = ("student alone (CE only)", _seeds(f["ce_only"]["seeds"]))
    return arms


# (arm, against): each published method against KD only, and SemCKD's two candidate sets against each other and
# against the paper-mode hints; the race itself decides the paper-mode hints against every baseline
MODERN_PAIRS = (("dkd", "kd_only"), ("reviewkd", "kd_only"), ("semckd", "kd_only"), ("semckd_hints", "kd_only"),
                ("semckd_hints", "semckd"), ("semckd_hints", "paper"))


def modern_decisions(f: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """:data:`MODERN_PAIRS` decided on the seeds both arms have (one look, Holm over the table, margin 1
    point, α 0.05): the comparisons the race does not make itself."""
    from pursuhint.search.stats import decide_table  # scipy: as confirm_seeds

    arms = modern_arms(f)
    diffs = {}
    for a, b in MODERN_PAIRS:
        if a in arms and b in arms:
            common = sorted(set(arms[a][1]) & set(arms[b][1]))
            diffs[(a, b)] = [arms[a][1][k] - arms[b][1][k] for k in common]
    decided = decide_table(diffs, alpha=0.05, margin=1.0)
    return {pair: decided[pair] for pair in MODERN_PAIRS if pair in decided}  # the table's order, not Holm's


def modern_tables(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The published methods' tables: every arm's accuracy, the race's verdicts (paper-mode hints against each
    baseline), and the comparisons decided afterwards on common seeds."""
    from pursuhint.search.stats import summarise  # scipy: as confirm_seeds

    mo = f.get("modern")
    if not mo:
        return []
    arms = modern_arms(f)
    n_test = f["splits"]["test"]
    out = [table(f"Published methods that choose no layer, on {n_test} held-out photographs: test accuracy (%)",
                 ["arm", "seeds", "test_acc mean ± sd"],
                 [[label, len(sc), _ms(summarise(list(sc.values())).as_dict())] for label, sc in arms.values()])]
    race = mo["sweeps"]["race"].get("confirmation") or {}
    cfg = (race.get("configurations") or [{}])[0]
    rows = [[arms.get(kind, (kind,))[0], g["n"], g["decision"], g["verdict"]]
            for kind, g in cfg.get("gains", {}).items()]
    out.append(table(f"The race: {arms.get('paper', ('paper-mode hints',))[0]} against each baseline, seeds "
                     f"{race.get('min_seeds')}–{race.get('max_seeds')} (one more per round while undecided), "
                     f"margin ±{race.get('margin')} point, α {race.get('alpha')} over the table and its looks",
                     ["against", "seeds", "decision", "verdict (paper-mode hints − it)"], rows))
    decisions = modern_decisions(f)
    out.append(table("Afterwards, on the seeds both arms have: each published method against KD only, SemCKD's "
                     "candidate sets (one look, Holm over these comparisons, margin ±1 point, α 0.05)",
                     ["arm", "against", "seeds", "decision", "verdict (arm − against)"],
                     [[arms[a][0], arms[b][0], d.n, d.verdict, d.words()] for (a, b), d in decisions.items()]))
    return out


def headline_of(sweeps: dict[str, Any]) -> tuple[Optional[str], Optional[float]]:
    """The first of ``HEADLINE_SWEEPS`` with a confirmation table, and its configuration's mean test accuracy
    ÷ the default hints' (None when either is missing)."""
    key = next((k for k in HEADLINE_SWEEPS if sweeps.get(k, {}).get("confirmation")), None)
    table_ = sweeps[key]["confirmation"] if key else None
    first = table_["configurations"][0] if table_ and table_["configurations"] else None
    default = next((b for b in (table_ or {}).get("baselines", []) if b["kind"] == "default"), None)
    return key, ratio(first["test_acc"]["mean"], default["test_acc"]["mean"]) if first and default else None


def skipped_entry(quick: bool, tiny: bool) -> dict[str, Any]:
    """The entry written when the CIFAR-10 photographs are not there: nothing measured, and why."""
    return {
        "title": TITLE, "aim": AIM, "ratio": None, "skipped": True, "aim_met": False,
        "ratio_definition": "mean test_acc of the paper-mode clustered hints ÷ of the default hints (not measured)",
        "figures": {},
        "notes": [f"Skipped: the CIFAR-10 photographs were not found (ImageFolder train/<class>/*.jpg and "
                  f"test/<class>/*.jpg); set ${CIFAR10_SUBSET_ENV} to their folder, or put them in "
                  f"../shared/data/cifar10-subset beside the checkout, and run `{command(NAME, quick, tiny)}`."],
        "machine": machine(pick_device()), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """The data path, the teacher, the student alone, then one sweep per (method ± KD, measure) with its
    confirmation stage; the results.json entry (or the skipped one without the photographs)."""
    from pursuhint.search.confirm import confirm_seeds  # scipy: deferred, decode_worker's process measures its RSS

    root = cifar10_subset()
    if root is None:
        return skipped_entry(quick, tiny)  # bench/run.py prints its note
    s = natural_settings(quick, tiny)
    m = modern_settings(quick, tiny)
    if os.environ.get(ONLY_ENV):
        return modern_only(root, s, m, quick, tiny)
    device = pick_device()
    t_start = time.perf_counter()
    walls: dict[str, float] = {}
    with workspace() as folder:
        t0 = time.perf_counter()
        decode = data_path(root) if s["decode"] else None
        walls["data_path"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        teacher, t_cfg, t_info = natural_teacher(root, s)
        walls["teacher"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        t_ds = dataset_for(t_cfg)
        t_info["train_images"] = int(t_ds.train_x.shape[0])
        base = student_config(root, t_info["checkpoint"], "at", 0.0, MEASURES[0], s)
        seeds = confirm_seeds(base.seed, s["seeds"])
        ds = dataset_for(base)
        t_info["test_acc"] = teacher_test_accuracy(teacher.model, ds)
        sensitivity = probe_sensitivity(teacher, t_ds, ds, tuple(s["probe_sizes"]))
        positions = hint_positions(teacher, ds, base, seeds)
        walls["teacher_test_and_hints"] = round(time.perf_counter() - t0, 1)
        splits = {"train": int(ds.train_x.shape[0]), "selection": int(ds.val_x.shape[0]),
                  "test": int(ds.test_x.shape[0])}
        alone = students_alone(base, seeds)
        walls["ce_only"] = alone["wall_s"]
        sweeps = all_sweeps(root, t_info["checkpoint"], s, positions, folder, m)
        walls["sweeps"] = round(sum(v.get("wall_s", 0.0) for v in sweeps.values()), 1)
        modern = {"settings": m, "sweeps": modern_sweeps(root, t_info["checkpoint"], s, m, folder, sweeps),
                  "date": now(), "same_run": True}
        walls["modern"] = 0.0 if m.get("in_family_sweep") else round(
            sum(v["wall_s"] for v in modern["sweeps"].values()), 1)
    headline_key, headline = headline_of(sweeps)
    figures = {
        "settings": s, "pair": list(PAIR), "k": K, "kd_weight": KD_WEIGHT, "n_seeds": s["seeds"], "seeds": seeds,
        "root": str(root), "cache": str(cache_dir()), "splits": splits, "data_path": decode, "teacher": t_info,
        "ce_only": alone, "hints": positions, "sweeps": sweeps, "headline": headline_key, "modern": modern,
        "probe_sensitivity": sensitivity, "walls_s": walls,
        "driver_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "measured_wall_s": round(time.perf_counter() - t_start, 1),
    }
    n_runs = sum(v["trials"] + sum(len(r["seeds"]) for r in v["confirmation"]["configurations"]
                                   + v["confirmation"]["baselines"])
                 for v in sweeps.values() if v.get("confirmation"))
    entry = {
        "title": TITLE, "aim": AIM, "ratio": headline,
        "ratio_definition": f"mean test_acc of the paper-mode clustered hints (r2_cca) ÷ of the default hints over "
                            f"{s['seeds']} seeds, confirmation stage of `pursuhint sweep` ({headline_key})",
        "aim_met": bool(headline is not None and headline >= 1.0),
        "skipped": False,
        "figures": figures,
        "notes": _notes(s, figures, n_runs),
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
    entry["tables"] = tables(figures)
    return entry


def modern_only(root: Path, s: dict[str, Any], m: dict[str, Any], quick: bool, tiny: bool) -> dict[str, Any]:
    """$PURSUHINT_NATURAL_ONLY=modern: the published methods' sweeps alone, beside the figures of the entry
    bench/results.json holds for the same variant (same teacher, splits, recipe and seeds)."""
    if os.environ[ONLY_ENV] != "modern":
        raise SystemExit(f"{ONLY_ENV} may only be 'modern', got {os.environ[ONLY_ENV]!r}")
    path = ROOT / "bench" / "results.json"
    entry = json.loads(path.read_text(encoding="utf-8")).get(NAME) if path.is_file() else None
    if not entry or entry.get("skipped") or entry["figures"].get("settings") != json.loads(json.dumps(s)):
        raise SystemExit(f"{ONLY_ENV}=modern needs a {NAME} entry of the same variant in {path}; run the "
                         "benchmark once without it")
    t0 = time.perf_counter()
    with workspace() as folder:
        teacher, _, t_info = natural_teacher(root, s)
        base = student_config(root, t_info["checkpoint"], "at", 0.0, MEASURES[0], s)
        t_info["test_acc"] = teacher_test_accuracy(teacher.model, dataset_for(base))
        modern = {"settings": m, "sweeps": modern_sweeps(root, t_info["checkpoint"], s, m, folder), "date": now(),
                  "same_run": False, "teacher": t_info,
                  "same_teacher": t_info["sha256"] == entry["figures"]["teacher"]["sha256"]}
    figures = {**entry["figures"], "modern": modern}
    figures["walls_s"] = {**figures["walls_s"], "modern": round(time.perf_counter() - t0, 1)}
    entry = {**entry, "figures": figures,
             "notes": [n for n in entry["notes"] if not n.startswith("Published methods:")] + [_modern_note(figures)]}
    entry["tables"] = tables(figures)
    return entry


def _modern_note(f: dict[str, Any]) -> str:
    """How the published methods' part was measured."""
    mo = f["modern"]
    fam = family_label(*mo["settings"]["family"])
    names = {"default": "its default hints", "kd_only": "KD only", "dkd": "DKD", "reviewkd": "ReviewKD",
             "semckd": "SemCKD over the teacher's stage ends"}
    against = ", ".join(names[b] for b in mo["settings"]["baselines"])
    return (f"Published methods: one sweep races {fam}'s paper-mode configuration (r2_cca) against {against} "
            f"(seeds {json.dumps(mo['settings']['seeds'])}, cohorts of the "
            "arms of a seed, `search.confirm.baselines`), each published method with its recipe (DKD α 1, β 8, "
            "T 4 with its warm-up scaled to our epochs; ReviewKD β 1 beside CE; SemCKD β 400 beside KD); a second "
            "sweep trains SemCKD with `candidates: hints` over the paper-mode hint set, paired afterwards with the "
            f"race's runs of the same seeds. Run on {mo['date']} ({f['walls_s'].get('modern')} s); "
            + ("in the same run as the rest." if mo.get("same_run") else
               f"after the other figures' run (`{ONLY_ENV}=modern`: same splits, recipe and seeds"
               + (" and teacher)." if mo.get("same_teacher") else
                  f"; the teacher was retrained with the same config, since the cached one was gone, and is not "
                  f"bitwise the same: test accuracy {mo['teacher']['test_acc']:.2f} %, sha256 "
                  f"{mo['teacher']['sha256'][:12]}; every arm of this part learns from this teacher, the CE-only "
                  "student needs none)")))


def _notes(s: dict[str, Any], f: dict[str, Any], n_runs: int) -> list[str]:
    """The entry's "how it was measured" lines: sizes and why, teacher, recipe, protocol, data path."""
    t = f["teacher"]
    sp = f["splits"]
    fams = ", ".join(family_label(m, kd) for m, kd in s["families"])
    epochs = f"{s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}"
    gpu = f" ({trial_gpu():g} GPU each)" if trial_gpu() else ""
    return [
        f"Variant: {s['variant']}. Data: the CIFAR-10 subset's photographs (32 px, ImageFolder, read through "
        f"`data: {{dataset: imagefolder}}`). Student: {PAIR[1]} on a stratified {s['train']}-image subset of the "
        f"training part ({sp['train']} to train, {sp['selection']} as the selection split), scored on "
        f"{sp['test']} held-out test photographs. Sizes chosen so the full run fits about 75 minutes of 2 CPU "
        "cores (on a quiet machine; the wall time above includes whatever ran beside it): a small subset leaves "
        "the student "
        "far below the teacher, which is the gap distillation can close.",
        f"Teacher: {PAIR[0]} (the pair resnet20 → resnet8: a resnet56 teacher's forward pass would double every "
        f"distillation step on the CPU), trained once on {t['train_images']} training photographs for "
        f"{t['epochs']} epochs (search_waste's CIFAR teacher, the same cached file) into the benchmark cache "
        f"({f['cache']}); "
        + ("found in the cache." if t["checkpoint_cached"] else f"trained in this run ({t['seconds']} s).")
        + f" Test accuracy {t['test_acc']:.2f} % on the same {sp['test']} test photographs.",
        f"Recipe: {epochs}, batch 64, SGD lr 0.05 cosine, one torch thread per run, FIFO, 2 concurrent 1-CPU "
        f"trials{gpu}; hint weight calibrated "
        "(`hint_weight: auto`, `hint_ratio: 1`); with KD: CE weight 1, KD weight "
        f"{KD_WEIGHT:g}, temperature 4 (the authors' reproducible AT recipe). Families: {fams}; K = {K}.",
        f"Each sweep is `pursuhint sweep` with nothing searched (one search-stage trial on the selection split), "
        f"then its confirmation stage over seeds {', '.join(map(str, f['seeds']))}: the paper-mode configuration "
        "and, in the r2_cca sweep of each family, the default, uniform and random hints (and KD only with KD). "
        "The cka_linear sweep trains its configuration only, and is skipped when its hints equal r2_cca's; its "
        "gains pair its runs with the r2_cca sweep's baseline runs of the same seeds (same splits and recipe). "
        "CE only: `train_student` with no hints and no KD term, same recipe, splits and seeds. "
        f"{n_runs} sweep trials in all.",
        "Each sweep starts its own local Ray and ends it, as `pursuhint sweep` does; its wall time includes that.",
        "Data path: two fresh processes, one loading all the JPEGs (train and test) with an empty image cache "
        "(decode with a few threads, then write the .npz cache), one loading them again from that cache; peak "
        "RSS is each process's ru_maxrss; RUSAGE_CHILDREN is the largest of this benchmark's child processes "
        "so far."
        + ("" if f["data_path"] else " Not measured in the tiny variant (a cold decode costs ~15 s of its ~2 min)."),
        "VID is left out: a third method would add a third of the runs, beyond the budget.",
    ] + ([_modern_note(f)] if f.get("modern") else [])


# ------------------------------------------------------------------------------------------------
# tables


def _ms(st: dict[str, Any]) -> str:
    sd = st.get("sd")
    return f"{st['mean']:.2f} ± {sd:.2f}" if sd is not None and sd == sd else f"{st['mean']:.2f}"


def _seeds(d: dict[str, Any]) -> dict[int, float]:
    return {int(k): float(v) for k, v in d.items() if v == v}


def _one_based(idx: list[int]) -> str:
    return ", ".join(str(i + 1) for i in idx)


def family_rows(f: dict[str, Any], family: str) -> list[list[Any]]:
    """One family's rows: each placement's hint positions, test accuracy mean ± sd, and its gain over the default
    hints of the same family paired by seed (95 % CI, verdict), from the sweeps' confirmation tables and the
    CE-only runs."""
    from pursuhint.search.stats import StatsError, paired_gain, summarise, verdict  # scipy: as confirm_seeds

    sweeps = {v["measure"]: v for v in f["sweeps"].values() if v.get("family") == family}
    base_sweep = sweeps.get(MEASURES[0], {})
    base_table = base_sweep.get("confirmation") or {}
    hints = f.get("hints", {})
    runs: list[tuple[str, str, dict[int, float]]] = []
    for measure in MEASURES:
        sw = sweeps.get(measure)
        if sw is None:
            continue
        label = f"paper mode, {measure}"
        if sw.get("same_as"):
            runs.append((label, f"{_one_based(hints.get(measure, []))} (= r2_cca: not retrained)", {}))
            continue
        for c in (sw.get("confirmation") or {}).get("configurations", []):
            runs.append((label, _one_based(hints.get(measure, [])) or c["hint_layers"], _seeds(c["seeds"])))
    by_kind = {b["kind"]: b for b in base_table.get("baselines", [])}
    random_sets = hints.get("random", {})
    where = {"default": _one_based(hints.get("default", [])), "uniform": _one_based(hints.get("uniform", [])),
             "random": " / ".join(_one_based(v) for v in random_sets.values()) + (" (per seed)" if random_sets else ""),
             "kd_only": "none (KD only)"}
    for kind in ("default", "uniform", "random", "kd_only"):
        if kind in by_kind:
            runs.append((f"{kind} hints" if kind != "kd_only" else "KD only", where[kind],
                         _seeds(by_kind[kind]["seeds"])))
    if f.get("ce_only", {}).get("seeds"):
        runs.append(("student alone (CE only)", "none", _seeds(f["ce_only"]["seeds"])))
    default = _seeds(by_kind["default"]["seeds"]) if "default" in by_kind else {}
    rows = []
    for label, positions, scores in runs:
        if not scores:
            rows.append([label, positions, "—", "—", "—"])
            continue
        gain, words = "—", "—"
        if label != "default hints" and default:
            try:
                g = paired_gain(scores, default)
                gain, words = f"{g.mean:+.2f} [{g.low:+.2f}, {g.high:+.2f}]", verdict(g, "default")
            except StatsError:
                pass
        rows.append([label, positions, _ms(summarise(list(scores.values())).as_dict()), gain, words])
    return rows


def tables(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The Markdown tables of an entry, from its figures alone: the teacher and the student alone, one table of
    placements per family, the data path, and the probe sensitivity."""
    if not f:
        return []
    out = []
    t = f["teacher"]
    n_test = f["splits"]["test"]
    rows = [[f"teacher {t['arch']} ({t['train_images']} images, {t['epochs']} epochs)", f"{t['test_acc']:.2f}"]]
    if f.get("ce_only", {}).get("seeds"):
        from pursuhint.search.stats import summarise  # scipy: as confirm_seeds

        ce = summarise(list(_seeds(f["ce_only"]["seeds"]).values()))
        rows.append([f"student {f['pair'][1]} alone (CE only), {len(f['ce_only']['seeds'])} seeds", _ms(ce.as_dict())])
        rows.append(["teacher − student alone (the gap distillation can close)", f"{t['test_acc'] - ce.mean:+.2f}"])
    out.append(table(f"Teacher and student alone: test accuracy (%) on {n_test} held-out photographs",
                     ["model", "test_acc"], rows))
    families = list(dict.fromkeys(v["family"] for v in f["sweeps"].values()))
    for family in families:
        walls = ", ".join(f"{v['measure']} {v['wall_s']} s" for v in f["sweeps"].values()
                          if v.get("family") == family and "wall_s" in v)
        what = "CE + KD + hints" if family.endswith("+kd") else "CE + hints"
        out.append(table(f"{family} ({what}): test accuracy (%) over {f['n_seeds']} seeds on {n_test} held-out "
                         f"photographs; gain over the default hints paired by seed (sweeps: {walls})",
                         ["placement", "hint positions (1-based)", "test_acc mean ± sd",
                          "gain vs default hints (95 % CI)", "verdict"], family_rows(f, family)))
    out += modern_tables(f)
    d = f.get("data_path")
    if d:
        n = d["first_load"]["images"]
        out.append(table(f"Natural-image data path: {n:,} JPEGs ({d['jpeg_mb']} MB) decoded to 32 px uint8, each load "
                         f"in a fresh process ({d['cpus']} CPUs)",
                         ["load", "seconds", "peak RSS MB", "cache MB"],
                         [["first (empty cache: decode + write)", d["first_load"]["seconds"],
                           d["first_load"]["maxrss_mb"], d["cache_mb"]],
                          ["second (from the cache)", d["second_load"]["seconds"], d["second_load"]["maxrss_mb"],
                           d["cache_mb"]],
                          ["first ÷ second", d["cold_over_warm"], "—", "—"]]))
    if f.get("probe_sensitivity"):
        out.append(table("The paper-mode hint set (K = 3, positions 1-based) moves with the probe set: the same "
                         "teacher, probes of different sizes",
                         ["probe images", "from", "r2_cca", "cka_linear"],
                         [[p["images"], p["probe"], _one_based(p["r2_cca"]), _one_based(p["cka_linear"])]
                          for p in f["probe_sensitivity"]]))
    return out
