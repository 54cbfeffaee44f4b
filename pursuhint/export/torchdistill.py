"""The torchdistill fragment: the ``train:`` part of a torchdistill 1.1 config (teacher and student hooks, the
student's auxiliary wrapper where the method needs learnable connectors, and a ``WeightedSumLoss`` criterion
with the sweep's weights) so that torchdistill trains a hint set with its own losses; what torchdistill cannot
express is left out of the criterion and said in the file's leading comments.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Optional, Sequence

import yaml

from ..distill.crd import CRD_WEIGHT
from ..distill.methods import CRD_WEIGHT_PARAM, METHODS
from ..errors import PursuhintError
from ..hints.hintset import HintSet
from .shapes import PairShape, Shape

SELF = "."  # torchdistill's path of a model's own output (its logits)
TORCHDISTILL_LOSSES = {  # pursuhint method → the torchdistill 1.1 loss that computes it
    "at": "ATLoss", "fitnet": "MSELoss + Connector4DAB", "sp": "SPKDLoss", "pkt": "PKTLoss", "rkd": "RKDLoss",
    "vid": "VIDLoss + VariationalDistributor4VID",
}
_NO_HINTS = ("kd_only", "none", "crd")
_MISSING = {  # methods torchdistill 1.1 has no loss for: what to supply instead
    "nst": "torchdistill 1.1 has no NST loss: supply one (pursuhint.distill.methods.NST: the MMD of channel-normalised "
           "maps under the kernel (a.b)^2, the larger map average-pooled to the smaller)",
    "cc": "torchdistill's CCKDLoss is the paper's kernel form on one Linear4CCKD embedding, not pursuhint's CC (the "
          "CRD benchmark's form, two linear embeddings to 128 per pair): supply pursuhint.distill.methods.CC's loss",
}
_CRD_NOTE = ("the CRD term (weight {weight:g} in pursuhint) is not in this criterion: torchdistill's CRDLoss needs Linear4CRD "
             "wrappers on teacher and student and a contrastive data set wrapper giving sample and contrast indices; "
             "add them as in torchdistill's CRD sample config")


def torchdistill_fragment(hs: HintSet, student_layers: list[str], shapes: Optional[Sequence[PairShape]] = None) -> str:
    """The ``train:`` part of a torchdistill 1.1 config that distils through this hint set, as YAML text.

    ``teacher``/``student`` hook the hint pairs' modules (``forward_hook``); ``criterion`` is a
    ``WeightedSumLoss`` of cross-entropy, KD when the sweep used it, and the method's torchdistill loss
    over named pairs (``pair<k>`` is the k-th hint pair), with the weights the trial trained with
    (provenance ``ce_weight``, ``kd_weight``, ``temperature``, ``hint_weight`` = the resolved β; pursuhint's
    defaults where the provenance lacks one). FitNet and VID add their connectors as the student's
    ``auxiliary_model_wrapper`` (``Connector4DAB``, ``VariationalDistributor4VID``), so their student hooks
    are ``student_model.<layer>``. ``shapes`` ((student, teacher) per pair, see ``ShapeProbe``) let the
    fragment leave out the pairs torchdistill's loss cannot compare and size the connectors; the leading
    comments name everything left out and why. ``pursuhint_hint_set`` carries the hint set itself
    (torchdistill ignores it).
    """
    prov = hs.provenance
    method = str(prov.get("method") or "")
    base = method[: -len("+crd")] if method.endswith("+crd") else method
    notes: list[str] = []
    pairs = list(zip(hs.layers, student_layers))
    if base not in _NO_HINTS:
        if len(student_layers) != len(hs.layers):
            raise PursuhintError(f"hint set has {len(hs.layers)} hint layers but {len(student_layers)} student layers "
                                 f"(provenance student_layers); a torchdistill fragment needs one student layer per hint")
        if shapes is not None and len(shapes) != len(pairs):
            raise PursuhintError(f"{len(shapes)} pair shapes were given for {len(pairs)} hint pairs")
    shapes = list(shapes) if shapes is not None else None
    terms = _logit_terms(prov, notes)
    student_hooks = list(student_layers)
    wrapper: Optional[dict[str, Any]] = None
    if base not in _NO_HINTS:
        hint_terms, wrapper, extra_hooks = _hint_terms(method, base, prov, pairs, shapes, notes)
        terms.update(hint_terms)
        if wrapper is not None:
            student_hooks = [f"student_model.{s}" for s in student_layers] + extra_hooks
    if method.endswith("+crd") or base == "crd":
        notes.append(_CRD_NOTE.format(weight=_crd_weight(prov)))
    student: dict[str, Any] = {"forward_proc": "forward_batch_only"}
    if wrapper is not None:
        student["auxiliary_model_wrapper"] = wrapper
    student.update({"sequential": [], "frozen_modules": [],
                    "forward_hook": {"input": [], "output": student_hooks}, "wrapper": None, "requires_grad": True})
    frag = {
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [],
                    "forward_hook": {"input": [], "output": list(hs.layers)}, "wrapper": None, "requires_grad": False},
        "student": student,
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": terms}},
        "pursuhint_hint_set": hs.to_dict(),
    }
    return _header(hs, method, pairs, shapes, notes) + yaml.safe_dump(frag, sort_keys=False)


def _logit_terms(prov: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The fragment's cross-entropy and KD terms, with the trial's weights (KD only when it trained with KD)."""
    ce_w = _provenance_number(prov, "ce_weight", 1.0, notes)
    kd_w = _provenance_number(prov, "kd_weight", 0.0, notes)
    terms: dict[str, Any] = {}
    if ce_w > 0:
        terms["ce"] = {"criterion": {"key": "CrossEntropyLoss", "kwargs": {"reduction": "mean"}},
                       "criterion_wrapper": {"key": "SimpleLossWrapper", "kwargs": {
                           "input": {"is_from_teacher": False, "module_path": SELF, "io": "output"},
                           "target": {"uses_label": True}}},
                       "weight": ce_w}
    if kd_w > 0:
        temp = _provenance_number(prov, "temperature", 4.0, notes)
        # KDLoss with alpha 0 is the bare batch-mean KL of the softened outputs, without T^2: the weight carries it.
        terms["kd"] = {"criterion": {"key": "KDLoss", "kwargs": {
            "student_module_path": SELF, "student_module_io": "output", "teacher_module_path": SELF,
            "teacher_module_io": "output", "temperature": temp, "alpha": 0.0, "reduction": "batchmean"}},
            "weight": kd_w * temp**2}
        notes.append(f"kd: weight = kd_weight {_num(kd_w)} x T^2 ({_num(temp)}^2): torchdistill's KDLoss without alpha "
                     f"leaves out the T^2 pursuhint's KD term has")
    return terms


