"""Report files: one document model rendered as Markdown, self-contained HTML (inline CSS and SVG
charts drawn here, no scripts, no external resources) and JSON.

``write_report(report, directory, stem)`` writes ``stem.md``, ``stem.html`` and ``stem.json``.
Every text that reaches HTML or SVG is escaped: report data comes from the store (user ids,
service names) and is untrusted.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


@dataclass(frozen=True, kw_only=True)
class Table:
    """A table: header cells and rows of cells (anything printable)."""

    header: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, kw_only=True)
class Chart:
    """A line chart (``series``: name -> [(epoch seconds, value)]) or a bar chart (``bars``)."""

    title: str
    kind: Literal["line", "bar"] = "line"
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    bars: list[tuple[str, float]] = field(default_factory=list)
    y_label: str = ""
    threshold: float | None = None
    threshold_label: str = ""


@dataclass(frozen=True, kw_only=True)
class Section:
    """A heading with paragraphs, tables and charts, in that order."""

    title: str
    text: Sequence[str] = ()
    tables: Sequence[Table] = ()
    charts: Sequence[Chart] = ()


@dataclass(frozen=True, kw_only=True)
class Report:
    """A whole report; ``data`` is what the JSON file holds (the numbers behind every section)."""

    title: str
    subtitle: str
    generated_at: float
    sections: Sequence[Section]
    data: dict[str, Any]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _md_cell(value: Any) -> str:
    return _cell(value).replace("|", "\\|").replace("\n", " ")


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown (charts become their data in a short table)."""
    out = [f"# {report.title}", "", f"_{report.subtitle} — generated {_stamp(report.generated_at)}_", ""]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        for p in s.text:
            out += [p, ""]
        for t in s.tables:
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "---|" * len(t.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            out.append("")
        for c in s.charts:
            out.append(f"_Chart: {c.title}" + (f" ({c.y_label})" if c.y_label else "") + " — see the HTML report._")
            out.append("")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.3em}table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}svg{background:#fff}"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts)."""
    e = html.escape
    body = [f"<h1>{e(report.title)}</h1>",
            f'<p class="sub">{e(report.subtitle)} — generated {e(_stamp(report.generated_at))}</p>']
    for s in report.sections:
        body.append(f"<section><h2>{e(s.title)}</h2>")
        body += [f"<p>{e(p)}</p>" for p in s.text]
        for t in s.tables:
            head = "".join(f"<th>{e(str(h))}</th>" for h in t.header)
            rows = "".join("<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in r) + "</tr>" for r in t.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        for c in s.charts:
            body.append(f"<figure><figcaption>{e(c.title)}</figcaption>{svg_chart(c)}</figure>")
        body.append("</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(report.title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _nice(hi: float) -> float:
    """A round upper bound for an axis."""
    if hi <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(hi))
    for step in (1, 2, 2.5, 5, 10):
        if hi <= step * mag:
            return step * mag
    return 10 * mag


_W, _H, _L, _R, _T, _B = 640, 240, 60, 150, 12, 36


def svg_chart(chart: Chart) -> str:
    """An SVG line or bar chart with axes, ticks, a legend and an optional dashed threshold."""
    e = html.escape
    pw, ph = _W - _L - _R, _H - _T - _B
    values = [v for pts in chart.series.values() for _, v in pts] + [v for _, v in chart.bars]
    if chart.threshold is not None:
        values.append(chart.threshold)
    ymax = _nice(max([v for v in values if math.isfinite(v)], default=1.0) * 1.05)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
             f'role="img" aria-label="{e(chart.title)}">']

    def y(v: float) -> float:
        return _T + ph - (min(max(v, 0.0), ymax) / ymax) * ph

    for i in range(5):  # y grid and ticks
        v = ymax * i / 4
        parts.append(f'<line x1="{_L}" x2="{_L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{_L - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{_cell(v)}</text>')
    parts.append(f'<text x="12" y="{_T + ph / 2:.0f}" font-size="11" transform="rotate(-90 12 {_T + ph / 2:.0f})" '
                 f'text-anchor="middle">{e(chart.y_label)}</text>')
    if chart.kind == "bar":
        n = max(len(chart.bars), 1)
        slot = pw / n
        for i, (label, v) in enumerate(chart.bars):
            bx = _L + i * slot + slot * 0.15
            parts.append(f'<rect x="{bx:.1f}" y="{y(v):.1f}" width="{slot * 0.7:.1f}" height="{_T + ph - y(v):.1f}" '
                         f'fill="{COLORS[0]}"><title>{e(label)}: {_cell(v)}</title></rect>'
                         f'<text x="{bx + slot * 0.35:.1f}" y="{_T + ph + 14}" font-size="10" '
                         f'text-anchor="middle">{e(label[:14])}</text>')
    else:
        xs = [t for pts in chart.series.values() for t, _ in pts] or [0.0, 1.0]
        x0, x1 = min(xs), max(xs)
        span = (x1 - x0) or 1.0

        def x(t: float) -> float:
            return _L + (t - x0) / span * pw

        for i in range(5):
            t = x0 + span * i / 4
            label = datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")
            parts.append(f'<text x="{x(t):.1f}" y="{_T + ph + 14}" font-size="10" text-anchor="middle">{label}</text>')
        for i, (name, pts) in enumerate(chart.series.items()):
            color = COLORS[i % len(COLORS)]
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts if math.isfinite(v))
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>'
                         f'<rect x="{_L + pw + 12}" y="{_T + 4 + 16 * i}" width="10" height="10" fill="{color}"/>'
                         f'<text x="{_L + pw + 26}" y="{_T + 13 + 16 * i}" font-size="11">{e(name[:20])}</text>')
    if chart.threshold is not None:
        ty = y(chart.threshold)
        parts.append(f'<line x1="{_L}" x2="{_L + pw}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#d62728" '
                     f'stroke-dasharray="5,4"/><text x="{_L + pw + 12}" y="{ty + 4:.1f}" font-size="11" '
                     f'fill="#d62728">{e(chart.threshold_label or "threshold")}</text>')
    parts.append(f'<line x1="{_L}" x2="{_L}" y1="{_T}" y2="{_T + ph}" stroke="#444"/>'
                 f'<line x1="{_L}" x2="{_L + pw}" y1="{_T + ph}" y2="{_T + ph}" stroke="#444"/></svg>')
    return "".join(parts)


def write_report(report: Report, directory: Path | str, stem: str) -> dict[str, Path]:
    """Write ``stem.md``, ``stem.html`` and ``stem.json`` under ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "html": out / f"{stem}.html", "json": out / f"{stem}.json"}
    paths["md"].write_text(render_markdown(report))
    paths["html"].write_text(render_html(report))
    doc = {"title": report.title, "subtitle": report.subtitle, "generatedAt": report.generated_at, **report.data}
    paths["json"].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                                           | orjson.OPT_SERIALIZE_NUMPY))
    return paths
