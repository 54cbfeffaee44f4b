"""Similarity between candidate layers (docs/method.md §3): the ``Measure``s and the L × L matrix.

Every measure works on (N × C) features and centers the columns itself. ``similarity_matrix``
prepares each layer once (centring, Q factors, Grams, norms) and then fills only the upper
triangle, all in float64 on the representations' device.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import PursuhintError
from ..infra.fileio import atomic_write, existing_file
from ..infra.registry import Registry

PairFunction = Callable[..., float]
# (column-centered layers, dead flags, names, **opts) -> (L × L upper triangle, meta, warnings)
MatrixFunction = Callable[..., tuple[Tensor, dict[str, Any], list[str]]]
PAPER_SIMILARITIES = ("r2_cca", "cka_linear", "cka_rbf")
RBF_MAX_SAMPLES = 4000
_FORMAT_VERSION = 1
_GROUP_COLUMNS = 4096  # layers are concatenated into groups of at most this many columns for cross products
_RBF_CHUNK_BYTES = 256 * 2**20  # memory for one row-chunk of all layers' centered RBF Grams


@dataclass(frozen=True)
class Measure:
    """A similarity measure: ``pair(x, y, **opts)`` of two layers' (N × C) features, and optionally ``matrix``, the
    same measure over all L layers at once, which ``similarity_matrix`` then prefers.

    ``matrix(centered, dead, names, **opts)`` gets the column-centered float64 layers, which of them are
    constant, and their names, and returns the L × L upper triangle, meta entries and warnings. A pair function
    registered with ``@SIMILARITIES.register("name")`` becomes a Measure without one.
    """

    pair: PairFunction
    matrix: Optional[MatrixFunction] = None

    def __post_init__(self) -> None:
        if not callable(self.pair) or not (self.matrix is None or callable(self.matrix)):
            raise TypeError(f"a similarity measure needs a pair function (x, y) -> float and optionally a callable "
                            f"whole-matrix form, not {self.pair!r} and {self.matrix!r}")

    @classmethod
    def of(cls, entry: Any) -> "Measure":
        """``entry`` as a Measure: a Measure as it is, a pair function as a Measure without a whole-matrix form."""
        return entry if isinstance(entry, Measure) else cls(entry)

    @staticmethod
    def with_matrix(matrix: MatrixFunction) -> Callable[[PairFunction], "Measure"]:
        """Decorator: the pair function it decorates, with ``matrix`` as its whole-matrix form."""
        return lambda pair: Measure(pair, matrix)

    def __call__(self, x: Tensor | np.ndarray, y: Tensor | np.ndarray, **opts: Any) -> float:
        return self.pair(x, y, **opts)

    def upper_triangle(self, xs: Sequence[Tensor], dead: Sequence[bool], names: list[str],
                       rbf_max_samples: int) -> tuple[Tensor, dict[str, Any], list[str]]:
        """The measure between every two of the float64 layers ``xs`` above the diagonal (0 beside a dead layer),
        with meta entries and warnings: by ``matrix`` on the centered layers, else by ``pair`` on each pair."""
        if self.matrix is not None:
            return self.matrix([_center(x) for x in xs], dead, names, rbf_max_samples=rbf_max_samples)
        values = torch.zeros(len(xs), len(xs), dtype=torch.float64)
        for i in range(len(xs)):
            for j in range(i + 1, len(xs)):
                if not (dead[i] or dead[j]):
                    values[i, j] = float(self.pair(xs[i], xs[j]))
        return values, {}, []


SIMILARITIES: Registry[Measure] = Registry("similarity", error=PursuhintError, convert=Measure.of)


@dataclass
class SimilarityMatrix:
    """L × L similarities between candidate layers for one measure (symmetric, unit diagonal).

    ``meta`` holds at least ``n_samples`` and ``warnings``; for ``cka_rbf`` also
    ``rbf_subsampled_to`` (None when all N rows were used). Callers may add provenance such as
    ``teacher_arch``, ``teacher_sha256`` or the probe set; it must stay JSON-serialisable.
    """

    values: np.ndarray
    metric: str
    names: list[str]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.array(self.values, dtype=np.float64)
        v = self.values
        if v.ndim != 2 or v.shape[0] != v.shape[1] or v.shape[0] == 0:
            raise PursuhintError(f"a similarity matrix must be square and non-empty, got shape {v.shape}")
        self.names = layer_names(self.names, v.shape[0])

    def __len__(self) -> int:
        return self.values.shape[0]

    def distance(self) -> np.ndarray:
        """The matching distance matrix, 1 − similarity."""
        return 1.0 - self.values

    def save(self, path: str | os.PathLike) -> None:
        """Write one .npz file (values + a JSON header), atomically and without pickle."""
        path = Path(path)
        header = {"format_version": _FORMAT_VERSION, "metric": self.metric, "names": self.names, "meta": self.meta}
        try:
            header_text = json.dumps(header, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PursuhintError(f"similarity matrix meta for {path} is not JSON-serialisable ({exc})") from None
        with atomic_write(path, binary=True) as f:
            np.savez(f, values=self.values, header=np.array(header_text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SimilarityMatrix":
        """Read a file written by ``save``; a PursuhintError naming the path if it is missing or malformed."""
        path = existing_file(path, "similarity matrix", PursuhintError)
        try:
            with np.load(path, allow_pickle=False) as data:
                values = np.array(data["values"], dtype=np.float64)
                header = json.loads(str(data["header"]))
            version = header["format_version"]
            metric, names, meta = header["metric"], list(header["names"]), dict(header["meta"])
        except Exception as exc:  # noqa: BLE001 - any decoding failure means the file is not ours
            raise PursuhintError(f"similarity matrix file {str(path)!r} is not a valid pursuhint .npz ({exc})") from None
        if not isinstance(version, int) or version > _FORMAT_VERSION:
            raise PursuhintError(
                f"similarity matrix file {str(path)!r} has format_version {version!r}, "
                f"newer than this pursuhint supports ({_FORMAT_VERSION}); upgrade pursuhint"
            )
        return cls(values=values, metric=metric, names=names, meta=meta)


# ----------------------------------------------------------------------------------------------
# the matrix


def similarity_matrix(
    reps: Sequence[Tensor | np.ndarray],
    metric: str,
    names: list[str] | None = None,
    rbf_max_samples: int = RBF_MAX_SAMPLES,
    device: torch.device | str | None = None,
) -> SimilarityMatrix:
    """The L × L matrix of ``metric`` between the (N × C_i) representations ``reps``.

    Computed in float64 on ``device`` (default: the device of the first torch tensor, else CPU).
    A constant layer gets similarity 0 with every other layer, 1 with itself, and a warning in meta.
    """
    measure = SIMILARITIES.get(metric)
    xs, n = _as_float64(reps, device)
    names = layer_names(names, len(xs))
    constant = [bool((x.amax(0) == x.amin(0)).all()) for x in xs]
    warnings = [
        f"layer {names[i]!r} is constant over the probe set; its similarity to every other layer is set to 0"
        for i, c in enumerate(constant)
        if c
    ]
    meta: dict[str, Any] = {"n_samples": n}
    values, extra, more = measure.upper_triangle(xs, constant, names, rbf_max_samples)
    meta.update(extra)
    meta["warnings"] = warnings + more
    return SimilarityMatrix(_finish(values, constant), metric, names, meta)


def _finish(values: Tensor, dead: Sequence[bool]) -> np.ndarray:
    """Upper triangle → symmetric numpy matrix with exact unit diagonal, dead layers 0, clipped to [−1, 1]."""
    v = torch.triu(values.detach().to("cpu", torch.float64), diagonal=1)
    for i, d in enumerate(dead):
        if d:
            v[i, :] = 0.0
            v[:, i] = 0.0
    v = v + v.T
    v.fill_diagonal_(1.0)
    out = v.clamp_(-1.0, 1.0).numpy()
    if not np.isfinite(out).all():  # a measure produced NaN: report it instead of clustering garbage
        raise PursuhintError("the similarity measure produced non-finite values; check the representations")
    return out


def _as_float64(reps: Sequence[Tensor | np.ndarray], device: torch.device | str | None) -> tuple[list[Tensor], int]:
    """Validate ``reps`` (L ≥ 1, each N × C, same N ≥ 2, finite) and move them to float64 on one device."""
    if isinstance(reps, (Tensor, np.ndarray)) or not isinstance(reps, Sequence) or len(reps) == 0:
        raise PursuhintError("reps must be a non-empty list of (N × C) tensors or arrays, one per candidate layer")
    if device is None:
        device = next((r.device for r in reps if isinstance(r, Tensor)), torch.device("cpu"))
    out = []
    for i, r in enumerate(reps):
        if isinstance(r, np.ndarray):
            if not (np.issubdtype(r.dtype, np.number) or r.dtype == np.bool_):
                raise PursuhintError(f"representation {i} has dtype {r.dtype}; expected numbers")
            r = torch.from_numpy(np.ascontiguousarray(r))
        elif not isinstance(r, Tensor):
            raise PursuhintError(f"representation {i} is a {type(r).__name__}; expected a torch tensor or numpy array")
        if r.ndim != 2 or r.shape[1] == 0:
            raise PursuhintError(f"representation {i} has shape {tuple(r.shape)}; expected (N samples × C channels)")
        if r.is_complex():
            raise PursuhintError(f"representation {i} is complex; expected real features")
        out.append(r.detach().to(device=device, dtype=torch.float64))
    sizes = sorted({x.shape[0] for x in out})
    if len(sizes) > 1:
        raise PursuhintError(f"representations have different numbers of samples {sizes}; all layers need the same N")
    n = sizes[0]
    if n < 2:
        raise PursuhintError(f"representations have {n} sample; at least 2 are needed")
    for i, x in enumerate(out):
        if not bool(torch.isfinite(x).all()):
            raise PursuhintError(f"representation {i} contains NaN or infinite values")
    return out, n


def layer_names(names: Sequence[str] | None, n_layers: int) -> list[str]:
    """``names`` as a list of L unique strings; default '0', '1', … (0-based positions)."""
    if names is None:
        return [str(i) for i in range(n_layers)]
    names = list(names)
    if len(names) != n_layers or not all(isinstance(s, str) for s in names):
        raise PursuhintError(f"names must be {n_layers} strings, one per layer, got {names!r}")
    if len(set(names)) != len(names):
        dup = next(s for s in names if names.count(s) > 1)
        raise PursuhintError(f"layer name {dup!r} appears twice; names must be unique")
    return names


def _center(x: Tensor) -> Tensor:
    """Column-centered copy of ``x``; columns that are exactly constant become exact zeros."""
    xc = x - x.mean(0, keepdim=True)
    const = x.amax(0) == x.amin(0)
    if bool(const.any()):
        xc[:, const] = 0.0
    return xc


def _live(dead: Sequence[bool]) -> list[int]:
    return [i for i, d in enumerate(dead) if not d]


def _cross(mats: Sequence[Tensor | None], reduce: Callable[[int, int, Tensor], Tensor]) -> Tensor:
    """out[i, j] = reduce(i, j, mats[i]ᵀ mats[j]) for i ≤ j over the non-None mats.

    Layers are concatenated into column groups so each group pair is one matmul (O(L) big products
    instead of L²/2 small ones) while memory stays bounded by _GROUP_COLUMNS².
    """
    live = [i for i, m in enumerate(mats) if m is not None]
    ref = mats[live[0]] if live else None
    out = torch.zeros(len(mats), len(mats), dtype=torch.float64, device=ref.device if ref is not None else "cpu")
    groups: list[list[int]] = []
    for i in live:
        if groups and sum(mats[k].shape[1] for k in groups[-1]) + mats[i].shape[1] <= _GROUP_COLUMNS:
            groups[-1].append(i)
        else:
            groups.append([i])
    cats = [torch.cat([mats[i] for i in g], dim=1) for g in groups]
    offsets = {}
    for g in groups:
        start = 0
        for i in g:
            offsets[i] = (start, start + mats[i].shape[1])
            start += mats[i].shape[1]
    for a, ga in enumerate(groups):
        for b in range(a, len(groups)):
            z = cats[a].T @ cats[b]
            for i in ga:
                for j in groups[b]:
                    if j >= i:
                        (r0, r1), (c0, c1) = offsets[i], offsets[j]
                        out[i, j] = reduce(i, j, z[r0:r1, c0:c1])
    return out


def _normalise(g: Tensor) -> Tensor:
    """g[i, j] / sqrt(g[i, i] g[j, j]) (0 where a diagonal entry is not positive)."""
    d = torch.diagonal(g).clone()
    ok = d > 0
    s = torch.where(ok, d, torch.ones_like(d)).sqrt()
    out = g / (s[:, None] * s[None, :])
    return out * (ok[:, None] & ok[None, :])


# ----------------------------------------------------------------------------------------------
# batched implementations: (centered layers, dead flags, names, **opts) -> (upper triangle, meta, warnings)


def _cka_linear_matrix(xs, dead, names, **_):
    mats = [None if d else x for x, d in zip(xs, dead)]
    sq = _cross(mats, lambda i, j, z: (z * z).sum())  # ‖X_jᵀ X_i‖²_F; diagonal ‖X_iᵀ X_i‖²_F
    return _normalise(sq), {}, []


def _cka_linear_debiased_matrix(xs, dead, names, **_):
    n = xs[0].shape[0]
    if n < 4:
        raise PursuhintError(f"cka_linear_debiased needs at least 4 samples, got {n}")
    mats = [None if d else x for x, d in zip(xs, dead)]
    sq = _cross(mats, lambda i, j, z: (z * z).sum())
    a = torch.stack([(x * x).sum(1) for x in xs])  # L × N squared row norms = diagonals of the Grams
    ab = a @ a.T
    s = a.sum(1)
    hsic = sq - ab + s[:, None] * s[None, :] / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)
    warnings = []
    for i in _live(dead):
        if not bool(hsic[i, i] > 0):
            warnings.append(
                f"layer {names[i]!r} has a non-positive unbiased HSIC with itself; its similarities are set to 0"
            )
    return _normalise(hsic), {}, warnings


def _r2_cca_matrix(xs, dead, names, **_):
    bases: list[Tensor | None] = []
    ranks: list[int] = []
    warnings = []
    for i, (x, d) in enumerate(zip(xs, dead)):
        if d:
            bases.append(None)
            ranks.append(0)
            continue
        q, rank = _orthonormal_basis(x)
        if rank < x.shape[1]:
            warnings.append(
                f"r2_cca: layer {names[i]!r} has rank {rank} < {x.shape[1]} channels after centring; "
                f"its CCA uses the rank"
            )
        bases.append(q)
        ranks.append(rank)
    sq = _cross(bases, lambda i, j, z: (z * z).sum() / min(ranks[i], ranks[j]))
    return sq, {}, warnings


def _orthonormal_basis(x: Tensor) -> tuple[Tensor, int]:
    """Thin-QR Q of centered ``x`` and its numerical rank; rank-deficient → orthonormal basis of the column space.

    Rank = number of singular values of R above s_max · max(N, C) · eps (numpy's matrix_rank rule).
    """
    q, r = torch.linalg.qr(x, mode="reduced")
    u, s, _ = torch.linalg.svd(r, full_matrices=False)
    tol = s.max() * max(x.shape) * torch.finfo(torch.float64).eps
    rank = int((s > tol).sum())
    if rank == x.shape[1]:
        return q, rank
    return q @ u[:, :rank], rank


def _procrustes_matrix(xs, dead, names, **_):
    mats = [None if d else x / torch.linalg.matrix_norm(x) for x, d in zip(xs, dead)]
    nuc = _cross(mats, lambda i, j, z: torch.linalg.svdvals(z).sum())
    return nuc, {}, []


def _cka_rbf_matrix(xs, dead, names, rbf_max_samples: int = RBF_MAX_SAMPLES, **_):
    if isinstance(rbf_max_samples, bool) or not isinstance(rbf_max_samples, int) or rbf_max_samples < 2:
        raise PursuhintError(f"rbf_max_samples must be an integer ≥ 2, got {rbf_max_samples!r}")
    n = xs[0].shape[0]
    meta: dict[str, Any] = {"rbf_subsampled_to": None}
    if n > rbf_max_samples:
        idx = torch.arange(rbf_max_samples, device=xs[0].device) * n // rbf_max_samples  # evenly spaced rows
        xs = [x[idx] for x in xs]
        n = rbf_max_samples
        meta["rbf_subsampled_to"] = n
    live = _live(dead)
    warnings = []
    prep: dict[int, tuple[Tensor, Tensor, float, Tensor]] = {}
    for i in live:  # pass 1, per layer: σ² from the median squared distance, row means of the Gram
        x = xs[i]
        sq = (x * x).sum(1)
        d2 = _sq_dists(x, sq, 0, n)
        sigma2 = _median(d2)
        if sigma2 <= 0.0:
            sigma2 = float(d2[d2 > 0].mean())
            warnings.append(
                f"cka_rbf: more than half the sample pairs of layer {names[i]!r} coincide; σ² uses the mean "
                f"non-zero squared distance instead of the median"
            )
        rows = d2.mul_(-0.5 / sigma2).exp_().mean(1)  # the Gram K, in place of d2
        # K̃ = K − r_i − r_j + mean(r) = K − u_i − u_j with u = r − mean(r)/2 (K is symmetric)
        prep[i] = (x, sq, sigma2, rows - rows.mean() / 2.0)
        del d2
    g = torch.zeros(len(xs), len(xs), dtype=torch.float64, device=xs[0].device)
    if live:  # pass 2: ⟨K̃_i, K̃_j⟩ accumulated over row chunks of all centered Grams at once
        chunk = max(1, min(n, _RBF_CHUNK_BYTES // (8 * n * len(live))))
        acc = torch.zeros(len(live), len(live), dtype=torch.float64, device=xs[0].device)
        buf = torch.empty(len(live), chunk * n, dtype=torch.float64, device=xs[0].device)
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            a = buf[:, : (r1 - r0) * n]
            for row, i in enumerate(live):
                x, sq, sigma2, u = prep[i]
                k = _sq_dists(x, sq, r0, r1, out=buf[row, : (r1 - r0) * n].view(r1 - r0, n))
                k.mul_(-0.5 / sigma2).exp_().sub_(u[r0:r1, None]).sub_(u[None, :])
            acc += a @ a.T
        idx = torch.tensor(live, device=g.device)
        g[idx[:, None], idx[None, :]] = acc
    return _normalise(g), meta, warnings


def _sq_dists(x: Tensor, sq: Tensor, r0: int, r1: int, out: Tensor | None = None) -> Tensor:
    """Squared Euclidean distances from rows r0:r1 of ``x`` to all rows, ≥ 0, with an exact zero diagonal.

    Written into ``out`` ((r1 − r0) × N, float64) when given: one BLAS call adds ‖x_j‖² − 2 x_i·x_j.
    """
    d2 = torch.addmm(sq[None, :], x[r0:r1], x.T, alpha=-2.0, out=out)
    d2.add_(sq[r0:r1, None]).clamp_(min=0.0)
    rows = torch.arange(r1 - r0, device=x.device)
    d2[rows, rows + r0] = 0.0
    return d2


_MEDIAN_SAMPLE = 1 << 16  # below this many entries the median is one partition; above, a bracket first


def _median(t: Tensor) -> float:
    """numpy's median of all entries (mean of the two middle values when the count is even), exactly.

    Large inputs: a fixed random sample brackets the two middle order statistics, one pass counts the
    entries below the bracket and gathers those inside it, and only that small set is partitioned.
    If the bracket misses (it cannot silently be wrong: the counts are checked), the whole input is.
    """
    flat = t.reshape(-1)
    m = flat.numel()
    ks = ((m - 1) // 2, m // 2)  # 0-based positions of the two middle values
    if m > _MEDIAN_SAMPLE:
        gen = torch.Generator(device=flat.device).manual_seed(0)
        picks = torch.randint(m, (_MEDIAN_SAMPLE,), generator=gen, device=flat.device)
        sample = flat[picks].sort().values
        slack = 4 * int(_MEDIAN_SAMPLE**0.5)  # ~8 standard deviations of the sample rank
        lo = sample[max(0, _MEDIAN_SAMPLE // 2 - slack)]
        hi = sample[min(_MEDIAN_SAMPLE - 1, _MEDIAN_SAMPLE // 2 + slack)]
        if flat.device.type == "cpu":  # numpy's comparisons and counts are several times faster here
            a = flat.numpy()
            keep = a >= lo.item()
            below = m - int(np.count_nonzero(keep))
            keep &= a <= hi.item()
            inside = torch.from_numpy(a[keep])
        else:
            keep = flat >= lo
            below = m - int(keep.sum())
            inside = flat[keep & (flat <= hi)]
        if below <= ks[0] and below + inside.numel() > ks[1]:
            return _middle(inside, (ks[0] - below, ks[1] - below))
    return _middle(flat, ks)


def _middle(flat: Tensor, ks: tuple[int, int]) -> float:
    """Mean of the order statistics at 0-based positions ``ks`` of a 1-D tensor."""
    if flat.device.type == "cpu":  # one partition pass finds both
        part = np.partition(flat.numpy(), list(ks))
        return float((part[ks[0]] + part[ks[1]]) / 2.0)
    lo = flat.kthvalue(ks[0] + 1).values
    hi = flat.kthvalue(ks[1] + 1).values if ks[1] != ks[0] else lo
    return float((lo + hi) / 2.0)


# ----------------------------------------------------------------------------------------------
# the registered measures: each pair function is its batched implementation on two layers


def _pair(metric: str, x: Tensor | np.ndarray, y: Tensor | np.ndarray, **opts: Any) -> float:
    return float(similarity_matrix([x, y], metric, **opts).values[0, 1])


@SIMILARITIES.register("r2_cca")
@Measure.with_matrix(_r2_cca_matrix)
def r2_cca(x: Tensor | np.ndarray, y: Tensor | np.ndarray, **opts: Any) -> float:
    """Mean squared canonical correlation (paper): ‖Q_Xᵀ Q_Y‖²_F / min(C_X, C_Y), Q from a thin QR of centered X, Y.

    Rank-deficient layers (e.g. dead channels, or N ≤ C) use an orthonormal basis of their column
    space instead of Q and divide by min(rank_X, rank_Y); rank uses numpy's matrix_rank tolerance
    (singular values of R above s_max · max(N, C) · eps64). Exactly constant channels are dropped.
    """
    return _pair("r2_cca", x, y, **opts)


@SIMILARITIES.register("cka_linear")
@Measure.with_matrix(_cka_linear_matrix)
def cka_linear(x: Tensor | np.ndarray, y: Tensor | np.ndarray, **opts: Any) -> float:
    """Linear CKA (paper): ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centered features; never forms an N × N Gram."""
    return _pair("cka_linear", x, y, **opts)


@SIMILARITIES.register("cka_rbf")
@Measure.with_matrix(_cka_rbf_matrix)
def cka_rbf(x: Tensor | np.ndarray, y: Tensor | np.ndarray, **opts: Any) -> float:
    """RBF CKA (paper): K_ij = exp(−d²_ij / 2σ²), σ² = median of all N² squared distances (θ = 1), centered Grams.

    CKA = ⟨K̃_X, K̃_Y⟩_F / (‖K̃_X‖_F ‖K̃_Y‖_F). Above ``rbf_max_samples`` rows (default 4000) the evenly
    spaced rows ⌊k·N/m⌋, k = 0…m−1, are used, recorded as ``rbf_subsampled_to`` in the matrix meta.
    """
    return _pair("cka_rbf", x, y, **opts)


@SIMILARITIES.register("cka_linear_debiased")
@Measure.with_matrix(_cka_linear_debiased_matrix)
def cka_linear_debiased(x: Tensor | np.ndarray, y: Tensor | np.ndarray, **opts: Any) -> float:
    """Extension: linear CKA from the unbiased HSIC estimator (Song et al. 2012), in feature space.

    With centered X and a_i = ‖x_i‖²: HSIC₁ ∝ ‖YᵀX‖²_F − aᵀb + (Σa)(Σb)/((n−1)(n−2)) − 2aᵀb/(n−2), which is
    the estimator on Grams with zeroed diagonals; CKA = HSIC₁(X,Y)/√(HSIC₁(X,X) HSIC₁(Y,Y)). Needs N ≥ 4;
    unlike the other measures it can be slightly negative.
    """
    return _pair("cka_linear_debiased", x, y, **opts)


@SIMILARITIES.register("procrustes")
@Measure.with_matrix(_procrustes_matrix)
def procrustes(x: Tensor | np.ndarray, y: Tensor | np.ndarray, **opts: Any) -> float:
    """Extension: 1 − half the squared orthogonal Procrustes distance, which equals ‖XᵀY‖_* (nuclear norm).

    X, Y are centered and scaled to unit Frobenius norm; then min over orthogonal Q of ‖X − YQ‖²_F is
    d² = 2 − 2‖XᵀY‖_* (the narrower side padded with zero columns), and the similarity 1 − d²/2 ∈ [0, 1].
    """
    return _pair("procrustes", x, y, **opts)
