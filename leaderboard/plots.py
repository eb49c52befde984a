"""Robustness curves, the boards' clean-vs-robust scatters and the corruption x severity heat maps, drawn at build time as small hand-written SVG files.

Hand-written rather than matplotlib: a matplotlib SVG costs 20-35 ms per figure on the CI
machine (benchmarks/leaderboard_scale.py), which alone would take a 300-model board past
its 10 s build budget; this writer needs well under 1 ms. The picture is self-contained
(no fonts, scripts or links), so it loads from file:// with no request.
"""
from __future__ import annotations

import math
from html import escape
from typing import Callable, Sequence

__all__ = ["curve_svg", "scatter_svg", "heatmap_svg", "nice_ticks", "clean_curve", "HEATMAP_FULL_ERROR"]

_W, _H = 520, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 18, 20, 48


def nice_ticks(high: float, target: int = 5) -> list[float]:
    """Round tick positions from 0 to at least ``high`` (steps of 1, 2 or 5 times a power of ten)."""
    if not high > 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(count + 1)]


def clean_curve(curve: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """The finite (eps >= 0, accuracy in [0, 1]) points of a curve, sorted by eps; bad points raise ValueError."""
    points = []
    for item in curve:
        if len(item) != 2:
            raise ValueError(f"a curve point must be [eps, accuracy], got {item!r}")
        eps, acc = float(item[0]), float(item[1])
        if not (math.isfinite(eps) and eps >= 0 and math.isfinite(acc) and 0.0 <= acc <= 1.0):
            raise ValueError(f"curve point {item!r} is not an eps >= 0 with an accuracy in [0, 1]")
        points.append((eps, acc))
    return sorted(points)


def _label(value: float) -> str:
    return f"{value:.4g}"


def _frame(title: str, x_ticks: Sequence[tuple[float, str]], y_ticks: Sequence[float],
           sx: Callable[[float], float], sy: Callable[[float], float]) -> list[str]:
    """The opening of a chart: the svg element, its title, the grid with the y axis in percent, the plot's box."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
             'font-family="sans-serif" font-size="12" role="img">',
             f'<title>{escape(title)}</title>',
             f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#ffffff"/>']
    for y in y_ticks:
        parts.append(f'<line x1="{_LEFT}" y1="{sy(y):.2f}" x2="{_W - _RIGHT}" y2="{sy(y):.2f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{sy(y) + 4:.2f}" text-anchor="end">{100 * y:.0f}</text>')
    for x, text in x_ticks:
        parts.append(f'<line x1="{sx(x):.2f}" y1="{_TOP}" x2="{sx(x):.2f}" y2="{_TOP + plot_h}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{sx(x):.2f}" y="{_TOP + plot_h + 16}" text-anchor="middle">{escape(text)}</text>')
    parts.append(f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#555"/>')
    return parts


def curve_svg(curve: Sequence[Sequence[float]], board_eps: float | None = None, *, x_label: str = "eps") -> str:
    """An SVG line chart of robust accuracy (%) against eps, with the board's eps marked."""
    points = clean_curve(curve)
    if not points:
        raise ValueError("the curve has no points")
    x_max_data = max([p[0] for p in points] + ([board_eps] if board_eps else []))
    x_ticks = nice_ticks(x_max_data)
    x_max = x_ticks[-1]
    y_ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + plot_w * x / x_max

    def sy(y: float) -> float:
        return _TOP + plot_h * (1.0 - y)

    parts = _frame("Robust accuracy against eps", [(x, _label(x)) for x in x_ticks], y_ticks, sx, sy)
    if board_eps:
        bx = sx(board_eps)
        parts.append(f'<line x1="{bx:.2f}" y1="{_TOP}" x2="{bx:.2f}" y2="{_TOP + plot_h}" stroke="#c0392b" '
                     'stroke-dasharray="5,4"/>')
        parts.append(f'<text x="{bx + 4:.2f}" y="{_TOP + 14}" fill="#c0392b">board eps {escape(_label(board_eps))}</text>')
    path = " ".join(f"{sx(x):.2f},{sy(y):.2f}" for x, y in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
    parts.extend(f'<circle cx="{sx(x):.2f}" cy="{sy(y):.2f}" r="3" fill="#1f5fa8"/>' for x, y in points)
    parts.append(f'<text x="{_LEFT + plot_w / 2:.2f}" y="{_H - 10}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(16,{_TOP + plot_h / 2:.2f}) rotate(-90)" text-anchor="middle">'
                 'robust accuracy (%)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _dot_names(good: Sequence[tuple[str, float, float]], dots: Sequence[tuple[float, float]], plot_w: float,
               plot_h: float) -> list[str]:
    """Each model's name beside its dot (on its left, else its right, else above or below its left side),
    where it covers neither another name nor another dot; a name that fits nowhere is left to the dot's
    tooltip. A name stays inside the plot's frame vertically, clear of the axes' numbers."""
    placed: list[tuple[float, float, float]] = []  # (left, right, baseline) of the names written so far
    out = []
    for k, (name, _, _) in enumerate(good):
        x, y = dots[k]
        width = 6.2 * len(name)  # about 6.2 px per character at 11 px
        spots = ((x - 6 - width, "end", x - 6, y + 4), (x + 6, "start", x + 6, y + 4),
                 (x - width, "end", x, y - 8), (x - width, "end", x, y + 16))
        for left, anchor, at, base in spots:
            right = left + width
            if left < 0 or right > _LEFT + plot_w + _RIGHT or base - 11 < _TOP or base > _TOP + plot_h - 2:
                continue
            if any(abs(base - b) < 12 and left < r and l < right for l, r, b in placed):
                continue
            if any(j != k and left - 4 < dx < right + 4 and base - 15 < dy < base + 4 for j, (dx, dy) in enumerate(dots)):
                continue
            placed.append((left, right, base))
            out.append(f'<text x="{at:.2f}" y="{base:.2f}" text-anchor="{anchor}" font-size="11">{escape(name)}</text>')
            break
    return out


def scatter_svg(points: Sequence[tuple[str, float, float]], *, labels: bool | None = None,
                y_label: str = "robust accuracy (%)") -> str:
    """An SVG scatter of robust accuracy (%) against clean accuracy (%), one dot per (model id, clean, robust).

    Each dot carries its model id as a tooltip; with ``labels`` (default: 12 models or fewer) the ids
    are also written beside the dots. The clean axis starts at the tens below the lowest clean accuracy."""
    good = [(name, float(c), float(r)) for name, c, r in points
            if math.isfinite(float(c)) and math.isfinite(float(r)) and 0 <= float(r) <= float(c) <= 1]
    if not good:
        raise ValueError("no model with a clean and a robust accuracy to plot")
    labels = len(good) <= 12 if labels is None else labels
    x_low = math.floor(10 * min(c for _, c, _ in good)) / 10
    x_low = min(x_low, 0.9)
    y_high = max(0.2, math.ceil(10 * max(r for *_, r in good)) / 10)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + plot_w * (x - x_low) / (1.0 - x_low)

    def sy(y: float) -> float:
        return _TOP + plot_h * (1.0 - y / y_high)

    x_ticks = [round(x_low + i * (1.0 - x_low) / 5, 6) for i in range(6)]
    y_ticks = [t for t in nice_ticks(y_high) if t <= y_high + 1e-9]
    parts = _frame("Robust accuracy against clean accuracy, one dot per model", [(x, f"{100 * x:.4g}") for x in x_ticks],
                   y_ticks, sx, sy)
    dots = [(sx(clean), sy(robust)) for _, clean, robust in good]
    for name, clean, robust in good:
        tip = escape(f"{name}: clean {100 * clean:.2f}%, robust {100 * robust:.2f}%")
        parts.append(f'<circle cx="{sx(clean):.2f}" cy="{sy(robust):.2f}" r="4" fill="#1f5fa8" fill-opacity="0.75">'
                     f'<title>{tip}</title></circle>')
    if labels:
        parts += _dot_names(good, dots, plot_w, plot_h)
    parts.append(f'<text x="{_LEFT + plot_w / 2:.2f}" y="{_H - 10}" text-anchor="middle">clean accuracy (%)</text>')
    parts.append(f'<text transform="translate(16,{_TOP + plot_h / 2:.2f}) rotate(-90)" text-anchor="middle">'
                 f'{escape(y_label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


#: the error rate at which a heat map cell reaches its full colour (the cells in between are shaded linearly)
HEATMAP_FULL_ERROR = 0.5


def _heat_colour(accuracy: float) -> tuple[str, str]:
    """(fill, text colour) of a heat map cell: white at no error, full red at HEATMAP_FULL_ERROR or more."""
    share = min(1.0, max(0.0, (1.0 - accuracy) / HEATMAP_FULL_ERROR))
    low, high = (255, 255, 255), (178, 34, 34)
    rgb = tuple(round(a + (b - a) * share) for a, b in zip(low, high))
    return "#%02x%02x%02x" % rgb, "#ffffff" if share > 0.55 else "#111111"


def heatmap_svg(accuracy: dict[str, Sequence[float]], clean: float | None = None) -> str:
    """An SVG table of accuracy (%) per corruption (rows) and severity (columns 1..5), each cell shaded by its
    error, with the per-corruption mean in a last column; ``clean`` is written in the title line."""
    rows = [(name, [float(v) for v in values]) for name, values in accuracy.items()]
    if not rows:
        raise ValueError("no corruption to draw")
    for name, values in rows:
        if len(values) != 5 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"{name}: expected five accuracies in [0, 1], got {values!r}")
    label_w, cell_w, cell_h, top = 150, 62, 22, 44
    width, height = label_w + 6 * cell_w + 10, top + cell_h * len(rows) + 30
    title = "Accuracy (%) per corruption and severity" + (f"; clean {100 * clean:.1f}%" if clean is not None else "")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'font-family="sans-serif" font-size="12" role="img">',
             f"<title>{escape(title)}</title>",
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
             f'<text x="{label_w}" y="16">{escape(title)}</text>']
    for column, head in enumerate(["1", "2", "3", "4", "5", "mean"]):
        x = label_w + column * cell_w + cell_w / 2
        parts.append(f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle" font-weight="bold">{head}</text>')
    for row, (name, values) in enumerate(rows):
        y = top + row * cell_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(name)}</text>')
        for column, value in enumerate([*values, sum(values) / 5]):
            fill, ink = _heat_colour(value)
            x = label_w + column * cell_w
            gap = 4 if column == 5 else 0  # the mean column stands a little apart
            parts.append(f'<rect x="{x + gap}" y="{y}" width="{cell_w - 1 - gap}" height="{cell_h - 1}" fill="{fill}">'
                         f"<title>{escape(name)}, {'mean' if column == 5 else f'severity {column + 1}'}: "
                         f"{100 * value:.2f}%</title></rect>")
            parts.append(f'<text x="{x + gap / 2 + cell_w / 2:.1f}" y="{y + 15}" text-anchor="middle" fill="{ink}">'
                         f"{100 * value:.1f}</text>")
    parts.append(f'<text x="{label_w + 2.5 * cell_w:.1f}" y="{height - 8}" text-anchor="middle">severity</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