def _hint_terms(method: str, base: str, prov: dict[str, Any], pairs: _Pairs, shapes: _Shapes,
                notes: list[str]) -> _Built:
    """The hint method's terms, its connector wrapper and the extra student hooks the wrapper needs; none
    (and a note) when torchdistill has no loss for the method."""
    beta = _hint_weight(prov, base, notes)
    if base not in TORCHDISTILL_LOSSES:
        why = _MISSING.get(base, f"method {method!r} has no torchdistill loss known to pursuhint: supply its loss")
        notes.append(f"hint loss not in this criterion: {why}; hook paths above, weight beta = {_num(beta)}")
        return {}, None, []
    build = {"at": _at_terms, "sp": _sp_terms, "rkd": _rkd_terms, "pkt": _pkt_terms,
             "fitnet": _fitnet_terms, "vid": _vid_terms}[base]
    return build(pairs, shapes, beta, notes)


def _header(hs: HintSet, method: str, pairs: list[tuple[str, str]], shapes: Optional[list[PairShape]],
            notes: list[str]) -> str:
    """The fragment's leading YAML comments: what it is, how to use it, its pairs and what it leaves out."""
    prov = hs.provenance
    score = f"{prov.get('score_metric', 'val_acc')} {hs.score}" if hs.score is not None else "unscored"
    lr = prov.get("lr")
    lines = [
        f"pursuhint hint set from sweep {prov.get('sweep')} trial {prov.get('trial_id')} ({score}), "
        f"method {method or 'unknown'}",
        "A torchdistill 1.1 `train:` fragment: merge its teacher, student and criterion into your config's `train:`",
        "(add data loaders, optimizer, scheduler and num_epochs); pursuhint_hint_set is ignored by torchdistill.",
    ]
    if isinstance(lr, (int, float)) and math.isfinite(lr):
        lines.append(f"The trial trained with lr {_num(lr)}.")
    for k, (t, s) in enumerate(pairs, 1):
        size = "" if shapes is None else f": teacher {_shape(shapes[k - 1][1])}, student {_shape(shapes[k - 1][0])}"
        lines.append(f"pair{k}: teacher {t} -> student {s}{size}")
    if shapes is None and pairs:
        lines.append("feature shapes were not known at export (no ShapeProbe): pairs are not checked")
    lines += notes
    return "".join(f"# {line}\n" for line in lines)


