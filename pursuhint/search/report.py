"""A sweep's report as one self-contained HTML page (``pursuhint report NAME --html FILE``, and ``report.html`` on
every sweep's parent run): the confirmation table, the search leaderboard, the comparison plots, the layer atlases
of the best and the default hints, and the parameter importances. Styles are inline and pictures are base64 PNG
data URIs, so the page opens anywhere, offline; every text is escaped."""

from __future__ import annotations

import base64
import io
import math
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .. import __version__
from ..baselines import BASELINE_LABELS
from ..errors import PursuhintError
from ..infra.fileio import write_text_atomic
from ..plots import confirmation_plot, sweep_comparison
from . import columns
from .hint_sets import layer_atlas_png
from .results import search_stage_label

if TYPE_CHECKING:
    from .results import TrialRow

STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;background:#f5f6f8;
color:#1d2330;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:24px 28px 48px}
header{border-bottom:3px solid #1f77b4;margin-bottom:8px}
h1{font-size:1.7em;margin:0 0 4px}
h2{font-size:1.25em;margin:0 0 6px}
.meta{color:#5a6272;font-size:.9em;margin:0 0 10px}
.answer{font-size:1.05em;margin:6px 0 10px;padding:8px 12px;background:#eef4fb;border-left:4px solid #2b6cb0}
nav{font-size:.92em;margin:10px 0 18px}
nav a{color:#1f5f9c;margin-right:16px;text-decoration:none}
nav a:hover{text-decoration:underline}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 20px;margin:0 0 20px}
.label{display:inline-block;font-size:.8em;font-weight:600;letter-spacing:.02em;padding:2px 8px;border-radius:10px;
margin-left:8px;vertical-align:middle}
.label.search{background:#fff1d6;color:#8a5a00}
.label.confirm{background:#dff3e4;color:#1b6b35}
.note{color:#5a6272;font-size:.92em;margin:4px 0 12px}
.caveat{background:#f4f5f7;border-left:4px solid #9aa3b2;padding:8px 12px;color:#3b4250}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.86em;width:100%}
table.compact{width:auto;min-width:50%}
h3.sub{font-size:1em;margin:14px 0 4px}
th,td{padding:4px 8px;border-bottom:1px solid #e6e9ee;text-align:left;white-space:nowrap;vertical-align:top}
th{background:#eef1f5;font-weight:600;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.95em}
tbody tr:nth-child(even){background:#fafbfc}
tr.baseline td{color:#5a6272;background:#f3f4f6}
tr.first td{border-top:2px solid #cfd5de}
.good{color:#1b6b35;font-weight:600}
.bad{color:#a4262c;font-weight:600}
.same{color:#5a6272}
figure{margin:10px 0 0}
figure img{max-width:100%;height:auto;border:1px solid #e6e9ee;border-radius:4px;background:#fff}
figcaption{font-size:.88em;color:#3b4250;margin-top:4px}
.atlases{display:flex;flex-wrap:wrap;gap:20px}
.atlases figure{flex:1 1 520px;max-width:640px}
.bar{background:#1f77b4;height:12px;border-radius:2px;min-width:1px}
.barcell{width:45%}
footer{color:#7a8292;font-size:.82em;text-align:center}
"""


def write_report(path: Union[str, Path], name: str, rows: list[TrialRow], *,
                 confirmation: Optional[Mapping[str, Any]] = None,
                 importances: Union[Mapping[str, float], str, None] = None,
                 tracking_uri: Optional[str] = None, source: str = "", limit: Optional[int] = None) -> Path:
    """Write the sweep ``name``'s report page to ``path`` and return it.

    ``rows`` are the ranked search-stage rows (``search.results``; the first ``limit`` are listed);
    ``confirmation`` the confirmation table (``confirmation.json``) or None; ``importances`` the
    ``search.importance.param_importances`` values, or the one-line caveat that stands in for them;
    ``tracking_uri`` lets the layer atlases be read from the trials' MLflow runs when Tune's checkpoints lack them.
    """
    metric = rows[0].metric if rows else "final"
    parts = [
        _header(name, rows, confirmation, source, metric),
        _confirmation_section(confirmation),
        _leaderboard_section(rows[:limit] if limit else rows, len(rows)),
        _plots_section(rows, confirmation),
        _atlas_section(rows, confirmation, tracking_uri),
        _importance_section(importances, metric),
        f"<footer>pursuhint {escape(__version__)} · generated {escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}"
        f"</footer>",
    ]
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>pursuhint report: {escape(name)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(p for p in parts if p) + "\n</main>\n</body>\n</html>\n")
    return write_text_atomic(Path(path), page)


def _header(name: str, rows: list[TrialRow], table: Optional[Mapping[str, Any]], source: str, metric: str) -> str:
    searched = sum(1 for r in rows if r.baseline in ("", "none"))
    facts = [f"{len(rows)} search trials ({searched} searched, {len(rows) - searched} baselines)",
             f"search.metric: {metric}"]
    if table:
        facts.append(f"confirmation stage: up to {table.get('n_seeds')} seeds")
    if source:
        facts.append(f"read from {source}")
    links = [("confirmation", "Confirmation"), ("leaderboard", "Search leaderboard"), ("plots", "Plots"),
             ("atlas", "Layer atlas"), ("importance", "Parameter importances")]
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in links)
    said = (table or {}).get("answer")
    answer = f'<p class="answer" id="answer"><strong>Answer:</strong> {escape(said)}</p>' if said else ""
    return (f"<header><h1>Sweep {escape(name)}</h1>{answer}<p class=\"meta\">{escape(' · '.join(facts))}</p>"
            f"</header><nav>{nav}</nav>")


def _confirmation_section(table: Optional[Mapping[str, Any]]) -> str:
    head = '<section id="confirmation"><h2>Confirmation stage<span class="label confirm">'
    if not table:
        return (head + "not run</span></h2><p class=\"caveat\">This sweep has no confirmation stage "
                "(search.confirm.top_k: 0, or no searched trial completed): the leaderboard below is one seed on "
                "the selection split, not a confirmed result.</p></section>")
    n, lo, hi = table.get("n_seeds"), table.get("min_seeds"), table.get("max_seeds")
    seeds = f"racing {lo}–{hi} seeds" if lo is not None and lo != hi else f"{n} seeds each"
    out = [head + f"{escape(seeds)}, test split, full budget</span></h2>",
           '<p class="note">Ranked by mean test accuracy over the seeds; each configuration is compared with the '
           "baseline of the same method, paired by seed. A verdict reads one Student's t CI whose level holds a 5 % "
           "error rate across the table's comparisons (Holm) and the race's looks (Bonferroni): better, worse, "
           f"equivalent within ±{escape(str(table.get('margin', 1.0)))} points, or undecided.</p>"]
    configs = table.get("configurations") or []
    if configs:
        out.append(_head(("#", "num"), "configuration", "trial", ("test acc (%)", "num"), ("seeds", "num"), "vs",
                         ("gain", "num"), ("CI", "num"), "verdict"))
        for i, c in enumerate(configs, 1):
            gains = list((c.get("gains") or {}).items()) or [("", None)]
            span = len(gains)
            first = (_td(i, "num", span)
                     + _td(f"{c.get('method')} K={c.get('n_hints')} [{c.get('hint_layers', '')}]", "", span)
                     + _td(c.get("trial_id", ""), "mono", span) + _td(_mean_sd(c.get("test_acc", {})), "num", span)
                     + _td(len(c.get("seeds") or {}), "num", span))
            for j, (kind, g) in enumerate(gains):
                cells = first if j == 0 else ""
                if g is None:
                    cells += '<td colspan="4" class="same">no baseline of the same method with two shared seeds</td>'
                else:
                    verdict = str(g.get("verdict", ""))
                    cells += (_td(BASELINE_LABELS.get(kind, kind)) + _td(_signed(g.get("mean")), "num")
                              + _td(f"[{_signed(g.get('low'))}, {_signed(g.get('high'))}]", "num")
                              + _td(verdict, _tone(verdict)))
                out.append(f'<tr class="first">{cells}</tr>' if j == 0 and i > 1 else f"<tr>{cells}</tr>")
        out.append("</tbody></table></div>")
    else:
        out.append('<p class="caveat">No confirmed configuration finished.</p>')
    baselines = table.get("baselines") or []
    if baselines:
        out.append('<h3 class="sub">Baselines</h3>' + _head("baseline", "method", ("K", "num"),
                                                           ("test acc (%)", "num"), ("seeds", "num"), compact=True))
        for b in baselines:
            out.append("<tr>" + _td(b.get("label", b.get("kind", ""))) + _td(b.get("method")) + _td(
                b.get("n_hints") or "-", "num") + _td(_mean_sd(b.get("test_acc", {})), "num") + _td(
                len(b.get("seeds") or {}), "num") + "</tr>")
        out.append("</tbody></table></div>")
    if table.get("protocol"):
        out.append(f'<p class="note">{escape(str(table["protocol"]))}</p>')
    return "".join(out) + "</section>"


def _leaderboard_section(rows: list[TrialRow], total: int) -> str:

    out = ['<section id="leaderboard"><h2>Search leaderboard<span class="label search">Search stage: one seed, '
           "selection split</span></h2>", f'<p class="note">{escape(search_stage_label(rows))}. val_acc is the last '
           "epoch's selection-split accuracy, best the best epoch's; the gains are over the default-hints baseline "
           "of the same method and over KD only. Grey rows are baselines.</p>"]
    if not rows:
        return "".join(out) + '<p class="caveat">No trial has reported yet.</p></section>'
    shown = columns.shown()
    out.append(_head(*((c.head, "num" if c.type is not str else "") for c in shown)))
    for r in rows:
        tr = ' class="baseline"' if r.kind not in ("searched", "duplicate", "stopped") else ""
        out.append(f"<tr{tr}>" + "".join(_td(columns.cell(r, c), "num" if c.type is not str else
                                             "mono" if c.field in ("trial_id", "hint_indices") else "")
                                         for c in shown) + "</tr>")
    out.append("</tbody></table></div>")
    if len(rows) < total:
        out.append(f'<p class="note">The top {len(rows)} of {total} trials.</p>')
    return "".join(out) + "</section>"


def _plots_section(rows: list[TrialRow], table: Optional[Mapping[str, Any]]) -> str:

    out = ['<section id="plots"><h2>Plots</h2>']
    if table and (table.get("configurations") or table.get("baselines")):
        out.append(_figure(_drawn(lambda: confirmation_plot(dict(table))),
                           "Confirmation stage: each configuration's and baseline's test accuracy per seed (dots), "
                           "mean with 95 % CI (bar).", "confirmation plot"))
    out.append(_figure(_drawn(lambda: sweep_comparison(rows)),
                       "Search stage: each trial's selection-split accuracy by the sweep's ranking metric against "
                       "the baselines (left) and its hint points over the teacher's depth (right), one seed each.",
                       "comparison plot"))
    return "".join(out) + "</section>"


def _atlas_section(rows: list[TrialRow], table: Optional[Mapping[str, Any]], uri: Optional[str]) -> str:

    out = ['<section id="atlas"><h2>Layer atlas</h2><p class="note">The teacher\'s layer-to-layer similarity with '
           "the clusters along depth; red stars are the hint points, orange squares the default hints (last block "
           "of each teacher stage).</p>"]
    hinted = [r for r in rows if r.hint_indices]
    best, why = None, ""
    confirmed = (table or {}).get("configurations") or []
    if confirmed:
        best = next((r for r in hinted if r.trial_id == confirmed[0].get("trial_id")), None)
        why = "the confirmation stage's best"
    if best is None:  # the search's best clustered hint set, even when a baseline ranks above it
        best = next((r for r in hinted if r.baseline in ("", "none") and math.isfinite(r.score)), None)
        why = f"the best searched trial, rank {best.rank} of the search stage" if best is not None else ""
    if best is None:
        best = next((r for r in hinted if math.isfinite(r.score)), None)
        why = f"rank {best.rank} of the search stage; no searched trial finished" if best is not None else ""
    if best is None:
        return "".join(out) + '<p class="caveat">No trial with hint points has finished.</p></section>'
    how = (f"{best.similarity}/{best.algorithm}/{best.center}, " if best.baseline in ("", "none")
           else f"{BASELINE_LABELS.get(best.baseline, best.baseline)}, ")
    figures = [(best, f"Best hint set ({why}): trial {best.trial_id}, {best.method}, {how}layers {best.hint_layers} "
                      f"(positions {best.hint_indices})")]
    default = next((r for r in hinted if r.baseline == "default" and r.method == best.method), None) or next(
        (r for r in hinted if r.baseline == "default"), None)
    if default is not None and default is not best:
        figures.append((default, f"Default hints: trial {default.trial_id}, layers {default.hint_layers} "
                                 f"(positions {default.hint_indices})"))
    out.append('<div class="atlases">')
    for row, caption in figures:
        png = next((p for p in (layer_atlas_png(r, uri) for r in _same_hints(row, hinted)) if p), None)
        out.append(_figure(_data_uri(png) if png else None, caption, "layer atlas",
                           "neither the trial's Tune checkpoint nor its MLflow run has layer_atlas.png"))
    return "".join(out) + "</div></section>"


def _same_hints(row: TrialRow, rows: list[TrialRow]) -> list[TrialRow]:
    """``row``, then the other trials with the same hint points over the same similarity (a duplicate trial has
    no checkpoint of its own: its owner's atlas is the same picture)."""
    return [row] + [r for r in rows if r is not row and r.hint_indices == row.hint_indices
                    and r.similarity == row.similarity]


def _importance_section(importances: Union[Mapping[str, float], str, None], metric: str) -> str:
    out = ['<section id="importance"><h2>Parameter importances</h2>']
    if importances is None:
        return "".join(out) + '<p class="caveat">Not computed.</p></section>'
    if isinstance(importances, str):
        return "".join(out) + f'<p class="caveat">{escape(importances)}</p></section>'
    what = "best epoch's" if metric == "best" else "last epoch's"
    n = getattr(importances, "n_trials", None)
    over = f" over {n} completed Optuna trials" if n else ""
    out.append(f'<p class="note">fANOVA (Optuna, seed 0){escape(over)}: the share of the variance of the study\'s '
               f"objective, the {escape(what)} val_acc on the selection split (search.metric: {escape(metric)}), "
               "that each searched key explains. Baselines are not Optuna trials.</p>")
    out.append('<table><thead><tr><th>searched key</th><th class="num">importance</th><th class="barcell"></th>'
               "</tr></thead><tbody>")
    top = max(importances.values(), default=0.0) or 1.0
    for key, value in importances.items():
        out.append(f'<tr><td class="mono">{escape(str(key))}</td><td class="num">{value:.3f}</td><td class="barcell">'
                   f'<div class="bar" style="width:{max(0.0, 100.0 * value / top):.1f}%"></div></td></tr>')
    return "".join(out) + "</tbody></table></section>"


def _td(value: Any, cls: str = "", rowspan: int = 1) -> str:
    """One table cell holding ``value`` as escaped text."""
    attrs = (f' class="{cls}"' if cls else "") + (f' rowspan="{rowspan}"' if rowspan > 1 else "")
    return f"<td{attrs}>{escape(str(value))}</td>"


def _head(*columns: Union[str, tuple[str, str]], compact: bool = False) -> str:
    """A table's opening up to its body: one header cell per column (a name, or a name and its class)."""
    cells = "".join(f'<th class="{c[1]}">{escape(c[0])}</th>' if isinstance(c, tuple) and c[1] else
                    f"<th>{escape(c[0] if isinstance(c, tuple) else c)}</th>" for c in columns)
    table = '<table class="compact">' if compact else "<table>"
    return f'<div class="scroll">{table}<thead><tr>{cells}</tr></thead><tbody>'


def _drawn(draw: Any) -> Optional[str]:
    """The figure ``draw()`` returns as a PNG data URI, or None when there is nothing to draw yet."""

    try:
        fig = draw()
    except PursuhintError:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _data_uri(buf.getvalue())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(src: Optional[str], caption: str, alt: str, missing: str = "nothing has finished to draw yet") -> str:
    if src is None:
        return (f'<figure><p class="caveat">No {escape(alt)}: {escape(missing)}.</p>'
                f"<figcaption>{escape(caption)}</figcaption></figure>")
    return f'<figure><img src="{src}" alt="{escape(alt)}"><figcaption>{escape(caption)}</figcaption></figure>'


def _mean_sd(t: Mapping[str, Any]) -> str:
    mean, sd = t.get("mean"), t.get("sd")
    if not _finite(mean):
        return "-"
    return f"{mean:.2f} ± {sd:.2f}" if _finite(sd) else f"{mean:.2f}"


def _tone(verdict: str) -> str:
    return "good" if verdict.startswith("better") else "bad" if verdict.startswith("worse") else "same"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _signed(v: Any) -> str:
    return f"{v:+.2f}" if _finite(v) else "-"
