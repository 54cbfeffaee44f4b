"""Selection speed: pursuhint's hint selection against the naive pipeline on the same teacher and probe set.

pursuhint: ONE hooked forward pass gives every candidate's (N × C) representation, the L × L matrix
is computed in feature space, then the paper's k-means runs on the matrix. Naive: one forward pass
per candidate layer, and an N × N Gram-matrix linear CKA recomputed for every (layer, center) pair
at every k-means step. Teachers are randomly initialised: the cost of a forward pass, a CKA or a
k-means step does not depend on the weights (only the number of k-means steps does; it is reported).
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch
from torch import nn

from pursuhint.data import DeviceLoader
from pursuhint.hints import candidate_layers, cluster, layer_representations, select_hints, similarity_matrix
from pursuhint.hints.cluster import initial_centers
from pursuhint.models import create_model

from .common import (CIFAR100_MEAN, CIFAR100_STD, cifar_like, command, interleaved, machine, median_time,
                     now, pick_device, ratio, seconds, seeded, table)

NAME = "selection_speed"
TITLE = "Selection speed: one hooked pass + feature-space similarity vs the naive pipeline"
AIM = "end to end ≥ 50× faster than the naive pipeline; representations ≤ 1.5 × one plain forward pass"
N_HINTS = 3
BATCH = 256


def _settings(quick: bool, tiny: bool) -> dict[str, Any]:
    """Teachers, probe sizes and repeat counts for the full, quick and (test-only) tiny runs."""
    if tiny:
        return {"cases": {"resnet14": [128]}, "slice": 32, "batch": 32, "repeats": 3, "sim_repeats": 2,
                "gram_repeats": 3, "rbf": False, "naive_check_max_s": 30.0}
    if quick:
        return {"cases": {"resnet56": [2000]}, "slice": BATCH, "batch": BATCH, "repeats": 7, "sim_repeats": 3,
                "gram_repeats": 5, "rbf": False, "naive_check_max_s": 0.0}
    return {"cases": {"resnet56": [2000, 10000], "resnet110": [2000, 10000]}, "slice": BATCH, "batch": BATCH,
            "repeats": 9, "sim_repeats": 3, "gram_repeats": 3, "rbf": True, "naive_check_max_s": 60.0}


# ------------------------------------------------------------------------------------------------
# the naive pipeline


def plain_pass(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """One plain eval-mode forward over the batches: the unit both pipelines are measured in."""
    with torch.inference_mode():
        for xb in batches:
            model(xb)


def naive_layer_pass(model: nn.Module, batches: list[torch.Tensor], layer: str) -> torch.Tensor:
    """Naive representations of ONE layer: a whole forward pass over the probe set capturing that layer."""
    out: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, o: out.append(o.mean(dim=(2, 3), dtype=torch.float32)))
    try:
        plain_pass(model, batches)
    finally:
        handle.remove()
    return torch.cat(out)


def naive_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA the textbook way: N × N Grams of the raw features, centered, Frobenius products (float64)."""
    x, y = x.double(), y.double()
    kx, ky = x @ x.T, y @ y.T
    for k in (kx, ky):  # H K H without forming H: subtract row and column means, add the grand mean
        mean = k.mean()
        rows = k.mean(1, keepdim=True)
        k.sub_(rows).sub_(rows.T).add_(mean)
    fx, fy = kx.view(-1), ky.view(-1)
    return float(torch.dot(fx, fy) / torch.sqrt(torch.dot(fx, fx) * torch.dot(fy, fy)))


def naive_kmeans(reps: list[torch.Tensor], k: int, max_iter: int = 80) -> tuple[list[int], int, int]:
    """The paper's k-means with every (layer, center) similarity recomputed by :func:`naive_cka` at every step.

    Same rules as docs/method.md §4 (evenly spaced start, ties to the lower cluster, move to the member
    nearest the floored mean position with ties to the shallower layer, empty clusters stay).
    Returns (final centers, iterations, CKA evaluations).
    """
    L = len(reps)
    centers = initial_centers(L, k)
    evaluations = iterations = 0
    for _ in range(max_iter):
        iterations += 1
        labels = []
        for i in range(L):
            dist = [1.0 - naive_cka(reps[i], reps[c]) for c in centers]
            evaluations += len(centers)
            labels.append(min(range(len(centers)), key=lambda t: (dist[t], t)))
        new = list(centers)
        for t in range(len(centers)):
            members = [i for i in range(L) if labels[i] == t]
            if members:
                target = sum(members) // len(members)
                new[t] = min(members, key=lambda m: (abs(m - target), m))
        if new == centers:
            break
        centers = new
    return centers, iterations, evaluations


