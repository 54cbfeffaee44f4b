"""Checks that need more than the config file, done before any work starts: do the names exist, do the
splits hold every class, and can the config (or some of its search space) be trained on these
architectures' candidate layers?"""

from __future__ import annotations

import math
from typing import Any, Optional

from .config import Config
from .config.grammar import BY_METHOD, OTHER_METHODS, leaf_values
from .errors import ConfigError, PursuhintError
from .infra.registry import did_you_mean


def check_names(cfg: Config) -> None:
    """Check every registry name in the config (and in its search space) against what exists.

    It lives here, above the registries, so that config stays at the bottom of the layers. The registries
    are imported when a check runs (they bring torch; `pursuhint --help` should not wait for it).
    """
    from .data import DATASETS  # torch and the registries: deferred so the CLI starts fast
    from .models import MODELS  # torch and the registries: deferred so the CLI starts fast

    def check(key: str, ok: bool, valid: list[str], value: Any) -> None:
        if not ok:
            raise ConfigError(f"{key}: unknown value {value!r}{did_you_mean(str(value), valid)}; "
                              f"valid: {', '.join(valid)}")


    for v in leaf_values(cfg, "data.dataset"):
        check("data.dataset", v in DATASETS, DATASETS.names(), v)
    for key in ("teacher.arch", "student.arch"):
        for v in leaf_values(cfg, key):
            ok = v in MODELS or (isinstance(v, str) and v.startswith("torchvision:"))
            check(key, ok, MODELS.names() + ["torchvision:<name>"], v)
    from .hints import CENTERS, CLUSTERINGS, SIMILARITIES  # torch and the registries: deferred so the CLI starts fast

    for key, reg in (("selection.similarity", SIMILARITIES), ("selection.algorithm", CLUSTERINGS),
                     ("selection.center", CENTERS)):
        for v in leaf_values(cfg, key):
            check(key, v in reg, reg.names(), v)
    gran = cfg.selection.granularity
    if gran != "block" and not gran.startswith("pattern:"):
        raise ConfigError(f"selection.granularity: unknown value {gran!r}; valid: block, pattern:<regex>")
    from .distill import METHODS  # torch and the registries: deferred so the CLI starts fast

    def method_ok(v: Any) -> bool:
        return all(part in METHODS for part in str(v).split("+"))

    for v in leaf_values(cfg, "distill.method"):
        check("distill.method", method_ok(v), METHODS.names() + ["<method>+crd"], v)
    from .distill.methods import check_params  # torch and the registries: deferred so the CLI starts fast

    try:
        check_params(leaf_values(cfg, "distill.method"), cfg.distill.params)
    except PursuhintError as exc:
        raise ConfigError(f"distill.params: {exc}") from None
    for key, spec in cfg.space.items():
        for v in spec.get(BY_METHOD, {}):
            check(f"{key}.by_method", v == OTHER_METHODS or method_ok(v),
                  METHODS.names() + ["<method>+crd", OTHER_METHODS], v)


def candidate_count(arch: str, granularity: str = "block", in_channels: int = 3) -> Optional[int]:
    """How many candidate hint points ``arch`` has (None when only a forward pass can tell)."""
    if granularity != "block":
        return None
    return sum(len(s) for s in block_stages(arch, in_channels)) or None


def block_stages(arch: str, in_channels: int = 3) -> list[list[str]]:
    """``arch``'s candidate hint points by stage, from a freshly built model ([] when only a forward pass can
    tell)."""
    from .models import create_model, model_block_stages  # torch and the registries: deferred so the CLI starts fast

    return model_block_stages(create_model(arch, 10, in_channels=in_channels))


def preflight(cfg: Config, student: bool = True, sweep: bool = False) -> list[str]:
    """Refuse, with one sentence, anything that would only fail once training has started; return the
    parts of the search space that cannot be trained (a sweep starts anyway and says which trials will end
    ``invalid``).

    ``student=False`` (for ``select``) checks the teacher side only: a hint set may be made for
    another student later. ``sweep`` checks the search space; other commands train the defaults.
    """
    check_names(cfg)
    check_published(cfg, student)
    check_splits(cfg)
    check_image_cache(cfg)
    return check_space(cfg, student, searched=sweep)


def check_published(cfg: Config, student: bool = True) -> None:
    """ReviewKD pairs the student's stages with the teacher's one to one: refuse a pair whose stage counts differ,
    naming the stage ends. SemCKD over the hint set's layers (``candidates: hints``) needs a hint set: refuse it
    as a confirmation baseline, which has none."""
    from .distill.methods import own_params  # torch and the registries: deferred so the CLI starts fast

    if "semckd" in cfg.search.confirm.baselines and \
            own_params("semckd", cfg.distill.params).get("candidates") == "hints":
        raise ConfigError("search.confirm.baselines: semckd with distill.params candidates: hints needs a hint set, "
                          "and a baseline has none; give semckd its own params ({semckd: {candidates: "
                          "stage_ends}}) or leave it out of the baselines")
    wanted = "reviewkd" in leaf_values(cfg, "distill.method") or "reviewkd" in cfg.search.confirm.baselines
    if not (wanted and student):
        return
    for t_arch in leaf_values(cfg, "teacher.arch"):
        for s_arch in leaf_values(cfg, "student.arch"):
            t_stages, s_stages = block_stages(t_arch), block_stages(s_arch)
            if t_stages and s_stages and len(t_stages) != len(s_stages):
                raise ConfigError(
                    f"distill.method reviewkd pairs the student's stages with the teacher's one to one, but the "
                    f"teacher {t_arch} has {len(t_stages)} ({', '.join(s[-1] for s in t_stages)}) and the student "
                    f"{s_arch} {len(s_stages)} ({', '.join(s[-1] for s in s_stages)}); choose a pair with as many "
                    f"stages, or another method")


