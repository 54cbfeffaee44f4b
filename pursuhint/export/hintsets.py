"""Writing a sweep's best hint sets out for other training code: JSON, YAML or a torchdistill fragment.
Picking and reading them is ``search.hint_sets``' job; the leaderboard's text is ``search.columns``'s."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import PursuhintError
from ..infra.fileio import write_text_atomic
from ..hints.hintset import HintSet
from .shapes import ShapeProbe
from .torchdistill import torchdistill_fragment

FORMATS = ("json", "yaml", "torchdistill")


def write_hint_sets(sets: list[HintSet], out_dir: Path, fmt: str, probe: Optional[ShapeProbe] = None) -> list[Path]:
    """Write each hint set as ``hint_set_<rank>.<json|yaml>``, or as a torchdistill fragment
    ``torchdistill_<rank>.yaml`` (see ``torchdistill_fragment``). With ``probe`` (the sweep's teacher and
    student), the fragment knows each hint pair's feature shapes: FitNet and VID get their connectors, and
    pairs torchdistill cannot compare are named instead of failing at the first step."""
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
            students = student_layers_of(hs)
            shapes = probe.pair_shapes(hs.layers, students) if probe is not None and students else None
            paths.append(write_text_atomic(out_dir / f"torchdistill_{i}.yaml", torchdistill_fragment(hs, students, shapes)))
    return paths


def student_layers_of(hs: HintSet) -> list[str]:
    """The student layers the hint set's trial paired with its hint points (``provenance["student_layers"]``)."""
    return [x for x in str(hs.provenance.get("student_layers") or "").split(",") if x]


def _save(hs: HintSet, path: Path) -> Path:
    hs.save(path)
    return path