def naive_pair_list(trace: list[list[int]], iterations: int, n_layers: int) -> list[tuple[int, int]]:
    """Every (layer, center) CKA the naive k-means evaluates, given pursuhint's trace of the same run."""
    return [(i, c) for t in range(iterations) for c in trace[t] for i in range(n_layers)]


def naive_clustering_seconds(reps: list[torch.Tensor], pairs: list[tuple[int, int]], repeats: int,
                             device: torch.device) -> tuple[float, dict]:
    """Naive similarity + clustering time: each distinct (C_layer, C_center) width pair timed (median of
    ``repeats`` after one warm-up evaluation), summed over the exact list of pair evaluations."""
    widths = [r.shape[1] for r in reps]
    example: dict[tuple[int, int], tuple[int, int]] = {}
    for i, c in pairs:
        example.setdefault((widths[i], widths[c]), (i, c))
    naive_cka(reps[pairs[0][0]], reps[pairs[0][1]])  # warm-up
    per_pair = {}
    for key, (i, c) in example.items():
        per_pair[key] = median_time(lambda i=i, c=c: naive_cka(reps[i], reps[c]), repeats, warmup=0,
                                    device=device)["median_s"]
    total = sum(per_pair[(widths[i], widths[c])] for i, c in pairs)
    return total, {f"{a}x{b}": round(s, 5) for (a, b), s in sorted(per_pair.items())}


# ------------------------------------------------------------------------------------------------
# one teacher


