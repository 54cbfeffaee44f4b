"""Typed, validated configuration: one YAML file describes a teacher–student pair and all work on it.

Any leaf may hold a search-space spec instead of a value (``{choice: [...]}``, ``{randint: [a, b]}``,
``{uniform: [a, b]}``, ``{loguniform: [a, b]}``, ``{quniform: [a, b, q]}``); ``sweep`` searches
them, every other command uses a default for them and says so (:attr:`Config.searched_defaults`).
A leaf may also depend on the sampled distillation method, ``{by_method: {at: SPEC, fitnet: SPEC,
default: SPEC}}`` (a branch may be a plain value): only the chosen method's branch is sampled.

.. code-block:: yaml

    name: digits_quick
    seed: 0
    data: {dataset: digits, image_size: 16, probe_size: 1000}
    teacher: {arch: resnet56, train: {epochs: 30, lr: 0.05}}
    student: {arch: resnet8}
    selection: {similarity: {choice: [r2_cca, cka_linear]}, n_hints: {randint: [2, 4]}}
    distill: {method: at}
    train: {epochs: 10}
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..infra.registry import did_you_mean
from .grammar import (BY_METHOD, branch_for, check_by_method, collect_specs, default_for, get_path, is_spec,
                          method_of, set_path, spec_probe_values, with_path)

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class TrainRecipe(_Section):
    """SGD recipe; defaults are the CRD benchmark's CIFAR-100 recipe.

    .. code-block:: yaml

        train: {epochs: 240, batch_size: 64, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4,
                lr_schedule: step, milestones: [150, 180, 210], gamma: 0.1}
    """

    epochs: int = Field(240, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    lr_schedule: Literal["step", "cosine", "constant"] = "step"
    # Epochs at which the step schedule multiplies the lr by `gamma`; default: 62.5 %, 75 % and
    # 87.5 % of `epochs` (150, 180, 210 of 240 — the benchmark's points, scaled to any length).
    milestones: Optional[list[int]] = None
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)
    # The run's own seed (student initialisation, data order, augmentation); null = the config's `seed`.
    # The confirmation stage sets it; the splits always follow the config's `seed`.
    seed: Optional[int] = Field(None, ge=0)

    def run_seed(self, config_seed: int) -> int:
        """This recipe's run seed: its own ``seed``, else the config's."""
        return config_seed if self.seed is None else int(self.seed)

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (sorted(v) != v or any(m < 1 for m in v)):
            raise ValueError(f"milestones must be increasing epoch numbers ≥ 1, got {v}")
        return v

    def resolved_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return sorted({max(1, round(self.epochs * f)) for f in (0.625, 0.75, 0.875)})


PLACEMENT_KEYS = ("data.device_budget_gb", "data.memory_map")  # where tensors live, never what is computed


class DataConfig(_Section):
    """Which images, at what size, how many, and the probe set for layer representations.

    .. code-block:: yaml

        data: {dataset: cifar100, root: ~/data, image_size: 32, probe_size: 10000}
    """

    dataset: str = "digits"
    root: Optional[str] = None
    image_size: Optional[int] = Field(None, ge=8)
    train_samples: Optional[int] = Field(None, ge=1)
    val_samples: Optional[int] = Field(None, ge=1)
    probe_size: int = Field(1000, ge=2)
    # The selection split: this stratified, seed-fixed fraction of the training data is held out for the
    # search to rank on (students never train on it); the data set's own held-out part is the test split.
    val_fraction: float = 0.1
    # GiB of images a loader may keep on a CUDA device; larger splits stay on the host and are copied per
    # batch. None = half the device's free memory.
    device_budget_gb: Optional[float] = Field(None, ge=0)
    # ImageFolder images are read from their memory-mapped cache a batch at a time (bounded RAM; trials on one
    # node share the file's pages); false reads the splits into memory. Digits and CIFAR are always in memory.
    memory_map: bool = True
    # auto = the data set's own default (crop_flip for natural images, crop for digits).
    augment: Literal["auto", "crop_flip", "crop", "none"] = "auto"

    @field_validator("val_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v < 0.5:
            raise ValueError("expected a number strictly between 0 and 0.5 (the share of the training data held "
                             "out as the selection split; default 0.1)")
        return v


class TeacherConfig(_Section):
    """The teacher: an architecture and either a checkpoint or a recipe to train it once (cached).

    .. code-block:: yaml

        teacher: {arch: resnet110, checkpoint: ckpts/resnet110_vanilla/ckpt_epoch_240.pth}
    """

    arch: str = "resnet56"
    checkpoint: Optional[str] = None
    train: TrainRecipe = Field(default_factory=TrainRecipe)


class StudentConfig(_Section):
    """The student architecture.

    .. code-block:: yaml

        student: {arch: resnet20}
    """

    arch: str = "resnet8"


class SelectionConfig(_Section):
    """How hint points are chosen (paper mode: r2_cca / pursuhint / mean_index).

    .. code-block:: yaml

        selection: {similarity: r2_cca, n_hints: 3, algorithm: pursuhint, center: mean_index}
    """

    similarity: str = "r2_cca"
    n_hints: Optional[int] = Field(None, ge=1)  # None: the student's number of stages
    algorithm: str = "pursuhint"
    center: str = "mean_index"
    granularity: str = "block"
    preact: bool = False
    rbf_max_samples: int = Field(4000, ge=10)
    on_collision: Literal["error", "warn"] = "error"


class DistillConfig(_Section):
    """Distillation method and loss weights: ce_weight·CE + kd_weight·KD + hint_weight·Σ hint.

    ``hint_weight: auto`` (the default) calibrates β on the first step's forward so that the hint term starts at
    ``hint_ratio`` times the CE term (β = r · CE₀ / H₀); a number is that β exactly; ``null`` takes the
    method's weight from the CRD benchmark (e.g. at 1000, fitnet 100, tuned for 32-px CIFAR).
    ``params`` are the method's own parameters (AT's ``p``, RKD's weights, ...), checked against the
    method; with several methods, give each its own: ``{at: {p: 2}, rkd: {angle_weight: 25}}``. Searchable.

    .. code-block:: yaml

        distill: {method: at, hint_weight: auto, hint_ratio: 1.0, kd_weight: 0.0, ce_weight: 1.0, temperature: 4,
                  params: {p: {choice: [1, 2, 4]}}}
    """

    method: str = "at"
    hint_weight: Union[Literal["auto"], float, None] = "auto"
    hint_ratio: float = Field(1.0, gt=0)
    kd_weight: float = Field(0.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    mapping: Literal["auto", "stage_ends", "relative_depth"] = "auto"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        nested = [isinstance(x, dict) for x in v.values()]
        if any(nested) and not all(nested):
            raise ValueError("give either the method's parameters ({p: 2}) or one mapping per method "
                             "({at: {p: 2}, rkd: {angle_weight: 25}}), not both")
        return v

    @field_validator("hint_weight", mode="before")
    @classmethod
    def _weight(cls, v: Any) -> Any:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not (v is None or v == "auto" or (number and v >= 0)):
            raise ValueError("expected auto (calibrated), a number >= 0, or null (the method's benchmark weight)")
        return v


class ResourcesConfig(_Section):
    """Resources one trial asks Ray for; fractional GPUs let small CIFAR trials share a GPU."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SeedRange(_Section):
    """A racing confirmation stage's seed counts: every arm gets ``min`` seeds, then one more per round while
    one of its comparisons is undecided, up to ``max``.

    .. code-block:: yaml

        search: {confirm: {seeds: {min: 3, max: 10}}}
    """

    min: int = 3
    max: int = 10

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "SeedRange":
        """A checked range from ``{min, max}``; a ValueError names an unknown key, a count below 2 or max < min."""
        unknown = sorted(set(raw) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} under seeds; valid keys here: min, max")
        values = {**{k: f.default for k, f in cls.model_fields.items()}, **raw}
        for key, v in values.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"seeds.{key} must be a whole number, got {v!r}")
        if values["min"] < 2:
            raise ValueError(f"seeds.min: {values['min']} cannot give a confidence interval; use min >= 2")
        if values["max"] < values["min"]:
            raise ValueError(f"seeds.max: {values['max']} is below seeds.min: {values['min']}; use max >= min")
        return cls.model_construct(**values)


