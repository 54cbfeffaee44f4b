"""The ``pursuhint`` command: parse arguments, call the library, print. Nothing imports this module."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from . import __version__
from .config import Config, config_from_text, import_plugin, load_config
from .plots import confirmation_plot, layer_atlas, sweep_comparison
from .config.grammar import describe_defaults
from .preflight import preflight
from .errors import ConfigError, PursuhintError, SweepInterrupted
from .tracking import scrub

if TYPE_CHECKING:
    from .export import ShapeProbe
    from .search.record import SweepRecord

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as the handler of subcommand ``name``."""
    def add(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn
    return add


def _load(args: argparse.Namespace, overrides: Optional[dict] = None, student: bool = True,
          sweep: bool = False) -> Config:
    """Validate the whole config (values, names, search space, hint counts) before any work starts; a sweep
    whose space is partly untrainable starts, saying in one line which trials will end ``invalid``."""
    overrides = {**(overrides or {}), "plugins": getattr(args, "plugin", None) or None}
    cfg = load_config(args.config, overrides=overrides)
    untrainable = preflight(cfg, student=student, sweep=sweep)
    if untrainable:
        print(f"pursuhint: note: part of the search space cannot be trained, so its trials will end invalid: "
              f"{'; '.join(untrainable)}", file=sys.stderr)
    return cfg


def _say_defaults(cfg: Config, skip: Sequence[str] = ()) -> None:
    for line in describe_defaults(cfg):
        if not any(line.startswith(k) for k in skip):
            print(f"note: {line}", file=sys.stderr)


@command("train-teacher")
def cmd_train_teacher(args: argparse.Namespace) -> int:
    from .train.teacher import export_teacher, teacher_cache_dir, train_teacher  # torch: deferred, cheap --help

    cfg = _load(args)
    _say_defaults(cfg)
    cached = teacher_cache_dir(cfg) / "teacher.pt"
    if cached.exists():
        print(f"teacher already trained for this config: {cached}")
    path = train_teacher(cfg, progress=not args.quiet)
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"teacher {meta['arch']} on {meta['dataset']}: val_acc {meta['val_acc']:.2f}% "
          f"(best {meta['best_val_acc']:.2f}%), sha256 {meta['sha256'][:12]}")
    print(f"checkpoint: {path}")
    if args.output:
        dest = export_teacher(path, Path(args.output))
        print(f"copied to: {dest}")
    return 0


