"""Similarity measures against known answers and naive reference implementations (float64, small)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes

from pursuhint.errors import PursuhintError
from pursuhint.hints import similarity as sim
from pursuhint.hints.similarity import SIMILARITIES, Measure, SimilarityMatrix, similarity_matrix

ALL = ["r2_cca", "cka_linear", "cka_rbf", "cka_linear_debiased", "procrustes"]


def rand(n: int, c: int, seed: int) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal(c: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(rand(c, c, seed))
    return q


def measure(name: str):
    return SIMILARITIES.get(name)


# ---------------------------------------------------------------- naive references (numpy, N × N Grams)


def centered_gram(k: np.ndarray) -> np.ndarray:
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ k @ h


def naive_cka(kx: np.ndarray, ky: np.ndarray) -> float:
    a, b = centered_gram(kx), centered_gram(ky)
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def naive_rbf_gram(x: np.ndarray) -> np.ndarray:
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return np.exp(-d2 / (2.0 * np.median(d2)))


def naive_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, written out literally."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return float(
        (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ kt @ lt @ one))
        / (n * (n - 3))
    )


def naive_mean_sq_cca(x: np.ndarray, y: np.ndarray) -> float:
    """Canonical correlations as singular values of Σxx^-1/2 Σxy Σyy^-1/2."""
    x, y = x - x.mean(0), y - y.mean(0)

    def inv_sqrt(m):
        w, v = np.linalg.eigh(m)
        return v @ np.diag(w ** -0.5) @ v.T

    rho = np.linalg.svd(inv_sqrt(x.T @ x) @ x.T @ y @ inv_sqrt(y.T @ y), compute_uv=False)
    return float(np.sum(rho ** 2) / min(x.shape[1], y.shape[1]))


# ---------------------------------------------------------------- invariances and known answers


@pytest.mark.parametrize("name", ALL)
def test_orthogonal_transform_scaling_and_shift_give_one(name):
    x = rand(200, 8, 0)
    assert measure(name)(x, x @ orthogonal(8, 1)) == pytest.approx(1.0, abs=1e-10)
    assert measure(name)(x, 3.7 * x + 5.0) == pytest.approx(1.0, abs=1e-10)


def test_r2_cca_is_one_for_any_invertible_map_but_cka_is_not():
    x = rand(300, 6, 2)
    a = rand(6, 6, 3) + 3 * torch.eye(6, dtype=torch.float64)
    assert measure("r2_cca")(x, x @ a) == pytest.approx(1.0, abs=1e-10)
    assert measure("cka_linear")(x, x @ a) < 0.99


@pytest.mark.parametrize("name", ALL)
def test_independent_noise_is_dissimilar(name):
    x, y = rand(3000, 4, 4), rand(3000, 6, 5)
    assert 0.0 - 0.01 < measure(name)(x, y) < 0.1


def test_cka_linear_equals_gram_form():
    x, y = rand(40, 5, 6), rand(40, 9, 7) + 2.0
    xn, yn = x.numpy(), y.numpy()
    assert measure("cka_linear")(x, y) == pytest.approx(naive_cka(xn @ xn.T, yn @ yn.T), abs=1e-12)


def test_cka_rbf_matches_naive_implementation():
    x = rand(30, 4, 8)
    y = torch.tanh(x @ rand(4, 3, 9)) + 0.3 * rand(30, 3, 10)
    want = naive_cka(naive_rbf_gram(x.numpy()), naive_rbf_gram(y.numpy()))
    assert measure("cka_rbf")(x, y) == pytest.approx(want, abs=1e-12)
    assert 0.3 < want < 0.99  # a non-trivial case


def test_cka_rbf_chunked_accumulation_matches(monkeypatch):
    reps = [rand(31, 3, 11), rand(31, 5, 12), torch.sin(rand(31, 2, 13))]
    whole = similarity_matrix(reps, "cka_rbf").values
    monkeypatch.setattr(sim, "_RBF_CHUNK_BYTES", 8 * 31 * 3 * 4)  # four rows per chunk
    chunked = similarity_matrix(reps, "cka_rbf").values
    np.testing.assert_allclose(chunked, whole, atol=1e-13)
    assert whole[0, 1] == pytest.approx(naive_cka(naive_rbf_gram(reps[0].numpy()), naive_rbf_gram(reps[1].numpy())), abs=1e-12)


def test_debiased_cka_matches_naive_unbiased_hsic():
    x = rand(25, 4, 14) + 1.5  # uncentered on purpose: the estimator is translation invariant
    y = x[:, :3] ** 2 + rand(25, 3, 15)
    xn, yn = x.numpy(), y.numpy()
    kx, ky = xn @ xn.T, yn @ yn.T
    want = naive_unbiased_hsic(kx, ky) / np.sqrt(naive_unbiased_hsic(kx, kx) * naive_unbiased_hsic(ky, ky))
    assert measure("cka_linear_debiased")(x, y) == pytest.approx(want, abs=1e-12)


def test_debiased_needs_four_samples():
    with pytest.raises(PursuhintError, match="at least 4 samples"):
        measure("cka_linear_debiased")(rand(3, 2, 0), rand(3, 2, 1))


def test_r2_cca_matches_canonical_correlations():
    x = rand(100, 3, 16)
    y = x @ rand(3, 5, 17) + rand(100, 5, 18)
    assert measure("r2_cca")(x, y) == pytest.approx(naive_mean_sq_cca(x.numpy(), y.numpy()), abs=1e-12)


def test_r2_cca_rank_deficient_layer_uses_its_rank():
    x = rand(100, 4, 19)
    dead = torch.cat([x, torch.zeros(100, 1, dtype=torch.float64), x[:, :1] + x[:, 1:2]], dim=1)  # rank 4 of 6
    m = similarity_matrix([x, dead], "r2_cca", names=["a", "b"])
    assert m.values[0, 1] == pytest.approx(1.0, abs=1e-10)
    assert any("'b' has rank 4 < 6" in w for w in m.meta["warnings"])


def test_procrustes_is_nuclear_norm_and_matches_procrustes_distance():
    x, y = rand(50, 4, 20), rand(50, 4, 21) + 0.5 * rand(50, 4, 20)
    got = measure("procrustes")(x, y)
    xc, yc = x.numpy() - x.numpy().mean(0), y.numpy() - y.numpy().mean(0)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    r, _ = orthogonal_procrustes(yc, xc)
    d2 = np.sum((xc - yc @ r) ** 2)
    assert got == pytest.approx(1.0 - d2 / 2.0, abs=1e-12)
    assert measure("procrustes")(x @ orthogonal(4, 22), y @ orthogonal(4, 23)) == pytest.approx(got, abs=1e-12)


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize("name", ALL)
def test_matrix_is_symmetric_unit_diagonal_and_equals_pairs(name, monkeypatch):
    monkeypatch.setattr(sim, "_GROUP_COLUMNS", 7)  # several column groups, so cross-group blocks are exercised
    reps = [rand(60, c, 30 + c) for c in (3, 4, 5)]
    reps.append(reps[0] @ rand(3, 3, 40) + 0.1 * rand(60, 3, 41))
    m = similarity_matrix(reps, name, names=["a", "b", "c", "d"])
    v = m.values
    assert v.dtype == np.float64 and v.shape == (4, 4)
    assert np.array_equal(v, v.T)
    assert np.all(np.diag(v) == 1.0)
    for i in range(4):
        for j in range(i + 1, 4):
            assert v[i, j] == pytest.approx(measure(name)(reps[i], reps[j]), abs=1e-12)
    assert m.metric == name and m.names == ["a", "b", "c", "d"] and m.meta["n_samples"] == 60
    np.testing.assert_array_equal(m.distance(), 1.0 - v)


@pytest.mark.parametrize("name", ALL)
def test_constant_layer_gets_zero_and_a_warning(name):
    reps = [rand(20, 3, 50), torch.full((20, 4), 2.5, dtype=torch.float64), rand(20, 2, 51)]
    m = similarity_matrix(reps, name, names=["x", "const", "y"])
    assert np.isfinite(m.values).all()
    assert m.values[1, 1] == 1.0
    assert m.values[0, 1] == m.values[1, 2] == 0.0
    assert any("'const' is constant" in w for w in m.meta["warnings"])


def test_constant_channels_inside_a_layer_do_not_change_linear_cka():
    x, y = rand(40, 3, 52), rand(40, 3, 53)
    padded = torch.cat([x, torch.full((40, 2), 7.0, dtype=torch.float64)], dim=1)
    assert measure("cka_linear")(padded, y) == pytest.approx(measure("cka_linear")(x, y), abs=1e-14)


def test_rbf_subsampling_is_evenly_spaced_and_recorded():
    x, y = rand(50, 3, 60), torch.relu(rand(50, 4, 61))
    m = similarity_matrix([x, y], "cka_rbf", rbf_max_samples=20)
    assert m.meta["rbf_subsampled_to"] == 20
    rows = [k * 50 // 20 for k in range(20)]
    want = naive_cka(naive_rbf_gram(x.numpy()[rows]), naive_rbf_gram(y.numpy()[rows]))
    assert m.values[0, 1] == pytest.approx(want, abs=1e-12)
    assert similarity_matrix([x, y], "cka_rbf").meta["rbf_subsampled_to"] is None


def test_numpy_and_float32_inputs_agree_with_float64():
    x, y = rand(80, 4, 62), rand(80, 3, 63) + rand(80, 4, 62)[:, :3]
    ref = similarity_matrix([x, y], "cka_linear").values
    from_numpy = similarity_matrix([x.numpy().astype(np.float32), y.numpy().astype(np.float32)], "cka_linear").values
    np.testing.assert_allclose(from_numpy, ref, atol=1e-6)


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(PursuhintError, match="unknown similarity 'cka'.*valid: r2_cca, cka_linear, cka_rbf"):
        similarity_matrix([rand(5, 2, 0)], "cka")
    with pytest.raises(PursuhintError, match=r"different numbers of samples \[5, 6\]"):
        similarity_matrix([rand(5, 2, 0), rand(6, 2, 0)], "cka_linear")
    bad = rand(5, 2, 0)
    bad[1, 1] = float("nan")
    with pytest.raises(PursuhintError, match="representation 1 contains NaN"):
        similarity_matrix([rand(5, 2, 0), bad], "cka_linear")
    with pytest.raises(PursuhintError, match=r"shape \(5, 2, 3\)"):
        similarity_matrix([torch.zeros(5, 2, 3)], "cka_linear")
    with pytest.raises(PursuhintError, match="non-empty list"):
        similarity_matrix([], "cka_linear")
    with pytest.raises(PursuhintError, match="names must be 2 strings"):
        similarity_matrix([rand(5, 2, 0), rand(5, 2, 1)], "cka_linear", names=["a"])


def test_single_layer_matrix_is_one():
    m = similarity_matrix([rand(10, 3, 0)], "r2_cca")
    assert m.values.tolist() == [[1.0]] and m.names == ["0"]


def test_user_registered_pair_function_is_used_for_the_upper_triangle():
    calls = []

    def first_column_corr(x, y, **_):
        calls.append(1)
        return float(np.corrcoef(x[:, 0].numpy(), y[:, 0].numpy())[0, 1])

    SIMILARITIES.register("test_first_column_corr", first_column_corr)
    try:
        x = rand(30, 2, 70)
        m = similarity_matrix([x, -x, rand(30, 2, 71)], "test_first_column_corr")
    finally:
        SIMILARITIES._items.pop("test_first_column_corr")
    assert len(calls) == 3
    assert m.values[0, 1] == pytest.approx(-1.0) and m.values[1, 0] == pytest.approx(-1.0)


def test_a_decorated_pair_function_becomes_a_measure_and_stays_a_function():
    @SIMILARITIES.register("test_abs_first_column")
    def abs_first(x, y):
        return abs(float(np.corrcoef(x[:, 0], y[:, 0])[0, 1]))

    try:
        entry = SIMILARITIES.get("test_abs_first_column")
    finally:
        SIMILARITIES._items.pop("test_abs_first_column")
    assert isinstance(entry, Measure) and entry.pair is abs_first and entry.matrix is None
    x = rand(30, 2, 72)
    assert abs_first(x.numpy(), -x.numpy()) == pytest.approx(1.0) and entry(x.numpy(), -x.numpy()) == abs_first(
        x.numpy(), -x.numpy())


def test_a_measure_with_a_whole_matrix_form_uses_it_on_the_centered_layers():
    seen = []

    def pair(x, y):
        raise AssertionError("the whole-matrix form is preferred")

    def matrix(centered, dead, names, **opts):
        seen.append(([c.mean(0).abs().max().item() for c in centered], list(dead), names, opts))
        return torch.full((len(centered), len(centered)), 0.25, dtype=torch.float64), {"mine": 1}, ["note"]

    SIMILARITIES.register("test_quarter", Measure(pair, matrix))
    try:
        m = similarity_matrix([rand(10, 2, 73) + 5.0, torch.ones(10, 3)], "test_quarter", names=["a", "b"])
    finally:
        SIMILARITIES._items.pop("test_quarter")
    (means, dead, names, opts), = seen
    assert max(means) < 1e-12 and dead == [False, True] and names == ["a", "b"] and opts == {"rbf_max_samples": 4000}
    assert m.values.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # the constant layer's similarity is 0
    assert m.meta["mine"] == 1 and m.meta["warnings"][-1] == "note" and "constant" in m.meta["warnings"][0]


def test_the_built_in_measures_carry_their_whole_matrix_form():
    x, y = rand(40, 3, 74), rand(40, 5, 75)
    for name in ALL:
        entry = SIMILARITIES.get(name)
        assert isinstance(entry, Measure) and entry.matrix is not None and getattr(sim, name) is entry
        assert entry(x, y) == entry.pair(x, y) == similarity_matrix([x, y], name).values[0, 1]
    with pytest.raises(TypeError, match="needs a pair function"):
        SIMILARITIES.register("test_not_callable", 0.5)
    assert "test_not_callable" not in SIMILARITIES


def test_save_load_round_trip_without_pickle(tmp_path):
    m = similarity_matrix([rand(20, 3, 80), rand(20, 2, 81)], "cka_rbf", names=["layer1.0", "layer2.0"])
    m.meta["teacher_sha256"] = "ab" * 32
    path = tmp_path / "sub" / "sim.npz"
    m.save(path)
    back = SimilarityMatrix.load(path)
    assert np.array_equal(back.values, m.values)
    assert (back.metric, back.names, back.meta) == (m.metric, m.names, m.meta)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"values", "header"}
    assert [p.name for p in path.parent.iterdir()] == ["sim.npz"]  # no temp file left behind


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(PursuhintError, match="nope.npz' does not exist"):
        SimilarityMatrix.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(PursuhintError, match="junk.npz' is not a valid pursuhint .npz"):
        SimilarityMatrix.load(junk)


@pytest.mark.cuda
def test_runs_on_cuda_when_available():
    reps = [rand(100, 4, 90), rand(100, 6, 91)]
    for name in ALL:
        cpu = similarity_matrix(reps, name).values
        gpu = similarity_matrix([r.cuda() for r in reps], name).values
        np.testing.assert_allclose(gpu, cpu, atol=1e-10)
