"""A log-log line chart and a bar chart as SVG text, written by hand: no library needed.

Technique: SVG is only text. Each point is mapped to pixels through ``log10``, each series is a
``<path>``, and the grid, labels and legend are a few more elements. Dashed series mark the
peers a benchmark compares minipool against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from xml.sax.saxutils import escape

__all__ = ["loglog_chart", "bar_chart"]

_COLORS = [
    "#222222",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def loglog_chart(
    series: Mapping[str, list[tuple[float, float]]],
    dashed: set[str],
    title: str,
    *,
    x_names: Mapping[float, str] | None = None,
    x_label: str = "payload size (log scale)",
    y_label: str = "",
) -> str:
    """Return an SVG document plotting each series' ``(x, y)`` points on log-log axes.

    Args:
        series: name -> points (x and y must be positive).
        dashed: names drawn dashed (and labelled "(peer)").
        x_names: labels for x values (e.g. ``{1024: "1KB"}``); others are printed as numbers.
    """
    x_names = x_names or {}
    xs = [x for points in series.values() for x, _ in points] or [1, 10]
    ys = [y for points in series.values() for _, y in points] or [1, 10]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs)) + 1e-9
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)) + 1e-9)
    left, top, width, height = 70, 40, 560, 360

    def px(x: float) -> float:
        return left + (math.log10(x) - x0) / (x1 - x0) * width

    def py(y: float) -> float:
        return top + height - (math.log10(y) - y0) / max(y1 - y0, 1) * height

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 190}" '
        f'height="{top + height + 60}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>',
    ]
    for decade in range(int(y0), int(y1) + 1):
        y = py(10**decade)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eee"/>')
        label = f"{10**decade:,}" if decade >= 0 else f"{10**decade:g}"
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for value in sorted(set(xs)):
        x = px(value)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + height}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + height + 18}" text-anchor="middle">'
            f"{escape(x_names.get(value, f'{value:g}'))}</text>"
        )
    out.append(
        f'<text x="{left + width / 2}" y="{top + height + 42}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text transform="translate(16,{top + height / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    for i, (name, points) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        dash = ' stroke-dasharray="5,4"' if name in dashed else ""
        path = " ".join(
            f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(sorted(points))
        )
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in points]
        ly = top + 10 + i * 20
        out.append(
            f'<line x1="{left + width + 15}" y1="{ly}" x2="{left + width + 45}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        label = name + (" (peer)" if name in dashed else "")
        out.append(f'<text x="{left + width + 52}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def bar_chart(
    values: Mapping[str, float], title: str, *, unit: str = "", peers: set[str] | None = None
) -> str:
    """Return an SVG document with one horizontal bar per ``values`` entry, longest = largest.

    Bars share one colour, so a series (a timeline) reads as one; bars named in ``peers`` are
    grey: the peer a step compares against. Values are
    printed at the end of each bar, so the picture reads without the table.
    """
    peers = peers or set()
    left, top, width, bar, gap = 300, 40, 360, 18, 8
    high = max([v for v in values.values() if v > 0] or [1.0])
    height = top + len(values) * (bar + gap) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 110}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="22" font-size="14">{escape(title)}</text>',
    ]
    for i, (name, value) in enumerate(values.items()):
        y = top + i * (bar + gap)
        length = max(value, 0.0) / high * width
        color = "#999999" if name in peers else _COLORS[1]
        label = name + (" (peer)" if name in peers else "")
        out.append(f'<text x="{left - 8}" y="{y + bar - 5}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar}" fill="{color}"/>')
        shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        out.append(f'<text x="{left + length + 6:.1f}" y="{y + bar - 5}">{escape(shown)}</text>')
    out.append(f'<text x="{left + width / 2}" y="{height - 8}" text-anchor="middle">{escape(unit)}</text>')
    out.append("</svg>\n")
    return "\n".join(out)