def _hint_table(inputs, hint_set, default) -> str:
    """One row per candidate layer: position, name, stage, shape, cluster, and which are hints."""
    chosen, base = set(hint_set.indices), set(default.indices)
    rows = [("#", "layer", "stage", "channels", "spatial", "cluster", "hint", "default")]
    for layer in inputs.layers:
        cluster = "" if hint_set.membership is None else str(hint_set.membership[layer.index] + 1)
        rows.append((str(layer.index + 1), layer.name, str(layer.stage + 1), str(layer.channels),
                     "x".join(map(str, layer.spatial)), cluster,
                     "*" if layer.index in chosen else "", "o" if layer.index in base else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


@command("select")
def cmd_select(args: argparse.Namespace) -> int:
    from .hints.pipeline import choose_hints, prepare_selection, resolve_n_hints  # torch: deferred, cheap --help
    from .train.teacher import dataset_for, load_teacher, runs_dir

    overrides = {"selection.similarity": args.similarity, "selection.n_hints": args.n_hints,
                 "selection.algorithm": args.algorithm, "selection.center": args.center}
    cfg = _load(args, overrides, student=False)
    _say_defaults(cfg)
    sel = cfg.selection
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, ds=ds, progress=not args.quiet)
    k = resolve_n_hints(sel.n_hints, cfg.student.arch, ds)
    inputs = prepare_selection(teacher.model, teacher.arch, teacher.sha256, ds, [sel.similarity],
                               probe_size=cfg.data.probe_size, granularity=sel.granularity, preact=sel.preact,
                               rbf_max_samples=sel.rbf_max_samples, progress=not args.quiet)
    hs = choose_hints(inputs, sel.similarity, k, sel.algorithm, sel.center, seed=cfg.seed,
                      on_collision=sel.on_collision)
    default = inputs.default()
    mode = "paper mode" if hs.paper_mode else "extension"
    print(f"teacher {teacher.arch} ({len(inputs.layers)} candidate layers, sha256 {teacher.sha256[:12]}); "
          f"similarity {sel.similarity} over {cfg.data.probe_size} probe images; "
          f"{sel.algorithm}/{sel.center}, K={k} ({mode})")
    print(_hint_table(inputs, hs, default))
    print(f"hints (*):   {', '.join(hs.layers)}  [positions {', '.join(str(i + 1) for i in hs.indices)}]")
    print(f"default (o): {', '.join(default.layers)}  [positions {', '.join(str(i + 1) for i in default.indices)}]")
    for warning in hs.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out = Path(args.output) if args.output else (
        runs_dir() / "hints" / f"{cfg.name}_{sel.similarity}_{sel.algorithm}_{sel.center}_k{k}.json")
    hs.save(out)
    print(f"hint set: {out}")
    if args.plot:
        layer_atlas(inputs.matrices[sel.similarity], hs, Path(args.plot), default=default)
        print(f"layer atlas: {args.plot}")
    return 0


def _recipe_lines(cfg: Config, recipe: dict[str, Any], cli: dict[str, Any]) -> list[str]:
    """One line per recipe key: the value trained with and where it came from."""
    from .hints.hintset import RECIPE  # torch: deferred, cheap --help

    lines = []
    for key in RECIPE.values():
        section, _, leaf = key.partition(".")
        value = getattr(getattr(cfg, section), leaf)
        where = "command line" if cli.get(key) is not None else "hint set" if key in recipe else "config"
        lines.append(f"  {key} = {value!r}  ({where})")
    return lines


@command("distill")
def cmd_distill(args: argparse.Namespace) -> int:
    from .hints import HintSet  # torch: deferred, cheap --help

    hint_file = None
    if args.hints not in ("default", "none"):
        hint_file = HintSet.load(args.hints)  # refuse a malformed file before any work
    cli = {"distill.method": args.method, "train.epochs": args.epochs}
    recipe = hint_file.recipe if hint_file is not None and args.recipe == "hint-set" else {}
    cfg = _load(args, {**recipe, **{k: v for k, v in cli.items() if v is not None}})
    _say_defaults(cfg)
    if recipe:
        print(f"recipe of the hint set's trial {hint_file.provenance.get('trial_id', '?')} (`--recipe config` "
              f"takes the config's instead):")
        print("\n".join(_recipe_lines(cfg, recipe, cli)))
    with _torch_threads(_rerun_threads(args, hint_file)):
        return _distill(args, cfg, hint_file, recipe)


def _rerun_threads(args: argparse.Namespace, hint_file: Any) -> Optional[int]:
    """The torch thread count ``distill`` trains with: ``--threads``, else the one the hint set's trial trained
    with (CPU results differ in the last bits with another count), else torch's default (None)."""
    prov = hint_file.provenance if hint_file is not None else {}
    here = "cuda" if _cuda() else "cpu"
    if prov.get("device_type") and prov["device_type"] != here:
        print(f"pursuhint: warning: the hint set's trial trained on {prov['device_type']}, this run on {here}: "
              f"its accuracy will not be reproduced bit for bit", file=sys.stderr)
    if args.threads:
        return int(args.threads)
    if prov.get("threads"):
        n = int(prov["threads"])
        print(f"torch threads: {n}, as the hint set's trial trained with, so its result is reproduced exactly on "
              f"the same device type (--threads N overrides)")
        return n
    return None


def _cuda() -> bool:
    import torch  # torch: deferred, cheap --help

    return torch.cuda.is_available()


@contextmanager
def _torch_threads(n: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` (unchanged when None) for the block, then restored."""
    import torch  # torch: deferred, cheap --help

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _distill(args: argparse.Namespace, cfg: Config, hint_file: Any, recipe: dict[str, Any]) -> int:
    """``distill``'s training and report, once the config and hint file are read."""
    from .train.student import kd_only_config, save_student, train_student  # torch: deferred, cheap --help
    from .hints.pipeline import teacher_default_hints
    from .train.teacher import dataset_for, load_teacher, runs_dir

    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, ds=ds, progress=not args.quiet)
    if args.hints == "none":
        hs, label = None, "none"
        cfg = kd_only_config(cfg)
    elif args.hints == "default":
        hs, label = teacher_default_hints(teacher.model, teacher.arch, teacher.sha256, ds,
                                          cfg.selection.granularity), "default"
    else:
        hs, label = hint_file, Path(args.hints).stem
        hs.check_teacher(teacher.sha256)
    key = cfg.section_hash("student", "distill", "train", "data", "seed", "selection.granularity")
    hints_key = "none" if hs is None else "-".join(map(str, hs.indices))
    out = Path(args.output) if args.output else runs_dir() / "students" / cfg.name / f"{label}-{hints_key}-{key}"
    if (out / "result.json").exists():
        summary = json.loads((out / "result.json").read_text())
        print(f"already trained: {out / 'result.json'}")
    else:
        result = train_student(cfg, hs, teacher.model, ds, teacher_sha256=teacher.sha256, out_dir=out,
                               progress=not args.quiet)
        meta = {"student_arch": cfg.student.arch, "teacher_arch": teacher.arch,
                "teacher_sha256": teacher.sha256, "hints": label,
                "hint_layers": [] if hs is None else hs.layers, "dataset": ds.name}
        _, res = save_student(result, out, meta)
        summary = json.loads(res.read_text())
        for leftover in ("student_state.pt", "student_state.pt.prev"):
            (out / leftover).unlink(missing_ok=True)
    pairs = ", ".join(f"{p['teacher']}→{p['student']}" for p in summary["hint_pairs"]) or "none"
    print(f"student {cfg.student.arch} ← teacher {teacher.arch} [{summary['method']}], hints {label}: {pairs}")
    recorded = str((hint_file.provenance if hint_file is not None else {}).get("student_layers") or "")
    paired = ",".join(p["student"] for p in summary["hint_pairs"])
    if recipe and recorded and paired and recorded != paired:
        print(f"pursuhint: warning: the hint set's trial paired its hints with student layers {recorded}, this run "
              f"with {paired} (distill.mapping or the student differ)", file=sys.stderr)
    print(f"status {summary['status']}; val_acc {summary['final_val_acc']:.2f}% (best {summary['best_val_acc']:.2f}%) "
          f"after {summary['epochs']} epochs, {summary['seconds']:.1f}s")
    if summary["status"] != "completed":
        print(f"pursuhint: training {summary['status']}: {summary.get('message', '')}", file=sys.stderr)
        return 1
    print(f"student: {out / 'student.pt'}\nresult:  {out / 'result.json'}")
    return 0


@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    from .search.columns import format_leaderboard  # torch: deferred, cheap --help (as Ray, in search.sweep)
    from .search.confirm import format_table
    from .search.parent_run import runs_table_address
    from .search.results import search_stage_label
    from .search.sweep import run_sweep

    overrides = {"search.num_samples": args.num_samples}
    cfg = _load(args, overrides, sweep=True)
    result = run_sweep(cfg, address=args.address, resume=args.resume, overwrite=args.overwrite,
                       num_samples=args.num_samples,
                       tracking_uri=args.tracking_uri, storage_path=args.storage_path,
                       verbose=0 if args.quiet else 1, progress=not args.quiet)
    rows = result.leaderboard  # read from Tune's results, which hold everything even if MLflow went away
    if result.confirmation:
        print("\n" + format_table(result.confirmation))
    print(f"\nsweep {cfg.name}: {len(rows)} trials (Tune results: {result.experiment_dir})")
    if rows:
        print(search_stage_label(rows))
        print(format_leaderboard(rows))
    print(f"\nbrowse it: mlflow ui --backend-store-uri {result.tracking_uri}")
    runs_table = runs_table_address(result.tracking_uri, result.parent_run_id)
    if runs_table:
        print(f"then open the runs table: {runs_table}  (the sweep's run holds report.html)")
    if result.optuna_storage:
        print(f"the Optuna study {cfg.name!r}: optuna-dashboard {result.optuna_storage}")
    return 0


def _importances(record: "SweepRecord", rows: list) -> Any:
    """The sweep's parameter importances, printed; or the one-line caveat, printed and returned instead."""
    from .search.importance import NoImportances, format_importances, param_importances  # torch: deferred

    try:
        values = param_importances(record.study_url(), record.name)
    except NoImportances as exc:
        print(f"\n{exc}")
        return str(exc)
    print("\n" + format_importances(values, rows[0].metric if rows else "final"))
    return values


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from .search.columns import format_leaderboard  # torch: deferred, cheap --help
    from .search.confirm import format_table
    from .search.record import SweepRecord
    from .search.report import write_report
    from .search.results import search_stage_label

    record = SweepRecord(args.name, args.tracking_uri, args.storage_path)
    if args.sync:
        exp_dir, uri, summary = record.sync()
        print(f"synced {exp_dir} → MLflow {uri}: {summary}")
    table = record.confirmation()
    if table:
        print(format_table(table) + "\n")
    rows, where = record.rows()
    print(f"sweep {args.name}: {len(rows)} trials ({where})")
    print(search_stage_label(rows))
    print(format_leaderboard(rows, args.top))
    importances = _importances(record, rows)
    if args.html:
        path = write_report(Path(args.html), args.name, rows, confirmation=table, importances=importances,
                            tracking_uri=record.uri, source=scrub(where), limit=args.top)
        print(f"report page: {path}")
    if args.plot:
        if table:
            confirmation_plot(table, Path(args.plot))
        else:
            sweep_comparison(rows, Path(args.plot))
        print(f"comparison plot: {args.plot}")
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from .export import write_hint_sets  # torch: deferred, cheap --help
    from .search.record import SweepRecord

    record = SweepRecord(args.name, args.tracking_uri, args.storage_path)
    table = record.confirmation() if args.stage == "confirm" else None
    if table and table.get("configurations"):
        sets, where = record.hint_sets(args.top, table)
        print(f"pursuhint: ranked by the confirmation stage ({table['n_seeds']} seeds, test split)", file=sys.stderr)
    else:
        sets, where = record.hint_sets(args.top)
        print("pursuhint: warning: ranked by the search stage: one seed, scored on the selection split; "
              + ("" if args.stage == "search" else "this sweep has no confirmation stage; ")
              + "a confirmed ranking needs search.confirm.top_k > 0", file=sys.stderr)
    if not sets:
        raise PursuhintError(f"sweep {args.name!r} has no finished trial with a hint set to export yet ({where})")
    if table and table.get("configurations") and len(sets) < args.top:
        print(f"pursuhint: writing {len(sets)} hint set(s), not {args.top}: the confirmation stage confirmed "
              f"{len(table['configurations'])} configuration(s) (search.confirm.top_k); `--stage search --top "
              f"{args.top}` ranks the search's trials instead (one seed each, selection split)", file=sys.stderr)
    probe = _shape_probe(record) if args.format == "torchdistill" else None
    for path in write_hint_sets(sets, Path(args.output), args.format, probe=probe):
        print(path)
    return 0


def _shape_probe(record: "SweepRecord") -> Optional["ShapeProbe"]:
    """The sweep's teacher and student (fresh weights) at its data's input shape, so that a torchdistill
    fragment knows its pairs' feature shapes (connectors, pairs torchdistill cannot compare); None, with a
    warning, when the sweep's config or data set cannot be read here."""
    from .export import ShapeProbe  # torch: deferred, cheap --help

    try:
        return ShapeProbe.from_config(config_from_text(record.config_yaml()))
    except Exception as exc:  # noqa: BLE001 - the fragment is still written, with its pairs unchecked
        print(f"pursuhint: warning: cannot build the sweep's models to learn the hint pairs' shapes ({exc}); "
              f"the torchdistill fragment leaves FitNet/VID connectors out and does not check pair sizes",
              file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per step of the workflow, each with ``--plugin``."""
    parser = argparse.ArgumentParser(
        prog="pursuhint",
        description="Find where a student should learn from its teacher (PURSUhInT hint points), "
                    "and search around it with Ray Tune, Optuna and MLflow.")
    parser.add_argument("--version", action="version", version=f"pursuhint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_single_run_commands(sub)
    _add_sweep_command(sub)
    _add_result_commands(sub)
    for p in sub.choices.values():
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="import MODULE first, so the models, methods, similarities and clusterings it registers "
                            "exist (repeatable; added to the config's `plugins`, so Ray workers import it too)")
    return parser


def _add_single_run_commands(sub: Any) -> None:
    """``train-teacher``, ``select`` and ``distill``: one step each, without Ray."""
    p = sub.add_parser("train-teacher", help="train the config's teacher once (cached by config hash)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("-o", "--output", help="also copy the final checkpoint here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("select", help="choose hint points for the config's teacher and save the hint set")
    p.add_argument("config", help="YAML config file")
    p.add_argument("-o", "--output", help="hint set JSON (default runs/hints/<name>_<similarity>_..._k<K>.json)")
    p.add_argument("--plot", metavar="PNG", help="also draw the layer atlas (similarity heatmap, clusters, hints)")
    p.add_argument("--similarity", help="similarity measure (overrides selection.similarity)")
    p.add_argument("--n-hints", type=int, help="number of hint points K (overrides selection.n_hints)")
    p.add_argument("--algorithm", help="clustering (overrides selection.algorithm)")
    p.add_argument("--center", help="center rule (overrides selection.center)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("distill", help="train the config's student from its teacher through a hint set")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--hints", default="default",
                   help="a hint set JSON/YAML file, 'default' (last block of each stage) or 'none' (KD/CE only)")
    p.add_argument("--method", help="distillation method (overrides distill.method)")
    p.add_argument("--epochs", type=int, help="student epochs (overrides train.epochs)")
    p.add_argument("--threads", type=int, help="torch threads (default: the hint set's trial's, else torch's)")
    p.add_argument("--recipe", default="hint-set", choices=["hint-set", "config"],
                   help="train with the recipe an exported hint set records (method, weights, lr, epochs, seed; "
                        "default), or with the config's")
    p.add_argument("-o", "--output", help="output folder (default runs/students/<name>/<hints>-<hash>)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_sweep_command(sub: Any) -> None:
    """``sweep``: the search (and confirmation) on Ray Tune."""
    p = sub.add_parser("sweep", help="search hint points, clustering and distillation methods with Ray Tune")
    p.add_argument("config", help="YAML config file (its spec leaves are the search space)")
    p.add_argument("--address", help="Ray cluster address (e.g. auto, ray://host:10001); default: a local Ray")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep of the same name")
    p.add_argument("--overwrite", action="store_true",
                   help="start again a sweep whose Tune results already exist (MLflow keeps the old runs)")
    p.add_argument("--num-samples", type=int, help="searched trials (overrides search.num_samples)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default tracking.uri, else sqlite:///./mlflow.db)")
    p.add_argument("--storage-path", help="Tune results folder (default ./runs/ray_results; shared storage "
                                          "on a multi-node cluster)")
    p.add_argument("-q", "--quiet", action="store_true", help="less output")


def _add_result_commands(sub: Any) -> None:
    """``report`` and ``export``: read a sweep's results (MLflow, else Tune's folder)."""
    for name, text in (("report", "print a sweep's leaderboard (and a comparison plot)"),
                       ("export", "write the best hint sets of a sweep for other training code")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="the sweep's name (the config's `name`)")
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlflow.db)")
        p.add_argument("--storage-path", help="Tune results folder, used when MLflow is unreachable")
        p.add_argument("--top", type=int, default=None if name == "report" else 1,
                       help="how many rows / hint sets")
        if name == "report":
            p.add_argument("--plot", metavar="PNG", help="also draw each trial against the baselines")
            p.add_argument("--html", metavar="FILE", help="also write the whole report as one self-contained HTML "
                                                          "page (tables, plots, layer atlases, importances)")
            p.add_argument("--sync", action="store_true",
                           help="first write into MLflow what it missed (e.g. the server was away mid-sweep) "
                                "from Tune's results")
        else:
            p.add_argument("--format", default="json", choices=["json", "yaml", "torchdistill"])
            p.add_argument("--stage", default="confirm", choices=["confirm", "search"],
                           help="rank by the confirmation stage (default, when the sweep has one) or by the "
                                "search stage (one seed, selection split)")
            p.add_argument("-o", "--output", default="exported_hints", help="output folder")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        for module in args.plugin:  # before any config is read: its names may come from these modules
            try:
                import_plugin(module)
            except ValueError as exc:
                raise ConfigError(f"--plugin: {exc}") from None
        return COMMANDS[args.command](args)
    except SweepInterrupted as exc:
        print(f"pursuhint: {exc}", file=sys.stderr)
        return 130
    except PursuhintError as exc:
        print(f"pursuhint: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pursuhint: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