_Pairs = list[tuple[str, str]]  # (teacher layer, student layer) per hint pair
_Shapes = Optional[list[PairShape]]
_Built = tuple[dict[str, Any], Optional[dict[str, Any]], list[str]]  # sub-terms, student wrapper, its extra hooks


def _io(path: str) -> dict[str, str]:
    return {"io": "output", "path": path}


def _hint_term(key: str, kwargs: dict[str, Any], beta: float) -> dict[str, Any]:
    return {"criterion": {"key": key, "kwargs": kwargs}, "weight": beta}


def _at_terms(pairs: _Pairs, shapes: _Shapes, beta: float, notes: list[str]) -> _Built:
    """ATLoss over the pairs of equal HxW (its 'code' mode is pursuhint's AT, p = 2)."""
    at_pairs = {}
    for k, (t, s) in enumerate(pairs, 1):
        if shapes is not None:
            s_shape, t_shape = shapes[k - 1]
            if len(s_shape) != 3 or len(t_shape) != 3:
                notes.append(f"pair{k} left out: AT needs (C, H, W) maps")
                continue
            if s_shape[1:] != t_shape[1:]:
                notes.append(f"pair{k} left out: ATLoss compares attention maps of equal HxW "
                             f"(teacher {_hw(t_shape)}, student {_hw(s_shape)}) and torchdistill 1.1 has no "
                             f"parameter-free way to "
                             f"resize one; pursuhint average-pools the larger map to the smaller - supply a loss that "
                             f"does for this pair")
                continue
        at_pairs[f"pair{k}"] = {"teacher": _io(t), "student": _io(s), "weight": 1.0}
    if shapes is None:
        notes.append("ATLoss needs equal HxW within each pair (pursuhint pools the larger map; torchdistill does not)")
    return ({"at": _hint_term("ATLoss", {"at_pairs": at_pairs, "mode": "code"}, beta)} if at_pairs else {}), None, []


def _sp_terms(pairs: _Pairs, shapes: _Shapes, beta: float, notes: list[str]) -> _Built:
    """One SPKDLoss per pair (any shapes: it compares batch similarity matrices)."""
    notes.append("sp: torchdistill 1.1's SPKDLoss scales each row of the B x B similarity matrix to unit L1 norm "
                 "(its normalize(G, 1) sets p = 1); pursuhint and the paper use the L2 norm, so values differ")
    return {f"sp_pair{k}": _hint_term("SPKDLoss", {"student_output_path": s, "teacher_output_path": t,
                                                   "reduction": "batchmean"}, beta)
            for k, (t, s) in enumerate(pairs, 1)}, None, []


def _rkd_terms(pairs: _Pairs, shapes: _Shapes, beta: float, notes: list[str]) -> _Built:
    """One RKDLoss per pair, pursuhint's distance and angle weights (25, 50)."""
    return {f"rkd_pair{k}": _hint_term("RKDLoss", {"student_output_path": s, "teacher_output_path": t,
                                                   "dist_factor": 25.0, "angle_factor": 50.0, "reduction": "mean"}, beta)
            for k, (t, s) in enumerate(pairs, 1)}, None, []


