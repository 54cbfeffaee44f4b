"""HintSet: the portable result of hint selection (which teacher layers, chosen how), as versioned JSON.

``select_hints`` turns a similarity matrix into a HintSet by clustering (docs/method.md §4);
``default_hints`` gives the baseline, the last candidate of every stage (§6); ``uniform_hints`` and
``random_hints`` give the placements a sceptic would try with the same number of hints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from torch import nn

from ..errors import HintSetError
from ..infra.fileio import existing_file, write_text_atomic
from .cluster import CENTERS, CLUSTERINGS, check_similarity, cluster
from .layers import CandidateLayer
from .similarity import PAPER_SIMILARITIES, SimilarityMatrix, layer_names

SCHEMA_VERSION = 1
ON_COLLISION = ("error", "warn")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = ("schema_version", "layers", "indices", "n_hints", "candidates", "algorithm")

# The trial's training recipe, as its MLflow params record it: param name → the config key it came from.
# ``pursuhint distill --hints FILE`` trains with it again (an exported hint set carries it, under these names).
RECIPE = {"method": "distill.method", "hint_weight_setting": "distill.hint_weight", "hint_ratio": "distill.hint_ratio",
          "kd_weight": "distill.kd_weight", "ce_weight": "distill.ce_weight", "temperature": "distill.temperature",
          "method_params": "distill.params", "lr": "train.lr", "epochs": "train.epochs", "seed": "train.seed"}


def is_paper_mode(algorithm: str, center: str | None, similarity: str | None) -> bool:
    """True iff the choice is exactly the paper's: pursuhint clustering, mean_index centers, a §3 measure."""
    return algorithm == "pursuhint" and center == "mean_index" and similarity in PAPER_SIMILARITIES


@dataclass
class HintSet:
    """Selected hint points of one teacher, sorted by depth, and everything needed to reproduce the choice.

    ``indices`` are 0-based positions in ``candidates``; ``membership[i]`` is the hint (0..n_hints−1)
    whose cluster candidate i belongs to. ``paper_mode`` is derived (see ``is_paper_mode``) when omitted.
    ``provenance`` holds free-form scalar fields filled later (method, hint_weight, sweep, trial_id, …).
    """

    layers: list[str]
    indices: list[int]
    n_hints: int
    candidates: list[str]
    membership: list[int] | None = None
    similarity: str | None = None
    algorithm: str = "pursuhint"
    center: str | None = "mean_index"
    seed: int = 0
    granularity: str = "block"
    teacher_arch: str | None = None
    teacher_sha256: str | None = None
    probe_size: int | None = None
    paper_mode: bool | None = None
    warnings: list[str] = field(default_factory=list)
    score: float | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.paper_mode is None:
            self.paper_mode = is_paper_mode(self.algorithm, self.center, self.similarity)
        _validate(self._fields())

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``schema_version`` first (lists and dicts copied)."""
        d = {"schema_version": SCHEMA_VERSION}
        for k, v in self._fields().items():
            d[k] = list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "HintSet":
        """Rebuild a HintSet from ``to_dict`` output; a HintSetError says what is missing or wrong."""
        if not isinstance(d, dict):
            raise HintSetError(f"a hint set must be a JSON object, got {type(d).__name__}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise HintSetError(f"hint set is missing the required key {missing[0]!r}")
        version = d["schema_version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise HintSetError(f"hint set schema_version must be a positive integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise HintSetError(
                f"hint set schema_version {version} is newer than this pursuhint supports ({SCHEMA_VERSION}); "
                f"upgrade pursuhint"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names and k != "schema_version")
        if unknown:
            raise HintSetError(f"hint set has the unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in d.items() if k != "schema_version"})

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as JSON (YAML when the suffix is .yaml or .yml); never leaves a partial file."""
        path = Path(path)
        _validate(self._fields())
        text = self.to_yaml() if path.suffix.lower() in (".yaml", ".yml") else self.to_json()
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise HintSetError(f"cannot write hint set file {str(path)!r} ({exc.strerror or exc})") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HintSet":
        """Read a file written by ``save``; a HintSetError naming the path if it is missing, not JSON/YAML, or invalid."""
        path = existing_file(path, "hint set", HintSetError)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HintSetError(f"hint set file {str(path)!r} cannot be read ({exc})") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise HintSetError(f"hint set file {str(path)!r} is not valid YAML ({_first_line(exc)})") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HintSetError(f"hint set file {str(path)!r} is not valid JSON ({exc})") from None
        try:
            return cls.from_dict(data)
        except HintSetError as exc:
            raise HintSetError(f"hint set file {str(path)!r}: {exc}") from None

    def to_json(self) -> str:
        """Indented JSON text (what ``save`` writes)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_yaml(self) -> str:
        """The same content as YAML, for configs of other training code."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def positions_1based(self) -> list[int]:
        """The hint points as the paper numbers them (candidate blocks counted from 1)."""
        return [i + 1 for i in self.indices]

    @property
    def recipe(self) -> dict[str, Any]:
        """The training recipe an exported hint set records (its trial's method, weights, lr, epochs, seed), as
        dotted config keys (see ``RECIPE``); empty for a hint set made by ``select``."""
        prov = self.provenance
        # hint sets exported by earlier versions carried the recipe twice, the copy read here prefixed recipe_
        prefix = "recipe_" if any(str(k).startswith("recipe_") for k in prov) else ""
        out: dict[str, Any] = {}
        for name, key in RECIPE.items():
            value = prov.get(prefix + name)
            if value is None or (isinstance(value, float) and value != value):
                continue
            if name == "method_params":
                value = json.loads(value)
            if name == "hint_ratio" and prov.get(prefix + "hint_weight_setting") != "auto":
                continue  # a β given as a number: the ratio played no part
            out[key] = value
        return out

    def check_teacher(self, model_or_sha: nn.Module | str) -> None:
        """Refuse (HintSetError) a teacher whose weights hash differs from ``teacher_sha256``; None passes any."""
        if self.teacher_sha256 is None:
            return
        if isinstance(model_or_sha, nn.Module):
            from ..models.checkpoint import weights_sha256  # the model zoo and torchvision: deferred

            sha = weights_sha256(model_or_sha.state_dict())
        elif isinstance(model_or_sha, str):
            sha = model_or_sha.strip().lower()
        else:
            raise HintSetError(f"check_teacher needs an nn.Module or a sha256 string, got {type(model_or_sha).__name__}")
        if sha != self.teacher_sha256:
            arch = f"teacher {self.teacher_arch}" if self.teacher_arch else "a teacher"
            raise HintSetError(
                f"hint set was made for {arch} sha256 {self.teacher_sha256[:12]}…, "
                f"but this teacher's weights hash to {sha[:12]}…"
            )