CONFIRM_BASELINES = ("default", "kd_only", "ce_only", "uniform", "random")  # the default list; dkd, reviewkd and
# semckd (published methods that need no chosen layers) may be added
AUTO_COHORT_MAX = 8  # cohort: auto — students per confirmation trial (the arms of one seed, at most this many)
# What students must share to train in one cohort: the same batches (data, recipe, seed), the same teacher and
# the same student architecture (the trainer checks it; the confirmation stage groups its arms by it).
COHORT_SECTIONS = ("data", "teacher", "student", "train")


class ConfirmConfig(_Section):
    """The confirmation stage: the search's ``top_k`` distinct configurations and their baselines, retrained
    with fresh seeds, full budget, scored on the test split. ``top_k: 0`` turns it off.

    ``seeds`` is a fixed count, or ``{min, max}``: a race that gives another seed only to arms whose
    comparisons are still undecided. Each comparison ends better, worse, equivalent within ±``margin``
    accuracy points, or undecided. ``budget_hours`` (trial-hours, null: none) ends a race early.

    ``cohort`` trains the arms of one seed together, one Tune trial per cohort, with one loader pass and one
    teacher forward per batch (exactly what each arm would have seen alone): ``auto`` (cohorts of at most
    :data:`AUTO_COHORT_MAX`; on a GPU, as many students as fit a trial's share of the card), ``off`` (one trial
    per arm and seed) or a number of students per cohort.

    .. code-block:: yaml

        search: {confirm: {top_k: 3, seeds: {min: 3, max: 10}, margin: 1.0, budget_hours: null, cohort: auto,
                           baselines: [default, kd_only, ce_only, uniform, random]}}
    """

    top_k: int = Field(3, ge=0)
    seeds: Union[int, SeedRange] = 3
    margin: float = 1.0
    budget_hours: Optional[float] = None
    baselines: list[Literal["default", "kd_only", "ce_only", "uniform", "random", "dkd", "reviewkd", "semckd"]] = Field(
        default_factory=lambda: list(CONFIRM_BASELINES))
    cohort: Union[Literal["auto", "off"], int] = "auto"

    @field_validator("cohort", mode="before")
    @classmethod
    def _cohort(cls, v: Any) -> Any:
        if v is False:  # YAML reads a bare `off` as false
            return "off"
        if isinstance(v, bool) or not (v in ("auto", "off") or isinstance(v, int)):
            raise ValueError(f"expected auto, off or a number of students per cohort, got {v!r}")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"a cohort trains at least 1 student, got {v}; use off for one trial per arm and seed")
        return v

    @property
    def cohort_size(self) -> int:
        """Students per confirmation trial: 1 with ``off``, :data:`AUTO_COHORT_MAX` with ``auto`` (the sweep lowers
        it to what fits a trial's share of the GPU: ``train/cohort_memory.py``)."""
        if self.cohort == "off":
            return 1
        return AUTO_COHORT_MAX if self.cohort == "auto" else int(self.cohort)

    @field_validator("margin")
    @classmethod
    def _margin(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("the equivalence margin must be > 0 accuracy points (default 1.0)")
        return v

    @field_validator("budget_hours")
    @classmethod
    def _budget(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not v > 0:
            raise ValueError("the budget must be > 0 trial-hours, or null for none")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_form(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return SeedRange.parse(v)
        if isinstance(v, bool) or not isinstance(v, (int, SeedRange)) or (isinstance(v, int) and v < 0):
            raise ValueError("expected a number of seeds (e.g. 3) or {min: 3, max: 10}")
        return v

    @property
    def min_seeds(self) -> int:
        return self.seeds.min if isinstance(self.seeds, SeedRange) else int(self.seeds)

    @property
    def max_seeds(self) -> int:
        return self.seeds.max if isinstance(self.seeds, SeedRange) else int(self.seeds)

    @model_validator(mode="after")
    def _two_seeds(self) -> "ConfirmConfig":
        if self.top_k > 0 and self.min_seeds < 2:
            raise ValueError(f"seeds: {self.seeds} with top_k: {self.top_k} cannot give a confidence interval; "
                             f"use seeds >= 2, or top_k: 0 to turn the confirmation stage off")
        return self


class SearchConfig(_Section):
    """Sweep settings (Ray Tune + Optuna + ASHA).

    .. code-block:: yaml

        search: {num_samples: 16, searcher: optuna, scheduler: asha, max_concurrent_trials: 2}
    """

    num_samples: int = Field(8, ge=1)
    searcher: Literal["optuna", "random"] = "optuna"
    scheduler: Literal["asha", "fifo"] = "asha"
    max_concurrent_trials: Optional[int] = Field(None, ge=1)
    resources_per_trial: ResourcesConfig = Field(default_factory=ResourcesConfig)
    baselines: list[Literal["default", "kd_only", "uniform", "random"]] = Field(
        default_factory=lambda: ["default", "kd_only"])
    # Dotted keys the search stage's baseline trials train with instead of the searched defaults, e.g.
    # {distill.hint_weight: null}: the benchmark's β, comparable with published tables.
    baseline_values: dict[str, Any] = Field(default_factory=dict)
    # What the ranking and Optuna use: the last epoch's selection-split accuracy (final), or the best epoch's.
    metric: Literal["final", "best"] = "final"
    confirm: ConfirmConfig = Field(default_factory=lambda: ConfirmConfig())
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    max_failures: int = Field(2, ge=0)
    # CPUs (and torch threads) of the shared work (teacher, probe pass, similarities); null = 1 on a CPU
    # sweep, a node's CPUs per GPU (at least 2) when trials ask for GPUs (then the shared work takes a GPU too).
    shared_cpus: Optional[int] = Field(None, ge=1)
    # Seconds to wait for the shared work's resources (an autoscaling cluster's GPU workers may still be
    # joining); then the sweep stops, naming what is missing, instead of running it on a CPU.
    shared_timeout_s: float = Field(600.0, gt=0)
    # Where the Optuna study is kept (an RDB URL, e.g. sqlite:///path/optuna.db or postgresql://...); null = the
    # file optuna.db in the sweep's Tune results folder (in memory when Tune writes to remote storage).
    optuna_storage: Optional[str] = None

    @field_validator("optuna_storage")
    @classmethod
    def _rdb_url(cls, url: Optional[str]) -> Optional[str]:
        if url is not None and "://" not in url:
            raise ValueError(f"{url!r} is not an RDB URL; write e.g. sqlite:////abs/path/optuna.db or "
                             f"postgresql://user@host/db")
        return url


class TrackingConfig(_Section):
    """Where MLflow records go; null = ``sqlite:///<cwd>/mlflow.db``.

    .. code-block:: yaml

        tracking: {uri: http://127.0.0.1:5000}
    """

    uri: Optional[str] = None


class Config(_Section):
    """The whole file. Build it with :func:`load_config`, which also validates every searched value."""

    name: str = Field("pursuhint", min_length=1)
    seed: int = 0
    plugins: list[str] = Field(default_factory=list)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainRecipe = Field(default_factory=TrainRecipe)
    search: SearchConfig = Field(default_factory=SearchConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    # Not part of the file: filled by load_config.
    space: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True)
    searched_defaults: dict[str, Any] = Field(default_factory=dict, exclude=True)
    source: Optional[str] = Field(None, exclude=True)

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, modules: list[str]) -> list[str]:
        """Import each module (it registers its models, methods, ...) wherever the config is read: the
        CLI, and every Ray worker, which reads the sweep's config too."""
        for module in modules:
            import_plugin(module)
        return modules

    @model_validator(mode="after")
    def _name_is_safe(self) -> "Config":
        if any(c in self.name for c in "/\\\0"):
            raise ValueError(f"name {self.name!r} may not contain '/' or '\\'")
        return self

    def with_values(self, values: dict[str, Any]) -> "Config":
        """A copy with dotted keys set (e.g. a trial's sampled ``{"selection.n_hints": 3}``)."""
        raw = self.model_dump(mode="json")
        for key, value in values.items():
            set_path(raw, key, value)
        cfg = _validate(raw, self.source or "config")
        cfg.space = dict(self.space)
        cfg.source = self.source
        return cfg

    @property
    def run_seed(self) -> int:
        """The student run's seed (initialisation, data order, augmentation): ``train.seed``, else ``seed``."""
        return self.train.run_seed(self.seed)

    def section_hash(self, *sections: str) -> str:
        """A short content hash of the named sections (e.g. the teacher cache key); keys that only say where
        work runs (:data:`PLACEMENT_KEYS`) are left out, since they never change a result."""
        dump = self.model_dump(mode="json")
        for key in PLACEMENT_KEYS:
            section, _, leaf = key.rpartition(".")
            get_path(dump, section).pop(leaf, None)
        payload = json.dumps({s: get_path(dump, s) for s in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        raw = self.model_dump(mode="json")
        for key, spec in self.space.items():
            set_path(raw, key, spec)
        return yaml.safe_dump(raw, sort_keys=False)


# --------------------------------------------------------------------------- loading


def import_plugin(module: str) -> None:
    """Import ``module`` by its dotted name (from the working directory too, as ``python -m`` would); a
    ValueError (one config sentence with the import error's own message) if it cannot be imported."""

    try:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            cwd = str(Path.cwd())
            if exc.name != module.split(".")[0] or cwd in sys.path:
                raise
            sys.path.insert(0, cwd)  # the console script does not put the working directory on sys.path
            importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module: one sentence, its own message
        raise ValueError(f"cannot import plugin module {module!r} ({type(exc).__name__}: {exc}); install it, or "
                         f"put its folder on PYTHONPATH or run from it") from None


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> Config:
    """Read, validate and resolve a config file; any problem is one ConfigError sentence.

    ``overrides`` sets dotted keys after reading (CLI flags such as ``--n-hints``).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass the path of a YAML file "
                          f"such as search_spaces/digits_quick.yaml")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read ({exc})") from None
    return config_from_text(text, source=str(p), overrides=overrides)


def config_from_text(text: str, source: str = "config", overrides: Optional[dict[str, Any]] = None) -> Config:
    """Like :func:`load_config`, from a YAML string."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a YAML mapping of sections (name, data, teacher, ...), "
                          f"not a {type(raw).__name__}")
    return config_from_dict(raw, source=source, overrides=overrides)


def config_from_dict(raw: dict[str, Any], source: str = "config",
                     overrides: Optional[dict[str, Any]] = None) -> Config:
    """Validate a plain dict as a config, extracting and checking its search-space leaves."""
    raw = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            if key == "plugins":  # --plugin adds to the config's own list
                value = list(dict.fromkeys(list(raw.get("plugins") or []) + list(value)))
            set_path(raw, key, value)
    space: dict[str, dict[str, Any]] = {}
    collect_specs(raw, "", space, source)
    defaults: dict[str, Any] = {}
    resolved = copy.deepcopy(raw)
    for key, spec in space.items():  # plain leaves first: a by_method leaf's default follows the method's
        if BY_METHOD not in spec:
            defaults[key] = default_for(key, spec)
            set_path(resolved, key, defaults[key])
    method = method_of(resolved, DistillConfig.model_fields["method"].default)
    check_by_method(space, method, source)
    for key, spec in space.items():
        if BY_METHOD in spec:
            defaults[key] = default_for(key, branch_for(spec, method))
            set_path(resolved, key, defaults[key])
    cfg = _validate(resolved, source)
    for key, value in cfg.search.baseline_values.items():  # each must be a key and value the config takes
        if key.startswith("search.") or is_spec(value):
            raise ConfigError(f"{source}: search.baseline_values.{key} must set a plain value of another section "
                              f"(e.g. distill.hint_weight: null)")
        try:
            _validate(with_path(resolved, key, value), source)
        except ConfigError as exc:
            raise ConfigError(f"search.baseline_values: {exc}") from None
    # Every value a sweep could sample must be valid too: check each choice and each range bound.
    for key, spec in space.items():
        for value in spec_probe_values(spec):
            _validate(with_path(resolved, key, value), source, searched=key)
    cfg.space = space
    cfg.searched_defaults = defaults
    cfg.source = source
    return cfg


# --------------------------------------------------------------------------- helpers


def _validate(raw: dict[str, Any], source: str, searched: Optional[str] = None) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_sentence(exc, raw, source, searched)) from None


def _one_sentence(exc: ValidationError, raw: dict[str, Any], source: str, searched: Optional[str]) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    where = f"{source}: "
    if err["type"] == "extra_forbidden":
        parent_model = _model_at(loc[:-1])
        valid = list(parent_model.model_fields) if parent_model else []
        valid = [v for v in valid if v not in ("space", "searched_defaults", "source")]
        hint = did_you_mean(loc[-1], valid, prefix="".join(f"{p}." for p in loc[:-1]))
        return f"{where}unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"
    value = err.get("input")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    during = f" (a value the search space for {searched!r} can take)" if searched else ""
    return f"{where}{key} = {value!r} is invalid{during}: {msg}"


def _model_at(loc: list[str]) -> Optional[type[BaseModel]]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model