def _pkt_terms(pairs: _Pairs, shapes: _Shapes, beta: float, notes: list[str]) -> _Built:
    """One PKTLoss per pair of vectors: it multiplies the features as (B, D) matrices, while pursuhint flattens maps."""
    terms = {}
    for k, (t, s) in enumerate(pairs, 1):
        if shapes is None or len(shapes[k - 1][0]) != 1 or len(shapes[k - 1][1]) != 1:
            why = "its features are maps" if shapes is not None else "its shapes are unknown"
            notes.append(f"pair{k} left out: PKTLoss takes (B, D) vectors and {why}; pursuhint flattens a map first - "
                         f"supply a loss that does")
            continue
        terms[f"pkt_pair{k}"] = _hint_term("PKTLoss", {"student_module_path": s, "student_module_io": "output",
                                                       "teacher_module_path": t, "teacher_module_io": "output",
                                                       "eps": 1e-7}, beta)
    return terms, None, []


def _per_pair(pairs: _Pairs, shapes: _Shapes, notes: list[str], unknown: str,
              build_one: Callable[[str, str, Shape, Shape, str], Any]) -> Optional[dict[str, Any]]:
    """``build_one(teacher, student, s_shape, t_shape, key)`` for every pair, keyed ``pair<k>``; a pair it
    answers with a string (why not) is left out with a note. None, and the ``unknown`` note, without shapes."""
    if shapes is None:
        notes.append(unknown)
        return None
    built: dict[str, Any] = {}
    for k, (t, s) in enumerate(pairs, 1):
        one = build_one(t, s, *shapes[k - 1], f"pair{k}")
        if isinstance(one, str):
            notes.append(f"pair{k} left out: {one}")
        else:
            built[f"pair{k}"] = one
    return built


def _fitnet_terms(pairs: _Pairs, shapes: _Shapes, beta: float, notes: list[str]) -> _Built:
    """Connector4DAB's Conv2d + BN connector per pair, regressing the student map onto the teacher's, and MSE."""

    def one(t: str, s: str, s_shape: Shape, t_shape: Shape, key: str) -> Any:
        conv = _fitnet_conv(s_shape, t_shape)
        if isinstance(conv, str):
            return conv
        connector = {"io": "output", "path": f"student_model.{s}", "conv2d_kwargs": conv,
                     "bn2d_kwargs": {"num_features": t_shape[0]}}
        term = {"criterion": {"key": "MSELoss", "kwargs": {"reduction": "mean"}},
                "criterion_wrapper": {"key": "SimpleLossWrapper", "kwargs": {
                    "input": {"is_from_teacher": False, "module_path": f"connector_dict.{key}", "io": "output"},
                    "target": {"is_from_teacher": True, "module_path": t, "io": "output"}}},
                "weight": beta}
        return connector, term

    built = _per_pair(pairs, shapes, notes, "FitNet's connectors need the pairs' channels and sizes, unknown at "
                      "export: supply a regressor per pair (e.g. Connector4DAB) and an MSELoss on its output", one)
    if not built:
        return {}, None, []
    notes.append("FitNet connectors: Connector4DAB's Conv2d + BatchNorm2d, as pursuhint's ConvReg but without its final ReLU")
    wrapper = {"key": "Connector4DAB", "kwargs": {"connectors": {key: c for key, (c, _) in built.items()}}}
    return {f"fitnet_{key}": term for key, (_, term) in built.items()}, wrapper, [f"connector_dict.{key}" for key in built]