def select_hints(
    S: SimilarityMatrix | np.ndarray,
    n_hints: int,
    algorithm: str = "pursuhint",
    center: str = "mean_index",
    seed: int = 0,
    on_collision: str = "error",
    names: list[str] | None = None,
) -> HintSet:
    """Cluster the candidate layers and return the cluster centers as hint points, in depth order.

    When paper-mode centers collide (fewer than ``n_hints`` distinct layers), ``on_collision="error"``
    raises a HintSetError naming the collision; ``"warn"`` returns the fewer hints with the warning in
    ``HintSet.warnings``. Teacher arch/sha256 and probe size are taken from ``S.meta`` when present.
    """
    if on_collision not in ON_COLLISION:
        raise HintSetError(f"on_collision must be one of {', '.join(ON_COLLISION)}, got {on_collision!r}")
    CLUSTERINGS.get(algorithm)
    CENTERS.get(center)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise HintSetError(f"seed must be an integer, got {seed!r}")
    meta: dict = {}
    similarity = None
    if isinstance(S, SimilarityMatrix):
        values, meta, similarity = S.values, S.meta, S.metric
        names = S.names if names is None else names
    else:
        values = S
    values = check_similarity(values, n_hints, what="n_hints")
    names = layer_names(names, len(values))
    result = cluster(values, n_hints, algorithm, center, int(seed))
    if len(result.centers) < n_hints:
        problem = "; ".join(result.warnings) or f"{algorithm} found only {len(result.centers)} distinct centers"
        if on_collision == "error":
            raise HintSetError(
                f"{problem}; ask for fewer than {n_hints} hints, another algorithm, or on_collision='warn'"
            )
    return HintSet(
        layers=[names[c] for c in result.centers],
        indices=list(result.centers),
        n_hints=len(result.centers),
        candidates=list(names),
        membership=list(result.labels),
        similarity=similarity,
        algorithm=algorithm,
        center=center,
        seed=int(seed),
        teacher_arch=meta.get("teacher_arch"),
        teacher_sha256=meta.get("teacher_sha256"),
        probe_size=meta.get("n_samples"),
        warnings=list(result.warnings),
    )


