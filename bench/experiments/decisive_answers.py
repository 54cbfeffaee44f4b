"""Decisive answers: does racing seeds to a verdict decide more comparisons than today's fixed 3 seeds, for fewer
arm-seeds than running every arm to the maximum, with the same verdicts?

For two families (AT with KD, FitNet with KD; the paper-mode hint set, K = 3, calibrated hint weight) a sweep
trains the configuration and its baselines (default hints, random hints on digits, KD only, the CE-only student) over
the maximum number of seeds, with a fixed confirmation stage. The racing rule (``pursuhint.search.confirm.Race``)
is then replayed over those same runs: at look n each arm sees only the seeds the race would have given it,
so the replay makes exactly the decisions a live race makes. Beside it: the verdicts of the fixed 3 seeds
of today (the first three seeds) and of all seeds. Finally one real racing sweep (``seeds: {min, max}``) of
the first family runs on the same data, and its verdicts are compared with the replay's.

Full run: real CIFAR-10 photographs (the natural-image benchmark's pair, recipe and splits); without them the
entry says it was skipped. ``--quick``: the digits demo's pair and recipe (resnet56 → resnet8 at 16 px).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from pursuhint.config import Config, config_from_dict
from pursuhint.search.confirm import SEARCHED, Candidate, Race, baseline_arm, comparisons_of, replay
from pursuhint.search.sweep import run_sweep
from pursuhint.config.grammar import set_path

from ..common import (CIFAR10_SUBSET_ENV, KD_WEIGHT, cifar10_subset, command, demo_raw, machine, natural_settings, now,
                      pick_device, shutdown_ray, sweep_storage, table, threads, workspace)
from .selection_quality_natural import natural_teacher, student_config

NAME = "decisive_answers"
TITLE = "Decisive answers: racing seeds to a verdict vs a fixed number of seeds"
AIM = ("racing decides at least the share of comparisons that all seeds decide, with fewer arm-seeds than "
       "training every arm to the maximum, and agrees with the all-seed verdicts")
FAMILIES = (("at", KD_WEIGHT), ("fitnet", KD_WEIGHT))
SHARED = ("kd_only", "ce_only")  # arms that do not depend on the family: trained once, in the first family's sweep
MARGIN = 1.0


def _settings(quick: bool, tiny: bool) -> dict[str, Any]:
    """Sizes. Full: the natural-image benchmark's (2,000 training photographs, 8 epochs, all 5,000 test
    photographs), 10 seeds. Quick: the digits demo's recipe (6 epochs), 10 seeds. Tiny: a smoke test."""
    if tiny:
        return {"variant": "tiny (smoke test)", "data": "digits", "min": 2, "max": 3, "epochs": 1,
                "baselines": ["default"]}
    if quick:
        return {"variant": "quick (digits demo)", "data": "digits", "min": 3, "max": 10, "epochs": 6,
                "baselines": ["default", "random"]}
    # random hints left out on photographs: 20 arm-seeds (~15 min of 2 cores) the run cannot spare
    return {"variant": "full (CIFAR-10 photographs)", "data": "natural", "min": 3, "max": 10, "epochs": 8,
            "train": 2000, "test": None, "baselines": ["default"]}


def family_config(method: str, kd: float, s: dict[str, Any], seeds: Any, baselines: list[str],
                  root: Optional[Path], checkpoint: Optional[str], tag: str) -> Config:
    """One sweep's config: the paper-mode configuration only (nothing searched), its confirmation stage."""
    name = f"bench_decisive_{tag}_{method}"
    confirm = {"search.confirm.seeds": seeds, "search.confirm.baselines": baselines, "search.confirm.margin": MARGIN,
               "search.confirm.top_k": 1, "search.num_samples": 1, "search.scheduler": "fifo",
               "search.baselines": [], "distill.method": method, "distill.kd_weight": kd, "distill.ce_weight": 1.0,
               "distill.hint_weight": "auto", "train.epochs": s["epochs"]}
    if s["data"] == "digits":  # the demo's file with every searched leaf fixed (with_values keeps a space)
        raw = demo_raw()
        values = {**confirm, "name": name, "selection.similarity": "r2_cca", "selection.n_hints": 3,
                  "selection.algorithm": "pursuhint", "selection.center": "mean_index",
                  "selection.on_collision": "warn",
                  "distill.hint_ratio": {"at": 0.316, "fitnet": 0.949}[method]}  # the demo's by_method middles
        for key, value in values.items():
            set_path(raw, key, value)
        cfg = config_from_dict(raw, source=name)
        assert not cfg.space, cfg.space
        return cfg
    ns = {**natural_settings(False, False), "train": s["train"], "test": s["test"], "epochs": s["epochs"]}
    return student_config(root, checkpoint, method, kd, "r2_cca", ns).with_values({"name": name, **confirm})


