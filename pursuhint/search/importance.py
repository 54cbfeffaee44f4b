"""The sweep's Optuna study, kept in an RDB storage (``optuna.load_study`` and optuna-dashboard open it), and
what it says about the searched keys: fANOVA parameter importances for the ranking metric.

The study's objective is what ``searcher.BaselinesFirst`` tells Optuna: each searched trial's last (``search.metric:
final``) or best (``best``) selection-split accuracy; baselines are not Optuna trials.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

from ..config import Config
from ..errors import NoImportances, PursuhintError  # noqa: F401 (NoImportances: re-exported)
from ..tracking import scrub
from .columns import SHORT_NAMES
from .space import BRANCH_SEP

STUDY_FILE = "optuna.db"  # the default storage: a SQLite file in the sweep's Tune results folder
MIN_TRIALS = 8  # fewer completed trials than this and fANOVA's forest says little


class Importances(OrderedDict):
    """Searched key (short name) → fANOVA importance, largest first, summing to 1; ``n_trials`` is the number of
    completed Optuna trials they were computed from."""

    def __init__(self, values: Any = (), n_trials: int = 0) -> None:
        super().__init__(values)
        self.n_trials = n_trials


def study_storage(cfg: Config, exp_dir: Optional[Path]) -> Optional[str]:
    """The sweep's Optuna storage URL: ``search.optuna_storage``, else ``sqlite:///<Tune folder>/optuna.db``;
    None (a study in memory) when Tune writes to remote storage and nothing was set."""
    if cfg.search.optuna_storage:
        return cfg.search.optuna_storage
    if exp_dir is None:
        return None
    return f"sqlite:///{Path(exp_dir).absolute() / STUDY_FILE}"


def sqlite_file(url: str) -> Optional[Path]:
    """The file of a ``sqlite:///`` URL (relative to the working folder, or absolute with four slashes)."""
    prefix = "sqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:") else None


def study_exists(url: str, name: str) -> bool:
    """Whether ``url`` holds a study named ``name`` (a SQLite file that does not exist is not created)."""
    import optuna  # optuna: loaded only when read

    path = sqlite_file(url)
    if path is not None and not path.is_file():
        return False
    return name in optuna.study.get_all_study_names(storage=url)


def open_storage(url: str) -> Any:
    """An Optuna RDB storage for ``url``; a SQLite file's folder is created first."""
    import optuna  # optuna: loaded only when read

    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def short_param_names(params: list[str]) -> dict[str, str]:
    """Optuna's parameter names (dotted keys, ``key@method`` for a by_method branch) → the names people read:
    ``selection.similarity`` → ``similarity``, ``distill.hint_ratio@at`` → ``hint_ratio@at``; a last component
    two keys share keeps its dotted path."""
    def short(key: str) -> str:
        return SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])

    def split(name: str) -> tuple[str, str]:
        key, _, branch = name.partition(BRANCH_SEP)
        return key, (BRANCH_SEP + branch if branch else "")

    counts: dict[str, int] = {}
    for name in params:
        key, branch = split(name)
        counts[short(key) + branch] = counts.get(short(key) + branch, 0) + 1
    out = {}
    for name in params:
        key, branch = split(name)
        out[name] = short(key) + branch if counts[short(key) + branch] == 1 else name
    return out


def param_importances(storage: Optional[str], study_name: str, *, min_trials: int = MIN_TRIALS,
                      seed: int = 0) -> Importances:
    """fANOVA importances (``FanovaImportanceEvaluator(seed)``) of the searched keys in the study ``study_name``
    at ``storage``, for its objective; keys sampled in only some trials (by_method branches of other methods) are
    left out, as Optuna does. Raises ``NoImportances`` with a one-line caveat when there is no study or fewer than
    ``min_trials`` completed trials."""
    import optuna  # optuna: loaded only when read
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances  # optuna: loaded only when read
    from optuna.trial import TrialState  # optuna: loaded only when read

    if storage is None:
        raise NoImportances("parameter importances: none, the Optuna study was kept in memory (Tune wrote to "
                            "remote storage); set search.optuna_storage to keep it")
    if not study_exists(storage, study_name):
        raise NoImportances(f"parameter importances: no Optuna study named {study_name!r} in {_plain(storage)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < min_trials:
        raise NoImportances(f"parameter importances: not shown, the Optuna study has {n} completed trial"
                            f"{'' if n == 1 else 's'} and needs at least {min_trials} for fANOVA to say anything")
    values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    if not values or sum(values.values()) <= 0:
        raise NoImportances(f"parameter importances: none, no searched key took more than one value in the "
                            f"{n} completed trials")
    names = short_param_names(list(values))
    ordered = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return Importances(((names[k], float(v)) for k, v in ordered), n_trials=n)


def format_importances(values: Importances, metric: str = "final") -> str:
    """The importances as text, one key a line with a bar, under a line saying what they explain."""
    what = "best epoch's" if metric == "best" else "last epoch's"
    lines = [f"Parameter importances (fANOVA over {values.n_trials} completed Optuna trials; objective: the "
             f"{what} val_acc on the selection split, search.metric: {metric}):"]
    width = max(len(k) for k in values)
    for key, value in values.items():
        lines.append(f"  {key:<{width}}  {value:5.3f}  {'#' * round(value * 40)}".rstrip())
    return "\n".join(lines)


def _plain(url: str) -> str:

    return scrub(url)