def _fitnet_conv(s_shape: Shape, t_shape: Shape) -> dict[str, Any] | str:
    """Conv2d kwargs of pursuhint's FitNet regressor for one pair, or why a Conv2d cannot be it."""
    if len(s_shape) != 3 or len(t_shape) != 3:
        return "FitNet on vectors needs a Linear regressor, and Connector4DAB builds Conv2d only"
    (s_c, s_h, s_w), (t_c, t_h, t_w) = s_shape, t_shape
    if (s_h, s_w) == (2 * t_h, 2 * t_w):
        return {"in_channels": s_c, "out_channels": t_c, "kernel_size": 3, "stride": 2, "padding": 1}
    if s_h >= t_h and s_w >= t_w:
        size = (1 + s_h - t_h, 1 + s_w - t_w)
        return {"in_channels": s_c, "out_channels": t_c, "kernel_size": size[0] if size[0] == size[1] else list(size),
                "stride": 1, "padding": 0}
    return (f"the student map ({_hw(s_shape)}) is smaller than the teacher's ({_hw(t_shape)}): pursuhint's regressor "
            f"upsamples it, and Connector4DAB builds Conv2d only - supply an upsampling regressor")


def _vid_terms(pairs: _Pairs, shapes: _Shapes, beta: float, notes: list[str]) -> _Built:
    """VariationalDistributor4VID's regressor per pair of equal HxW, and VIDLoss (pursuhint's VID defaults)."""

    def one(t: str, s: str, s_shape: Shape, t_shape: Shape, key: str) -> Any:
        if len(s_shape) != 3 or len(t_shape) != 3 or s_shape[1:] != t_shape[1:]:
            return ("VIDLoss compares (C, H, W) maps of equal HxW; pursuhint pools the larger to the smaller (and "
                    "treats vectors as 1x1 maps) - supply a loss that does")
        regressor = {"io": "output", "path": f"student_model.{s}", "kwargs": {
            "in_channels": s_shape[0], "middle_channels": t_shape[0], "out_channels": t_shape[0],
            "eps": 1e-5, "init_pred_var": 5.0}}
        return regressor, {"teacher": _io(t), "student": _io(f"regressor_dict.{key}"), "weight": 1.0}

    built = _per_pair(pairs, shapes, notes, "VID's regressors need the pairs' channels and sizes, unknown at export: "
                      "supply VariationalDistributor4VID regressors and VIDLoss feature_pairs", one)
    if not built:
        return {}, None, []
    wrapper = {"key": "VariationalDistributor4VID",
               "kwargs": {"regressors": {key: r for key, (r, _) in built.items()}}}
    feature_pairs = {key: fp for key, (_, fp) in built.items()}
    return ({"vid": _hint_term("VIDLoss", {"feature_pairs": feature_pairs}, beta)}, wrapper,
            [f"regressor_dict.{key}" for key in built])


def _provenance_number(prov: dict[str, Any], key: str, default: float, notes: list[str]) -> float:
    """A finite number from the provenance, or pursuhint's default (and a note saying so)."""
    value = prov.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    notes.append(f"{key} {_num(default)} is pursuhint's default: the hint set's provenance does not record it")
    return default


def _crd_weight(prov: dict[str, Any]) -> float:
    """The CRD term's weight the trial trained with: its ``crd_weight`` method parameter, else the default."""
    try:
        params = json.loads(prov.get("method_params") or "{}")
    except (TypeError, ValueError):
        params = {}
    value = params.get(CRD_WEIGHT_PARAM) if isinstance(params, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else CRD_WEIGHT


def _hint_weight(prov: dict[str, Any], base: str, notes: list[str]) -> float:
    """β the trial trained with (the resolved one), else the method's own default weight."""
    value = prov.get("hint_weight")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    default = float(METHODS.get(base).default_weight) if base in METHODS.names() else 1.0
    notes.append(f"hint_weight {_num(default)} is the method's default: the provenance does not record the trial's beta")
    return default


def _num(v: float) -> str:
    """A weight as YAML comments show it (``0.9``, ``1000``)."""
    return f"{v:g}"


def _hw(shape: Shape) -> str:
    return "x".join(str(d) for d in shape[1:]) if len(shape) == 3 else f"vector {shape[0]}"


def _shape(shape: Shape) -> str:
    return f"{shape[0]} channels {shape[1]}x{shape[2]}" if len(shape) == 3 else f"vector {shape[0]}"