def check_space(cfg: Config, student: bool = True, searched: bool = True) -> list[str]:
    """Which (n_hints, mapping, teacher, student) points of the config or its space can be trained: each
    K must fit the teacher's and the student's candidate layers, and ``stage_ends`` needs one hint per
    student stage. None trainable: a ConfigError naming the keys and a value that works; some: one line
    per untrainable part."""
    problems: list[str] = []
    fixes: list[str] = []
    points = 0
    space = cfg.space if searched else {}
    for t_arch in leaf_values(cfg, "teacher.arch", searched):
        n_teacher = candidate_count(t_arch, cfg.selection.granularity)
        for s_arch in (leaf_values(cfg, "student.arch", searched) if student else [None]):
            n_student, n_stages = _student_shape(s_arch) if s_arch else (None, None)
            for k in _hint_counts(space, cfg.selection.n_hints):
                for mapping in leaf_values(cfg, "distill.mapping", searched):
                    points += 1
                    why, fix = _untrainable(k, mapping, t_arch, n_teacher, s_arch, n_student, n_stages)
                    if why:
                        problems.append(why)
                        fixes.append(fix)
    if points and len(problems) == points:
        where = "the search space has" if space else "the config has"
        raise ConfigError(f"{where} nothing that can be trained: {problems[0]}; {fixes[0]}")
    return list(dict.fromkeys(problems))


def _untrainable(k: Optional[int], mapping: str, t_arch: str, n_teacher: Optional[int], s_arch: Optional[str],
                 n_student: Optional[int], n_stages: Optional[int]) -> tuple[str, str]:
    """(why, a fix) when K hints under ``mapping`` cannot be trained on this pair, else ("", "")."""
    if k is None:  # the student's number of stages: always one hint per stage
        return "", ""
    if n_teacher is not None and k > n_teacher:
        return (f"selection.n_hints {k} exceeds the teacher {t_arch}'s {n_teacher} candidate layers",
                f"use n_hints of at most {n_teacher}")
    if n_student is not None and k > n_student:
        return (f"selection.n_hints {k} exceeds the student {s_arch}'s {n_student} candidate layers",
                f"use n_hints of at most {n_student}")
    if mapping == "stage_ends" and n_stages is not None and k != n_stages:
        return (f"selection.n_hints {k} with distill.mapping stage_ends needs one hint per stage of the student "
                f"{s_arch}, which has {n_stages}",
                f"use n_hints {n_stages} (or null), or distill.mapping: auto")
    return "", ""


def _hint_counts(space: dict, current: Optional[int]) -> list[Optional[int]]:
    """Every K the config or its space can ask for (None: the student's number of stages)."""
    spec = space.get("selection.n_hints")
    if spec is None:
        return [current]
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        return [None if v is None else int(v) for v in args]
    if kind == "randint":
        return list(range(int(args[0]), int(args[1]) + 1))
    return sorted({int(math.ceil(args[0])), int(args[1])})  # a float range: its integer ends


def _student_shape(arch: str) -> tuple[Optional[int], Optional[int]]:
    """(candidate layers, stages) of a student (None, None when only a forward pass can tell)."""
    stages = block_stages(arch)
    return (sum(len(s) for s in stages) or None, len(stages) or None)


def check_splits(cfg: Config) -> None:
    """Each of the three splits (training, selection, test) must hold every class: the data set's splits are
    made with the config's sizes, before a teacher, Ray or MLflow is touched. A data set with a survey
    (ImageFolder) is checked from its file listing and a decoded sample, not decoded whole here: the sweep's
    shared work decodes it once, on the node where it runs."""
    from .data import SURVEYS, survey_dataset  # torch and the registries: deferred so the CLI starts fast
    from .train.teacher import dataset_for  # torch and the registries: deferred so the CLI starts fast

    d = cfg.data
    if d.dataset in SURVEYS:
        survey_dataset(d.dataset, d.root, d.image_size, d.train_samples, d.val_samples, cfg.seed, d.val_fraction)
    else:
        dataset_for(cfg)


def check_image_cache(cfg: Config) -> None:
    """An ImageFolder sweep's ``$PURSUHINT_IMAGE_CACHE`` must be a folder the trials can write their cache in: it is
    probed (a temporary file created and removed) and refused with the folder and the fix otherwise."""
    if "imagefolder" not in leaf_values(cfg, "data.dataset"):
        return
    from .data.image_cache import check_cache_folder  # torch and the registries: deferred so the CLI starts fast

    check_cache_folder()
