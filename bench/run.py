"""Run pursuhint's benchmarks, merge their entries into bench/results.json, refresh docs/benchmarks.md.

    python bench/run.py [--quick] [--only NAME[,NAME]] [--output PATH] [--docs PATH] [--render]

A benchmark is a module ``bench/<name>.py`` (a micro-benchmark) or ``bench/experiments/<name>.py`` (a long
research experiment) exposing ``NAME``, ``TITLE`` and ``run(quick) -> dict`` (the results.json entry: figures,
headline ``ratio``, ``machine``, ``date``, ``quick``, ``command``, and optionally ``tables`` and ``notes`` for
the Markdown).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/run.py` from a checkout: make `bench` and `pursuhint` importable
    sys.path.insert(0, str(ROOT))

from bench.common import fmt  # noqa: E402
from pursuhint.infra.fileio import write_text_atomic  # noqa: E402

BENCHMARKS = ("selection_speed", "input_pipeline", "distill_step", "step_syncs", "hint_calibration", "sweep_overhead",
              "asha_savings", "search_waste",
              "selection_quality", "selection_quality_natural", "gpu", "hint_ratio_transfer", "decisive_answers", "cohorts")
EXPERIMENTS = ("search_waste", "selection_quality", "selection_quality_natural", "hint_ratio_transfer",
               "decisive_answers")  # the long research experiments, in bench/experiments/
DEFAULT_OUTPUT = ROOT / "bench" / "results.json"
DEFAULT_DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN generated:{name} -->", "<!-- END generated:{name} -->"


class BenchUsageError(Exception):
    """A bad command line: one sentence naming the bad value and what is valid."""


def load_module(name: str):
    """The benchmark module: ``bench.experiments.<name>`` for an experiment, else ``bench.<name>``."""
    return importlib.import_module(f"bench.experiments.{name}" if name in EXPERIMENTS else f"bench.{name}")


def parse_only(value: str | None) -> list[str]:
    """The benchmarks to run: ``--only a,b`` (each a known name) or all of them."""
    if not value:
        return list(BENCHMARKS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad or not names:
        raise BenchUsageError(f"unknown benchmark {bad[0] if bad else value!r}; valid: {', '.join(BENCHMARKS)}")
    return names


def variant(module, quick: bool, tiny: bool) -> str:
    """Which sizes ``module`` runs at: tiny (only where its ``run`` accepts it), quick or full."""
    return "tiny" if tiny and "tiny" in inspect.signature(module.run).parameters else "quick" if quick else "full"


def run_one(module, quick: bool, tiny: bool) -> dict[str, Any]:
    """Call ``module.run`` (with ``tiny`` when it accepts it) and add the wall time it took."""
    kwargs = {"tiny": True} if variant(module, quick, tiny) == "tiny" else {}
    t0 = time.perf_counter()
    entry = module.run(quick, **kwargs)
    entry["wall_s"] = round(time.perf_counter() - t0, 1)
    return entry


def read_results(path: Path) -> dict[str, Any]:
    """The entries already in ``path`` ({} when it does not exist)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so a crash leaves the old file."""
    write_text_atomic(path, text)


# ------------------------------------------------------------------------------------------------
# Markdown


def render_table(t: dict[str, Any]) -> str:
    head = "| " + " | ".join(t["columns"]) + " |"
    rule = "|" + "|".join("---" for _ in t["columns"]) + "|"
    rows = ["| " + " | ".join(fmt(c) for c in row) + " |" for row in t["rows"]]
    return "\n".join([f"**{t['title']}**", "", head, rule, *rows])


def render_machine(m: dict[str, Any]) -> str:
    dev = m.get("device_name", m.get("device", "?"))
    load = m.get("load_avg_1m")
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')} "
            f"({m.get('torch_threads', '?')} threads), device {dev}"
            + ("" if load is None else f"; 1-minute load average {load} when it finished"))


def render_entry(name: str, entry: dict[str, Any] | None) -> str:
    """The generated Markdown block of one benchmark."""
    if entry is None:
        return f"No result yet: run `python bench/run.py --only {name}`."
    mode = "quick run" if entry.get("quick") else "full run"
    if entry.get("tiny"):
        mode = "tiny smoke-test run (sizes far below the benchmark's own)"
    met = entry.get("aim_met")
    lines = [
        f"**Headline ratio: {fmt(entry.get('ratio'))}** — {entry.get('ratio_definition', '')}.",
        f"Aim: {entry.get('aim', '—')}" + ("" if met is None else f" — **{'met' if met else 'missed'}**."),
        "",
        f"- Command: `{entry.get('command', '')}` ({mode}, {fmt(entry.get('wall_s'))} s)",
        f"- Machine: {render_machine(entry.get('machine', {}))}",
        f"- Date: {entry.get('date', '?')}",
    ]
    for t in entry.get("tables", []):
        lines += ["", render_table(t)]
    notes = entry.get("notes", [])
    if notes:
        lines += ["", "How it was measured:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


DOC_HEAD = """# Benchmarks