def run_family(cfg: Config, folder: Path) -> dict[str, Any]:
    """``pursuhint sweep`` on one family's config; its wall time and confirmation table."""
    t0 = time.perf_counter()
    with threads(1):
        result = run_sweep(cfg, verbose=0, progress=False, **sweep_storage(folder / cfg.name))
    shutdown_ray()
    return {"wall_s": round(time.perf_counter() - t0, 1), "confirmation": result.confirmation}


def arm_scores(table_: dict[str, Any]) -> dict[tuple, dict[int, float]]:
    """A confirmation table's per-seed test accuracies by arm key (as ``confirm.group_results`` keys them)."""
    out = {(SEARCHED, c["trial_id"]): {int(k): v for k, v in c["seeds"].items()} for c in table_["configurations"]}
    for b in table_["baselines"]:
        out[baseline_arm(b["kind"], b["method"], b.get("n_hints"))] = {int(k): v for k, v in b["seeds"].items()}
    return out


def replays(tables: dict[str, dict[str, Any]], s: dict[str, Any]) -> dict[str, Any]:
    """Each family's comparisons decided by the race (replayed), by the fixed first three seeds, and by every
    seed; arm-seeds each way (the shared arms counted once); whether the race agrees with the all-seed verdicts."""
    shared = arm_scores(tables[FAMILIES[0][0]])
    out: dict[str, Any] = {"families": {}}
    spent: dict[tuple, int] = {}
    for method, _ in FAMILIES:
        t = tables[method]
        c = t["configurations"][0]
        cand = Candidate(c["trial_id"], {}, 0.0, c["method"], c["n_hints"], c["hint_layers"], (), 0.0)
        groups = {**{k: v for k, v in shared.items() if k[0] in SHARED}, **arm_scores(t)}
        seeds = sorted({sd for v in groups.values() for sd in v})
        kinds = list(s["baselines"]) + list(SHARED)

        def race(lo: int, hi: int) -> Race:
            return Race(comparisons_of([cand], kinds), lo, hi, MARGIN)

        raced = replay(race(s["min"], s["max"]), groups, seeds)
        three = replay(race(min(3, s["max"]), min(3, s["max"])), groups, seeds)
        every = replay(race(len(seeds), len(seeds)), groups, seeds)
        rows = {}
        for (_, kind), dec in sorted(raced["decisions"].items()):
            full, fixed = every["decisions"][(cand.trial_id, kind)], three["decisions"][(cand.trial_id, kind)]
            rows[kind] = {"race": dec.verdict, "race_n": dec.n, "race_words": dec.words(),
                          "fixed3": fixed.verdict, "all_seeds": full.verdict, "all_words": full.words(),
                          "agree": agree(dec, full)}
        for arm, n in raced["per_arm"].items():
            spent[arm] = max(spent.get(arm, 0), n)
        out["families"][f"{method}+kd"] = {"comparisons": rows, "stopped": raced["stopped"],
                                           "seeds": raced["seeds"], "answer": t.get("answer")}
    every_rows = [r for f in out["families"].values() for r in f["comparisons"].values()]
    out["arm_seeds"] = {"race": sum(spent.values()), "fixed_max": len(spent) * s["max"], "fixed_3": len(spent) * 3}
    out["decided_share"] = {k: sum(r[k] != "undecided" for r in every_rows) / len(every_rows)
                            for k in ("race", "fixed3", "all_seeds")}
    out["agreement"] = {"comparisons": len(every_rows), "agree": sum(r["agree"] for r in every_rows),
                        "same_verdict": sum(r["race"] == r["all_seeds"] for r in every_rows)}
    return out


