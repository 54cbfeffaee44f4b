"""The search-space grammar of a config: which leaves are specs (``{choice: [...]}``, ``{randint: [a, b]}``,
``{uniform: [a, b]}``, ``{loguniform: [a, b]}``, ``{quniform: [a, b, q]}``, ``{by_method: {...}}``), how each
is checked, the value commands other than ``sweep`` use for it, and the values it may take.

Kept apart from the schema (``pursuhint.config``) so that either can be read alone; config uses these.

.. code-block:: yaml

    selection: {similarity: {choice: [r2_cca, cka_linear]}, n_hints: {randint: [2, 4]}}
    distill: {hint_ratio: {by_method: {at: {loguniform: [0.3, 3]}, default: 1.0}}}
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Config

SPEC_KINDS = ("choice", "randint", "uniform", "loguniform", "quniform")
BY_METHOD = "by_method"  # a leaf whose spec depends on the sampled distill.method
OTHER_METHODS = "default"  # the by_method branch of methods it does not name

# Paper defaults for searched keys that commands other than `sweep` use (docs/method.md §3–§5).
PAPER_DEFAULTS: dict[str, Any] = {
    "selection.similarity": "r2_cca",
    "selection.n_hints": None,  # the student's number of stages
    "selection.algorithm": "pursuhint",
    "selection.center": "mean_index",
}


def branch_for(spec: dict[str, Any], method: str) -> dict[str, Any]:
    """The spec a leaf has under ``method``: its by_method branch (or the ``default`` one), else itself."""
    if BY_METHOD not in spec:
        return spec
    branches = spec[BY_METHOD]
    return branches.get(method, branches.get(OTHER_METHODS, {}))


def leaf_values(cfg: "Config", key: str, searched: bool = True) -> list[Any]:
    """Every value leaf ``key`` may take: its choices when it is searched (a by_method leaf's from every
    branch), else its one value. Name checks and preflight ask this, never the spec."""
    spec = cfg.space.get(key) if searched else None
    if spec:
        branches = list(spec[BY_METHOD].values()) if BY_METHOD in spec else [spec]
        if all("choice" in b for b in branches):
            return list(dict.fromkeys(v for b in branches for v in b["choice"]))
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return [node]


def method_defaults(cfg: "Config", method: str) -> dict[str, Any]:
    """The searched defaults of a trial that trains ``method`` (by_method leaves take its branch's default);
    the baseline trials of each method use them."""
    out = dict(cfg.searched_defaults)
    for key, spec in cfg.space.items():
        branch = branch_for(spec, method)
        if BY_METHOD in spec and branch:  # no branch: a method outside the space (kd_only) keeps the default
            out[key] = default_for(key, branch)
    return out


def method_of(raw: dict[str, Any], default: str) -> str:
    """The distillation method a raw config names (``default`` when it names none)."""
    try:
        method = get_path(raw, "distill.method")
    except (KeyError, TypeError):
        method = None
    return method if isinstance(method, str) else default


def check_by_method(space: dict[str, dict[str, Any]], method: str, source: str) -> None:
    """Every method the sweep may train needs a branch (or ``default:``) in each by_method leaf."""
    method_spec = space.get("distill.method", {})
    if BY_METHOD in method_spec:
        raise ConfigError(f"{source}: distill.method cannot itself be by_method; give it a value or a choice")
    methods = list(method_spec.get("choice", [method]))
    for key, spec in space.items():
        if BY_METHOD not in spec:
            continue
        missing = [m for m in methods if m not in spec[BY_METHOD] and OTHER_METHODS not in spec[BY_METHOD]]
        if missing:
            raise ConfigError(f"{source}: {key} has by_method branches for {', '.join(sorted(spec[BY_METHOD]))} "
                              f"but the sweep may train {', '.join(map(repr, missing))}; add a branch for it or "
                              f"a `default:` branch")


def default_for(key: str, spec: dict[str, Any]) -> Any:
    """The value non-sweep commands use for a searched key: the paper's default when the space
    allows it, else the first choice, the low end of a randint, the middle of a range."""
    kind, args = next(iter(spec.items()))
    if key in PAPER_DEFAULTS:
        paper = PAPER_DEFAULTS[key]
        if paper is None or (kind == "choice" and paper in args):
            return paper
    if kind == "choice":
        return args[0]
    if kind == "randint":
        return int(args[0])
    if kind == "uniform":
        return (args[0] + args[1]) / 2
    if kind == "loguniform":
        return math.sqrt(args[0] * args[1])
    low, high, q = args
    return round(((low + high) / 2) / q) * q


def describe_defaults(cfg: "Config") -> list[str]:
    """Lines saying which searched keys took which default (commands other than sweep print them)."""
    lines = []
    for key, value in cfg.searched_defaults.items():
        shown = "the student's number of stages" if value is None else repr(value)
        lines.append(f"{key} is searched in this config; using {shown} here "
                     f"(`pursuhint sweep` searches it)")
    return lines


def is_spec(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPEC_KINDS + (BY_METHOD,)


def collect_specs(node: Any, prefix: str, out: dict[str, dict[str, Any]], source: str) -> None:
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        path = f"{prefix}{key}"
        if is_spec(value):
            out[path] = check_spec(path, value, source)
        elif isinstance(value, dict):
            collect_specs(value, path + ".", out, source)


def check_spec(key: str, spec: dict[str, Any], source: str, branch: bool = False) -> dict[str, Any]:
    kind, args = next(iter(spec.items()))
    bad = f"{source}: {key} has an invalid search space {{{kind}: {args!r}}}: "
    if kind == BY_METHOD:
        if branch:
            raise ConfigError(bad + "by_method branches cannot hold another by_method")
        if not isinstance(args, dict) or not args:
            raise ConfigError(bad + "by_method needs a mapping of method names (or default) to a spec or a value, "
                                    "e.g. {by_method: {at: {loguniform: [0.3, 3]}, default: 1.0}}")
        branches = {}
        for method, value in args.items():
            if isinstance(value, (dict, list)) and not is_spec(value):
                raise ConfigError(bad + f"the branch for {method!r} must be a search-space spec or a plain value")
            branches[str(method)] = (check_spec(f"{key}.by_method.{method}", value, source, branch=True)
                                     if is_spec(value) else {"choice": [value]})
        return {BY_METHOD: branches}
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(bad + "choice needs a non-empty list of values")
        if any(isinstance(a, (dict, list)) for a in args):
            raise ConfigError(bad + "choice values must be scalars")
        return {kind: list(args)}
    need = 3 if kind == "quniform" else 2
    if not isinstance(args, list) or len(args) != need or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        form = "[low, high, q]" if kind == "quniform" else "[low, high]"
        raise ConfigError(bad + f"{kind} needs a list of {need} numbers {form}")
    low, high = args[0], args[1]
    if kind == "randint":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise ConfigError(bad + "randint bounds must be integers")
        if low > high:
            raise ConfigError(bad + f"low {low} is greater than high {high}")
        return {kind: [int(low), int(high)]}
    if low >= high:
        raise ConfigError(bad + f"low {low} must be smaller than high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(bad + f"loguniform bounds must be > 0 (got low {low})")
    if kind == "quniform" and args[2] <= 0:
        raise ConfigError(bad + f"quniform step q must be > 0 (got {args[2]})")
    return {kind: [float(a) for a in args]}


def spec_probe_values(spec: dict[str, Any]) -> list[Any]:
    kind, args = next(iter(spec.items()))
    if kind == BY_METHOD:
        return [v for branch in args.values() for v in spec_probe_values(branch)]
    if kind == "choice":
        return list(args)
    return [args[0], args[1]]


def with_path(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    set_path(out, key, value)
    return out


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def get_path(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node