Generated parts of this page come from `bench/results.json`, written by `python bench/run.py
[--quick] [--only NAME[,NAME]]`; each section's command reproduces its figures. Every timing is
the median of several repeats after a warm-up and every headline is a **ratio against a baseline
measured in the same run**: the machine is shared (other people run tests on the same cores while
a benchmark runs), so absolute seconds vary from run to run while ratios measured side by side
(interleaved repeats) hold much better. Text outside the generated blocks is written by hand.
"""


def refresh_docs(path: Path, results: dict[str, Any]) -> None:
    """Rewrite the generated block of every benchmark in ``path``, keeping all hand-written text.

    A missing file is created with a heading per benchmark; a missing block is appended.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else DOC_HEAD
    for k, name in enumerate(BENCHMARKS, 1):
        block = render_entry(name, results.get(name))
        begin, end = BEGIN.format(name=name), END.format(name=name)
        if begin in text and end in text:
            pre, rest = text.split(begin, 1)
            _, post = rest.split(end, 1)
            text = f"{pre}{begin}\n{block}\n{end}{post}"
        else:
            title = load_module(name).TITLE
            text = text.rstrip("\n") + f"\n\n## {k}. {title} (`{name}`)\n\n{begin}\n{block}\n{end}\n"
    write_atomic(path, text if text.endswith("\n") else text + "\n")


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes; all benchmarks within 10 minutes")
    parser.add_argument("--only", help=f"comma-separated benchmarks to run, from: {', '.join(BENCHMARKS)}")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON to merge into")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="Markdown page to refresh")
    parser.add_argument("--render", action="store_true", help="only refresh the Markdown from the JSON; run nothing")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke-test sizes (tests only)
    args = parser.parse_args(argv)
    if args.render:
        refresh_docs(args.docs, read_results(args.output))
        print(f"wrote {args.docs} from {args.output}")
        return 0
    try:
        names = parse_only(args.only)
    except BenchUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    results = read_results(args.output)
    failed = []
    for name in names:
        module = load_module(name)
        print(f"[run ] {name} ({variant(module, args.quick, args.tiny)}) …", flush=True)
        try:
            entry = run_one(module, args.quick, args.tiny)
        except Exception:  # noqa: BLE001 - report and go on with the other benchmarks
            traceback.print_exc()
            failed.append(name)
            continue
        entry.setdefault("name", name)
        results[name] = entry
        write_atomic(args.output, json.dumps(results, indent=2, allow_nan=False) + "\n")
        if entry.get("skipped"):  # nothing measured: say why (the entry's first note)
            print(f"[skip] {name}: {(entry.get('notes') or ['skipped'])[0]}", flush=True)
        else:
            print(f"[done] {name}: ratio {fmt(entry.get('ratio'))} in {entry['wall_s']} s", flush=True)
    write_atomic(args.output, json.dumps(results, indent=2, allow_nan=False) + "\n")
    refresh_docs(args.docs, results)
    print(f"wrote {args.output} and {args.docs}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