def agree(race: Any, full: Any) -> bool:
    """Two decisions on the same comparison do not contradict: the same verdict; a better or worse within the
    margin beside "equivalent"; or one undecided whose CI allows the other's verdict."""
    if race.verdict == full.verdict:
        return True
    if {race.verdict, full.verdict} <= {"better", "worse", "equivalent"}:
        return "equivalent" in (race.verdict, full.verdict) and (race.within_margin and full.within_margin)
    decided, open_ = (race, full) if full.verdict == "undecided" else (full, race)
    if decided.verdict == "better":
        return open_.high > 0
    if decided.verdict == "worse":
        return open_.low < 0
    return open_.low < open_.margin and open_.high > -open_.margin


def live_match(live: dict[str, Any], fam: dict[str, Any]) -> dict[str, Any]:
    """The real racing sweep against the replay of the same family: verdicts and seeds per comparison."""
    c = live["confirmation"]["configurations"][0]
    rows = {kind: {"live": g["decision"], "live_n": g["n"], "replay": fam["comparisons"][kind]["race"],
                   "replay_n": fam["comparisons"][kind]["race_n"]} for kind, g in c["gains"].items()}
    return {"comparisons": rows, "match": all(r["live"] == r["replay"] and r["live_n"] == r["replay_n"]
                                              for r in rows.values()),
            "stopped": live["confirmation"].get("stopped"), "wall_s": live["wall_s"],
            "answer": live["confirmation"].get("answer")}


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """The fixed sweeps of both families to the maximum seeds, the replays, the live racing sweep; the entry."""
    s = _settings(quick, tiny)
    root, checkpoint = None, None
    if s["data"] == "natural":
        root = cifar10_subset()
        if root is None:
            return _skipped(quick, tiny)
    t_start = time.perf_counter()
    with workspace() as folder:
        if s["data"] == "natural":
            _, _, t_info = natural_teacher(root, natural_settings(False, False))
            checkpoint = t_info["checkpoint"]
        sweeps = {}
        for i, (method, kd) in enumerate(FAMILIES):
            baselines = list(s["baselines"]) + (list(SHARED) if i == 0 else [])
            cfg = family_config(method, kd, s, s["max"], baselines, root, checkpoint, "fixed")
            sweeps[method] = run_family(cfg, folder)
        tables_ = {m: v["confirmation"] for m, v in sweeps.items()}
        figures = replays(tables_, s)
        method, kd = FAMILIES[0]
        live_cfg = family_config(method, kd, s, {"min": s["min"], "max": s["max"]},
                                 list(s["baselines"]) + list(SHARED), root, checkpoint, "race")
        live = run_family(live_cfg, folder)
    figures["live"] = live_match(live, figures["families"][f"{method}+kd"])
    figures["sweep_walls_s"] = {m: v["wall_s"] for m, v in sweeps.items()}
    figures["settings"] = s
    figures["tables"] = tables_
    a = figures["arm_seeds"]
    saved = 1 - a["race"] / a["fixed_max"]
    entry = {
        "title": TITLE, "aim": AIM, "ratio": round(a["fixed_max"] / a["race"], 3),
        "ratio_definition": f"arm-seeds of every arm trained to {s['max']} seeds ÷ arm-seeds the race trains",
        "aim_met": bool(figures["decided_share"]["race"] >= figures["decided_share"]["all_seeds"]
                        and a["race"] < a["fixed_max"]
                        and figures["agreement"]["agree"] == figures["agreement"]["comparisons"]),
        "skipped": False, "figures": figures,
        "notes": _notes(s, figures, saved),
        "machine": machine(pick_device()), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny), "measured_wall_s": round(time.perf_counter() - t_start, 1),
    }
    entry["tables"] = tables(figures)
    return entry