def _teacher(arch: str, device: torch.device) -> nn.Module:
    with seeded(0):  # the same random teacher every run, so the k-means makes the same steps
        model = create_model(arch, 100).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _forward_costs(model: nn.Module, names: list[str], batches: list[torch.Tensor], repeats: int,
                   device: torch.device) -> dict[str, Any]:
    """Seconds per probe image of: a plain pass, pursuhint's hooked pass, and a naive one-layer pass
    (sampled at the middle candidate: every naive pass runs the whole network, whichever layer it hooks)."""
    sampled = [names[len(names) // 2]]
    fns: dict[str, Callable[[], Any]] = {
        "plain": lambda: plain_pass(model, batches),
        "pursuhint": lambda: layer_representations(model, batches, names),
    }
    for name in sampled:
        fns[f"naive:{name}"] = lambda name=name: naive_layer_pass(model, batches, name)
    warm = batches[:1]
    plain_pass(model, warm)
    layer_representations(model, warm, names)
    timed = interleaved(fns, repeats, warmup=0, device=device)
    n = sum(b.shape[0] for b in batches)
    per_image = {k: v["median_s"] / n for k, v in timed.items()}
    fastest = {k: v["min_s"] / n for k, v in timed.items()}
    naive = statistics.mean(per_image[f"naive:{name}"] for name in sampled)
    return {"slice_images": n, "plain": per_image["plain"], "pursuhint": per_image["pursuhint"],
            "naive_one_layer": naive,
            "fastest": {"plain": fastest["plain"], "pursuhint": fastest["pursuhint"],
                        "naive_one_layer": statistics.mean(fastest[f"naive:{name}"] for name in sampled)},
            "samples_s": {k: v["times_s"] for k, v in timed.items()}, "naive_sampled_layers": sampled}


def _case(arch: str, model: nn.Module, names: list[str], reps_all: list[torch.Tensor], n: int,
          fwd: dict[str, Any], cfg: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """All figures for one (teacher, probe size)."""
    L = len(names)
    reps = [r[:n] for r in reps_all]
    repeats = cfg["sim_repeats"]
    ours_reps = fwd["pursuhint"] * n
    naive_reps = fwd["naive_one_layer"] * n * L
    plain = fwd["plain"] * n

    sim_s = {}
    for metric in ("r2_cca", "cka_linear"):
        sim_s[metric] = median_time(lambda m=metric: similarity_matrix(reps, m), repeats, 1, device)["median_s"]
    if cfg["rbf"]:
        similarity_matrix([r[:64] for r in reps[:2]], "cka_rbf")  # warm-up
        sim_s["cka_rbf"] = median_time(lambda: similarity_matrix(reps, "cka_rbf"), 2, 0, device)["median_s"]
    S = similarity_matrix(reps, "cka_linear")
    cluster_s = median_time(lambda: select_hints(S, N_HINTS, on_collision="warn"), max(repeats, 5), 1)["median_s"]
    hints = select_hints(S, N_HINTS, on_collision="warn")
    result = cluster(S.values, N_HINTS)
    pairs = naive_pair_list(result.trace, result.iterations, L)
    naive_cluster, per_pair = naive_clustering_seconds(reps, pairs, cfg["gram_repeats"], device)

    check: dict[str, Any] = {}
    if naive_cluster <= cfg["naive_check_max_s"]:  # run the naive k-means once: same hints? extrapolation error?
        out: dict[str, Any] = {}
        keys = ("centers", "iterations", "evaluations")
        measured = seconds(lambda: out.update(zip(keys, naive_kmeans(reps, N_HINTS))), device)
        check = {"naive_measured_s": measured, "naive_same_hints": sorted(set(out["centers"])) == hints.indices,
                 "naive_measured_evaluations": out["evaluations"],
                 "extrapolated_over_measured": ratio(naive_cluster, measured)}

    ours_sc = sim_s["cka_linear"] + cluster_s
    ours_total = ours_reps + ours_sc
    naive_total = naive_reps + naive_cluster
    ours_all = ours_reps + sum(sim_s.values()) + cluster_s
    return {
        "teacher": arch, "probe_images": n, "candidates": L, "n_hints": N_HINTS, "hints": hints.indices,
        "kmeans_iterations": result.iterations, "naive_pair_evaluations": len(pairs),
        "pursuhint_representations_s": ours_reps, "plain_forward_s": plain,
        "representations_over_plain_forward": ratio(ours_reps, plain),
        "representations_over_plain_forward_fastest": ratio(fwd["fastest"]["pursuhint"], fwd["fastest"]["plain"]),
        "naive_representations_s": naive_reps, "representations_ratio": ratio(naive_reps, ours_reps),
        "similarity_s": sim_s, "clustering_s": cluster_s,
        "naive_similarity_clustering_s": naive_cluster, "naive_seconds_per_pair": per_pair,
        "similarity_clustering_ratio": ratio(naive_cluster, ours_sc),
        "pursuhint_total_s": ours_total, "naive_total_s": naive_total,
        "end_to_end_ratio": ratio(naive_total, ours_total),
        "pursuhint_total_all_measures_s": ours_all,
        "end_to_end_ratio_all_measures": ratio(naive_total, ours_all),
        **check,
    }


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Measure every (teacher, probe size) case and return the results.json entry."""
    cfg = _settings(quick, tiny)
    device = pick_device()
    cases = []
    forward = {}
    for arch, sizes in cfg["cases"].items():
        model = _teacher(arch, device)
        layers = candidate_layers(model, input_shape=(3, 32, 32))
        names = [layer.name for layer in layers]
        x, y = cifar_like(max(sizes), seed=0)
        loader = DeviceLoader(x, y, cfg["batch"], train=False, augment="none", mean=CIFAR100_MEAN,
                              std=CIFAR100_STD, device=device)
        batches = [xb for xb, _ in loader]  # normalised once: both pipelines see identical tensors
        slice_batches = batches[: max(1, cfg["slice"] // cfg["batch"])]
        fwd = _forward_costs(model, names, slice_batches, cfg["repeats"], device)
        reps_all: list[torch.Tensor] = []
        full_pass = seconds(lambda: reps_all.extend(layer_representations(model, batches, names)),  # noqa: F821 - runs now, before the del below
                            device)
        forward[arch] = fwd | {"measured_full_pass_s": full_pass, "full_pass_images": max(sizes)}
        for n in sizes:
            cases.append(_case(arch, model, names, reps_all, n, fwd, cfg, device))
        del batches, slice_batches, reps_all, model

    headline = min(c["end_to_end_ratio"] for c in cases)
    worst_reps = max(c["representations_over_plain_forward"] for c in cases)
    return {
        "title": TITLE, "aim": AIM,
        "ratio": headline,
        "ratio_definition": "naive end-to-end seconds / pursuhint end-to-end seconds, both with linear CKA; "
                            "the smallest over the cases",
        "aim_met": bool(headline >= 50 and worst_reps <= 1.5),
        "figures": {"cases": cases, "forward_per_image_s": forward,
                    "representations_over_plain_forward_max": worst_reps},
        "tables": _tables(cases, forward),
        "notes": _notes(cfg, cases),
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }


def _tables(cases: list[dict], forward: dict) -> list[dict]:
    stage = table(
        "Stage and end-to-end seconds (pursuhint / naive) and ratios (naive ÷ pursuhint)",
        ["teacher", "N", "L", "repr. s (ours / naive)", "repr. ratio", "sim.+clust. s (ours / naive)",
         "sim.+clust. ratio", "end-to-end s (ours / naive)", "end-to-end ratio"],
        [[c["teacher"], c["probe_images"], c["candidates"],
          f"{c['pursuhint_representations_s']:.3g} / {c['naive_representations_s']:.4g}", c["representations_ratio"],
          f"{c['similarity_s']['cka_linear'] + c['clustering_s']:.3g} / {c['naive_similarity_clustering_s']:.4g}",
          c["similarity_clustering_ratio"],
          f"{c['pursuhint_total_s']:.3g} / {c['naive_total_s']:.4g}", c["end_to_end_ratio"]] for c in cases])
    ours = table(
        "pursuhint's stages in seconds (representations: the whole probe set; similarity: the L × L matrix)",
        ["teacher", "N", "repr. / plain forward (fastest repeats)", "r2_cca", "cka_linear", "cka_rbf (≤ 4 000 rows)",
         "clustering (k-means)", "k-means steps", "end-to-end ratio with every measure"],
        [[c["teacher"], c["probe_images"],
          f"{c['representations_over_plain_forward']:.3g} ({c['representations_over_plain_forward_fastest']:.3g})",
          c["similarity_s"]["r2_cca"], c["similarity_s"]["cka_linear"], c["similarity_s"].get("cka_rbf"),
          c["clustering_s"], c["kmeans_iterations"], c["end_to_end_ratio_all_measures"]] for c in cases])
    checks = [c for c in cases if "naive_measured_s" in c]
    rows = [[c["teacher"], c["probe_images"], c["naive_pair_evaluations"], c["naive_measured_evaluations"],
             c["naive_measured_s"], c["extrapolated_over_measured"], c["naive_same_hints"]] for c in checks]
    check = table("Naive k-means run in full (checks the extrapolation and that it picks the same hints)",
                  ["teacher", "N", "pair evaluations (counted)", "pair evaluations (run)", "naive run s",
                   "extrapolated ÷ measured", "same hints"], rows)
    fwd = table("Forward passes, milliseconds per probe image (median of repeats on a slice of the probe set)",
                ["teacher", "slice images", "plain", "pursuhint (all layers hooked)", "naive (one layer hooked)",
                 "measured full pass s (images)"],
                [[arch, f["slice_images"], 1000 * f["plain"], 1000 * f["pursuhint"], 1000 * f["naive_one_layer"],
                  f"{f['measured_full_pass_s']:.3g} ({f['full_pass_images']:,})"] for arch, f in forward.items()])
    return [stage, ours, check, fwd] if rows else [stage, ours, fwd]


def _notes(cfg: dict, cases: list[dict]) -> list[str]:
    notes = [
        "Teachers are randomly initialised (CIFAR-100 heads) and the probe images are random CIFAR-shaped "
        "uint8 tensors: speed does not depend on the weights or pixels, except through the number of k-means "
        "steps, which is reported.",
        f"Forward-pass costs are the median of {cfg['repeats']} interleaved repeats (plain, pursuhint, naive) "
        f"over a slice of {cfg['slice']} probe images (batch {cfg['batch']}) after a warm-up, scaled linearly to "
        "N; a naive pass hooks one layer and runs the whole network, timed at the middle candidate and "
        "multiplied by L. In brackets: the same ratio from the fastest repeat of each, which the shared machine's load "
        "disturbs least.",
        "Naive similarity + clustering: every distinct (layer width, center width) N × N Gram CKA is timed "
        f"(median of {cfg['gram_repeats']}) and summed over the exact list of (layer, center) evaluations the "
        "paper's k-means makes on this teacher (L × K per step)"
        + (f"; where that estimate is under {cfg['naive_check_max_s']:.0f} s the whole naive k-means is also run "
           "once to check it and that it picks the same hints." if cfg["naive_check_max_s"] else "."),
        "The naive clustering uses the representations of pursuhint's pass (the naive per-layer passes produce "
        "the same tensors).",
        "The 2 000-image probe set is the first 2 000 images of the 10 000 (eval-mode outputs are per image).",
    ]
    if not cfg["rbf"]:
        notes.append("cka_rbf is timed only in the full run.")
    return notes
