"""Contrastive Representation Distillation (Tian et al., ICLR 2020): embeddings, memory bank, NCE loss.

Follows the CRD benchmark code (RepDistiller ``crd/``): both penultimate embeddings are projected
by a linear layer and L2-normalised; a momentum memory bank of size n_data × feat_dim per side
supplies negatives; the NCE loss of each anchor is Eq. 18 of the paper, with a noise
distribution Pn = 1 / n_data and a normalisation constant Z fixed on the first batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PursuhintError

NCE_EPS = 1e-7
CRD_WEIGHT = 0.8  # the benchmark's weight of the CRD term in the loss: ``crd_weight``'s default


class Embed(nn.Module):
    """Linear projection to ``feat_dim`` followed by L2 normalisation (the benchmark's ``Embed``)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        # F.normalize clamps the norm at 1e-12 where the benchmark divides by the bare norm.
        return F.normalize(self.linear(x.reshape(x.shape[0], -1)), dim=1)


def contrast_loss(scores: Tensor, n_data: int) -> Tensor:
    """NCE loss of one anchor side: column 0 of ``scores`` is the positive, the rest negatives.

    loss = −(Σ_b log P⁺/(P⁺ + m·Pn + ε) + Σ_b Σ_neg log m·Pn/(P⁻ + m·Pn + ε)) / B, Pn = 1/n_data.
    """
    m = scores.shape[1] - 1
    noise = m / float(n_data)
    pos = scores[:, 0]
    neg = scores[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + NCE_EPS))
    log_d0 = torch.log(noise / (neg + noise + NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class ContrastMemory(nn.Module):
    """Two momentum memory banks (student side, teacher side) of unit vectors, one row per sample.

    Each anchor is scored against K+1 rows of the *other* side's bank: exp(⟨v, w⟩ / T) / Z.
    After scoring, the rows of the batch's samples are moved towards the new embeddings:
    w ← normalise(m·w + (1−m)·v). Negatives are drawn uniformly (the benchmark's alias sampler with
    uniform weights) from the global torch RNG unless the caller gives ``contrast_idx``.
    """

    def __init__(self, feat_dim: int, n_data: int, nce_k: int, nce_t: float, nce_m: float) -> None:
        super().__init__()
        self.n_data = n_data
        self.nce_k = nce_k
        self.nce_t = nce_t
        self.nce_m = nce_m
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        # Normalisation constants, set from the first batch (negative = not yet set).
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def sample(self, index: Tensor) -> Tensor:
        """(B, K+1) indices: the positive ``index`` first, then K uniform draws from the bank."""
        idx = torch.randint(self.n_data, (index.shape[0], self.nce_k + 1), device=index.device)
        idx[:, 0] = index
        return idx

    def forward(self, v_s: Tensor, v_t: Tensor, index: Tensor, contrast_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Scores (B, K+1) with the student as anchor and with the teacher as anchor; updates the banks."""
        idx = self.sample(index) if contrast_idx is None else contrast_idx
        batch, width = idx.shape
        w_t = self.memory_t.index_select(0, idx.reshape(-1)).to(v_s.dtype).view(batch, width, -1)
        w_s = self.memory_s.index_select(0, idx.reshape(-1)).to(v_t.dtype).view(batch, width, -1)
        out_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / self.nce_t)
        out_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / self.nce_t)
        with torch.no_grad():  # on-device, no host sync: Z is set once, from the first batch
            self.z_s.copy_(torch.where(self.z_s < 0, out_s.mean() * self.n_data, self.z_s))
            self.z_t.copy_(torch.where(self.z_t < 0, out_t.mean() * self.n_data, self.z_t))
            self._update(self.memory_s, v_s, index)
            self._update(self.memory_t, v_t, index)
        return out_s / self.z_s.to(out_s.dtype), out_t / self.z_t.to(out_t.dtype)

    def _update(self, memory: Tensor, v: Tensor, index: Tensor) -> None:
        rows = memory.index_select(0, index).mul(self.nce_m).add(v.detach().to(memory.dtype), alpha=1 - self.nce_m)
        memory.index_copy_(0, index, F.normalize(rows, dim=1))


class CRDHead(nn.Module):
    """The learnable CRD part: student/teacher embeddings plus the memory bank, sized at construction.

    ``forward(emb_s, emb_t, index, contrast_idx=None)`` returns the CRD loss: the student-anchored
    plus the teacher-anchored NCE loss. ``nce_k`` is clamped to ``n_data − 1``. Runs in the embeddings'
    dtype (float32 unless the module was cast) with autocast off: exp(⟨v, w⟩ / 0.07) is too coarse in bf16.
    """

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        n_data: int,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
    ) -> None:
        super().__init__()
        for name, value, low in (("n_data", n_data, 2), ("s_dim", s_dim, 1), ("t_dim", t_dim, 1),
                                 ("feat_dim", feat_dim, 1), ("nce_k", nce_k, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise PursuhintError(f"CRD parameter {name}={value!r} is invalid; use an integer >= {low}.")
        if not nce_t > 0:
            raise PursuhintError(f"CRD parameter nce_t={nce_t!r} is invalid; use a temperature > 0 (default 0.07).")
        if not 0 <= nce_m < 1:
            raise PursuhintError(f"CRD parameter nce_m={nce_m!r} is invalid; use a momentum in [0, 1) (default 0.5).")
        self.n_data = n_data
        self.embed_s = Embed(s_dim, feat_dim)
        self.embed_t = Embed(t_dim, feat_dim)
        self.memory = ContrastMemory(feat_dim, n_data, min(nce_k, n_data - 1), float(nce_t), float(nce_m))

    def forward(self, emb_s: Tensor, emb_t: Tensor, index: Tensor, contrast_idx: Tensor | None = None) -> Tensor:
        if emb_s.shape[0] != emb_t.shape[0] or index.shape != (emb_s.shape[0],):
            raise PursuhintError(
                f"CRD needs emb_s, emb_t and index with one row per sample; got shapes "
                f"{tuple(emb_s.shape)}, {tuple(emb_t.shape)} and {tuple(index.shape)}."
            )
        if contrast_idx is not None and (contrast_idx.dim() != 2 or contrast_idx.shape[0] != emb_s.shape[0]):
            raise PursuhintError(
                f"CRD contrast_idx of shape {tuple(contrast_idx.shape)} is invalid; "
                f"use (batch, 1 + negatives) with the positive index in column 0."
            )
        dtype = self.embed_s.linear.weight.dtype
        with torch.autocast(device_type=emb_s.device.type, enabled=False):
            v_s = self.embed_s(emb_s.to(dtype))
            v_t = self.embed_t(emb_t.detach().to(dtype))
            out_s, out_t = self.memory(v_s, v_t, index.long(), None if contrast_idx is None else contrast_idx.long())
            return contrast_loss(out_s, self.n_data) + contrast_loss(out_t, self.n_data)