def _notes(s: dict[str, Any], f: dict[str, Any], saved: float) -> list[str]:
    data = ("the CIFAR-10 subset's photographs, the natural-image benchmark's pair resnet20 → resnet8, "
            f"{s.get('train')} training photographs, {s['epochs']} epochs" if s["data"] == "natural" else
            f"the digits demo's pair resnet56 → resnet8 at 16 px, {s['epochs']} epochs")
    return [
        f"Variant: {s['variant']}. Data and recipe: {data}; batch 64, SGD lr 0.05 cosine, one torch thread per "
        "run, 2 concurrent 1-CPU trials. Families: AT and FitNet, each with KD (CE weight 1, KD weight 1.5), "
        "the paper-mode hint set (r2_cca, pursuhint, mean_index, K = 3), calibrated hint weight.",
        f"Fixed sweeps: every arm over seeds 1..{s['max']} (the first family's sweep also trains KD only and the "
        "CE-only student, which do not depend on the family; the second family's comparisons pair with them "
        "by seed). Replays: the racing rule (min "
        f"{s['min']}, max {s['max']}, margin ±{MARGIN:g}, α 0.05 over the table and the looks) over those runs, "
        "each arm seeing only the seeds the race would have given it; 'fixed 3' is one look at seeds 1..3 "
        "(today's default), 'all seeds' one look at every seed. Each family is its own table (Holm over its "
        "comparisons).",
        f"Arm-seeds: the race trains {f['arm_seeds']['race']} against {f['arm_seeds']['fixed_max']} for every arm "
        f"to {s['max']} seeds ({saved:.0%} saved) and {f['arm_seeds']['fixed_3']} for fixed 3 seeds.",
        "Live race: `pursuhint sweep` with `search.confirm.seeds: {min, max}` on the first family, same data, "
        "recipe and seeds: its verdicts and the seeds each comparison used, against the replay's.",
    ]


def tables(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The Markdown tables: verdicts by comparison three ways, then the headline counts."""
    rows = []
    for fam, v in f["families"].items():
        for kind, r in v["comparisons"].items():
            rows.append([fam, kind, f"{r['race_words']}", r["race_n"], r["fixed3"], r["all_words"],
                         "yes" if r["agree"] else "NO"])
    a, d, g = f["arm_seeds"], f["decided_share"], f["agreement"]
    live = f["live"]
    summary = [["arm-seeds trained", a["race"], a["fixed_3"], a["fixed_max"]],
               ["share of comparisons decided", f"{d['race']:.0%}", f"{d['fixed3']:.0%}", f"{d['all_seeds']:.0%}"],
               ["agrees with the all-seed verdicts", f"{g['agree']} of {g['comparisons']}", "—", "—"]]
    live_rows = [[kind, r["live"], r["live_n"], r["replay"], r["replay_n"]]
                 for kind, r in live["comparisons"].items()]
    return [
        table("Each comparison: the race's verdict (replayed) and its seeds, fixed 3 seeds, all seeds",
              ["family", "vs", "race verdict", "race seeds", "fixed 3 seeds", "all seeds", "agree"], rows),
        table("Racing against fixed seeds", ["", "race", "fixed 3 seeds", f"fixed {f['settings']['max']} seeds"],
              summary),
        table(f"The live racing sweep ({'matches' if live['match'] else 'DOES NOT match'} the replay; stopped: "
              f"{live['stopped']}; {live['wall_s']} s)", ["vs", "live verdict", "seeds", "replay verdict", "seeds"],
              live_rows),
    ]


def _skipped(quick: bool, tiny: bool) -> dict[str, Any]:
    return {"title": TITLE, "aim": AIM, "ratio": None, "skipped": True, "aim_met": False,
            "ratio_definition": "arm-seeds of every arm to max ÷ the race's (not measured)", "figures": {},
            "notes": [f"Skipped: the CIFAR-10 photographs were not found; set ${CIFAR10_SUBSET_ENV} to their folder "
                      f"and run `{command(NAME, quick, tiny)}`, or `--quick` for the digits form."],
            "machine": machine(pick_device()), "date": now(), "quick": quick, "tiny": tiny,
            "command": command(NAME, quick, tiny)}