def default_hints(layers: Sequence[CandidateLayer]) -> HintSet:
    """The baseline (§6): the last candidate of each stage, e.g. ResNet-110 blocks 18, 36, 54 (1-based)."""
    layers = list(layers)
    if not layers or not all(isinstance(c, CandidateLayer) for c in layers):
        raise HintSetError("default_hints needs a non-empty list of CandidateLayer (from candidate_layers(model))")
    layers.sort(key=lambda c: c.index)
    stages = sorted({c.stage for c in layers})
    last = {s: max(k for k, c in enumerate(layers) if c.stage == s) for s in stages}
    indices = sorted(last.values())
    stage_rank = {s: k for k, s in enumerate(sorted(stages, key=lambda s: last[s]))}
    return HintSet(
        layers=[layers[k].name for k in indices],
        indices=indices,
        n_hints=len(indices),
        candidates=[c.name for c in layers],
        membership=[stage_rank[c.stage] for c in layers],
        similarity=None,
        algorithm="default",
        center=None,
        paper_mode=False,
    )


def uniform_positions(n_candidates: int, k: int) -> list[int]:
    """K evenly spaced 0-based positions out of L: the middle of each of K equal slices of depth.

    Position i (0..K−1) is floor((2i + 1) · L / (2K)), in exact integer arithmetic. Consecutive positions
    are L/K ≥ 1 apart, so the K positions are distinct, sorted and within 0..L−1 for every 1 <= K <= L;
    K = L gives every candidate. E.g. L = 27 (ResNet-56), K = 3 → 4, 13, 22: the middle block of each stage,
    never the stage ends that the default hints use.
    """
    _check_k(n_candidates, k, "uniform")
    return [(2 * i + 1) * n_candidates // (2 * k) for i in range(k)]


def random_positions(n_candidates: int, k: int, seed: int) -> list[int]:
    """K distinct 0-based positions out of L, sorted, drawn without replacement by ``default_rng(seed)``."""
    _check_k(n_candidates, k, "random")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HintSetError(f"random hints need a non-negative integer seed, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    return sorted(int(i) for i in rng.choice(n_candidates, size=k, replace=False))


def uniform_hints(layers: Sequence[CandidateLayer], k: int) -> HintSet:
    """Baseline: K evenly spaced candidates (see ``uniform_positions``), for comparing at the same K."""
    layers = _sorted_candidates(layers, "uniform_hints")
    return _baseline(layers, uniform_positions(len(layers), k), "uniform", seed=0)


def random_hints(layers: Sequence[CandidateLayer], k: int, seed: int) -> HintSet:
    """Baseline: K distinct candidates drawn with ``seed`` (see ``random_positions``); a new draw per seed."""
    layers = _sorted_candidates(layers, "random_hints")
    return _baseline(layers, random_positions(len(layers), k, seed), "random", seed=int(seed))


def _check_k(n_candidates: int, k: int, kind: str) -> None:
    """Refuse a K that is not an integer in 1..L, naming K and L."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_candidates:
        raise HintSetError(
            f"{kind} hints need K between 1 and L = {n_candidates} candidate layers, got K = {k!r}"
        )


def _sorted_candidates(layers: Sequence[CandidateLayer], caller: str) -> list[CandidateLayer]:
    """The candidates in depth order, or a HintSetError when they are not CandidateLayers."""
    layers = list(layers)
    if not layers or not all(isinstance(c, CandidateLayer) for c in layers):
        raise HintSetError(f"{caller} needs a non-empty list of CandidateLayer (from candidate_layers(model))")
    return sorted(layers, key=lambda c: c.index)


def _baseline(layers: list[CandidateLayer], indices: list[int], algorithm: str, seed: int) -> HintSet:
    """A HintSet for a placement chosen without clustering: no similarity, no center, no membership."""
    return HintSet(
        layers=[layers[i].name for i in indices],
        indices=list(indices),
        n_hints=len(indices),
        candidates=[c.name for c in layers],
        membership=None,
        similarity=None,
        algorithm=algorithm,
        center=None,
        seed=seed,
        paper_mode=False,
    )


# ----------------------------------------------------------------------------------------------
# validation


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # plain ints only, so the JSON always serialises


def _check_type(key: str, value: Any, ok: bool, want: str) -> None:
    if not ok:
        raise HintSetError(f"hint set key {key!r} must be {want}, got {value!r}")


def _validate(d: dict[str, Any]) -> None:
    """Types, ranges and consistency of the HintSet fields; a HintSetError naming the first problem."""
    cands = d["candidates"]
    _check_type("candidates", cands, isinstance(cands, list) and len(cands) > 0 and all(isinstance(c, str) for c in cands),
                "a non-empty list of layer names")
    if len(set(cands)) != len(cands):
        raise HintSetError(f"hint set candidates must be unique, but {next(c for c in cands if cands.count(c) > 1)!r} repeats")
    L = len(cands)
    layers, indices = d["layers"], d["indices"]
    _check_type("layers", layers, isinstance(layers, list) and all(isinstance(s, str) for s in layers), "a list of layer names")
    _check_type("indices", indices, isinstance(indices, list) and all(_is_int(i) for i in indices), "a list of integers")
    _check_type("n_hints", d["n_hints"], _is_int(d["n_hints"]), "an integer")
    if not indices:
        raise HintSetError("hint set has no hint points; it needs at least one index")
    if d["n_hints"] != len(indices) or len(layers) != len(indices):
        raise HintSetError(
            f"hint set n_hints {d['n_hints']} must equal the number of indices ({len(indices)}) and layers ({len(layers)})"
        )
    for i in indices:
        if not 0 <= i < L:
            raise HintSetError(f"hint set index {i} is out of range for its {L} candidates; valid: 0..{L - 1}")
    if any(b <= a for a, b in zip(indices, indices[1:])):
        raise HintSetError(f"hint set indices {list(indices)} must be strictly increasing (sorted by depth)")
    for name, i in zip(layers, indices):
        if cands[i] != name:
            raise HintSetError(f"hint set layer {name!r} does not match candidate {i}, which is {cands[i]!r}")
    member = d["membership"]
    if member is not None:
        _check_type("membership", member, isinstance(member, list) and len(member) == L and all(_is_int(m) for m in member),
                    f"null or a list of {L} integers")
        if any(not 0 <= m < len(indices) for m in member):
            raise HintSetError(f"hint set membership values must lie in 0..{len(indices) - 1}, got {member}")
    for key in ("similarity", "center", "teacher_arch"):
        _check_type(key, d[key], d[key] is None or isinstance(d[key], str), "null or a string")
    for key in ("algorithm", "granularity"):
        _check_type(key, d[key], isinstance(d[key], str) and d[key] != "", "a non-empty string")
    _check_type("seed", d["seed"], _is_int(d["seed"]), "an integer")
    sha = d["teacher_sha256"]
    _check_type("teacher_sha256", sha, sha is None or (isinstance(sha, str) and _SHA256.fullmatch(sha) is not None),
                "null or 64 lowercase hex digits")
    probe = d["probe_size"]
    _check_type("probe_size", probe, probe is None or (_is_int(probe) and probe > 0), "null or a positive integer")
    _check_type("paper_mode", d["paper_mode"], isinstance(d["paper_mode"], bool), "true or false")
    expected = is_paper_mode(d["algorithm"], d["center"], d["similarity"])
    if d["paper_mode"] != expected:
        raise HintSetError(
            f"hint set paper_mode {d['paper_mode']} contradicts algorithm {d['algorithm']!r}, center {d['center']!r} "
            f"and similarity {d['similarity']!r} (paper mode means pursuhint + mean_index + r2_cca/cka_linear/cka_rbf)"
        )
    warns = d["warnings"]
    _check_type("warnings", warns, isinstance(warns, list) and all(isinstance(w, str) for w in warns), "a list of strings")
    score = d["score"]
    _check_type("score", score, score is None or (isinstance(score, (int, float)) and not isinstance(score, bool)
                                                   and math.isfinite(score)), "null or a finite number")
    prov = d["provenance"]
    _check_type("provenance", prov, isinstance(prov, dict), "an object of scalar fields")
    for k, v in prov.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, (str, int, float, bool))):
            raise HintSetError(f"hint set provenance field {k!r} must be a string, number, boolean or null, got {v!r}")
