"""Small SVG charts for the reports: bars, boxes, lines and markers on linear or log axes, as inline markup.

The reports draw aggregates they computed (counts, quartiles, medians, a model card's curves), so a chart needs
only rectangles, lines, markers and text: no plotting library is imported (matplotlib took 0.6 s to import and
about a second to render the stratify report's PNGs). Every text is escaped; the markup holds no script, link
or external reference, so a page stays self-contained under its Content-Security-Policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

__all__ = ["INK", "Axis", "Chart", "Panel", "linear_ticks", "log_ticks", "text_width"]

INK = "#1f2933"
_MUTED = "#52606d"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"


def _num(value: float) -> str:
    """A coordinate with two decimals at most (no exponent, no trailing zeros)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def text_width(text: str, size: float) -> float:
    """Rough width in pixels of `text` at font `size` (an average glyph of 0.58 em), for laying out margins."""
    return 0.58 * size * len(text)


def linear_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round ticks (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2 and 5 times each power of ten within [lo, hi] (lo > 0)."""
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo * (1 - 1e-9) <= m * 10.0**e <= hi * (1 + 1e-9)
    ]
    return ticks or [lo, hi]


@dataclass(frozen=True)
class Axis:
    """Data values [lo, hi] onto pixels [start, end] (end < start for a y axis drawn upwards)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        """The pixel of `value`."""
        lo, hi, v = (math.log10(x) for x in (self.lo, self.hi, value)) if self.log else (self.lo, self.hi, value)
        span = (hi - lo) or 1.0
        return self.start + (v - lo) / span * (self.end - self.start)

    def ticks(self) -> list[float]:
        """Round tick values inside the axis."""
        return log_ticks(self.lo, self.hi) if self.log else linear_ticks(self.lo, self.hi)

    @staticmethod
    def padded(lo: float, hi: float, *, log: bool = False, pad: float = 0.05) -> tuple[float, float]:
        """[lo, hi] widened by `pad` of the span each side (in log space for a log axis); a point gets a span."""
        if log:
            a, b = math.log10(lo), math.log10(hi)
            span = (b - a) or 1.0
            return 10 ** (a - pad * span), 10 ** (b + pad * span)
        span = (hi - lo) or (abs(hi) or 1.0)
        return lo - pad * span, hi + pad * span


@dataclass
class Chart:
    """One SVG figure of `width` x `height` pixels: text, legends and panels drawn into it, in order."""

    width: float
    height: float
    parts: list[str] = field(default_factory=list)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float = 11,
        anchor: str = "start",
        colour: str = INK,
        bold: bool = False,
        rotate: float | None = None,
    ) -> None:
        """A line of text whose baseline's `anchor` point is at (x, y); `rotate` degrees about that point."""
        attrs = f'x="{_num(x)}" y="{_num(y)}" font-size="{_num(size)}" text-anchor="{anchor}" fill="{colour}"'
        if bold:
            attrs += ' font-weight="600"'
        if rotate is not None:
            attrs += f' transform="rotate({_num(rotate)} {_num(x)} {_num(y)})"'
        self.parts.append(f"<text {attrs}>{escape(text)}</text>")

    def legend(self, items: Sequence[tuple[str, str, str]], x: float, y: float, *, size: float = 10) -> None:
        """Legend entries (label, colour, shape: "box", "line" or a marker shape) in one row from (x, y)."""
        for label, colour, shape in items:
            if shape == "box":
                self.parts.append(f'<rect x="{_num(x)}" y="{_num(y - 8)}" width="12" height="9" fill="{colour}"/>')
            elif shape == "line":
                self.parts.append(_line((x, y - 4), (x + 14, y - 4), colour, 2))
            else:
                self.parts.append(_marker(x + 6, y - 4, shape, colour))
            self.text(x + 18, y, label, size=size)
            x += 18 + text_width(label, size) + 16

    def panel(self, area: tuple[float, float, float, float], x: Axis, y: Axis) -> Panel:
        """A plotting area (left, top, width, height); `x` and `y` map data onto it (their pixel ranges are set
        here)."""
        left, top, width, height = area
        return Panel(
            self,
            Axis(x.lo, x.hi, left, left + width, x.log),
            Axis(y.lo, y.hi, top + height, top, y.log),
        )

    def render(self, alt: str) -> Markup:
        """The `<svg>` element, described by `alt` for screen readers (a title and an aria-label)."""
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(alt)}" '
            f'width="{_num(self.width)}" height="{_num(self.height)}" '
            f'viewBox="0 0 {_num(self.width)} {_num(self.height)}" font-family="{_FONT}">'
        )
        return Markup(
            head + f"<title>{escape(alt)}</title>" + "".join(self.parts) + "</svg>"
        )  # every text in it was escaped


def _line(start: tuple[float, float], end: tuple[float, float], colour: str = INK, width: float = 1.0) -> str:
    """A straight line between two pixel points."""
    (x1, y1), (x2, y2) = start, end
    return (
        f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" stroke="{colour}" '
        f'stroke-width="{_num(width)}"/>'
    )


def _marker(x: float, y: float, shape: str, colour: str, size: float = 4.5) -> str:
    """A marker centred on (x, y): circle, triangle_up, triangle_down, star or cross."""
    if shape == "circle":
        return f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(size * 0.8)}" fill="{colour}"/>'
    if shape == "cross":
        d = size * 0.8
        return (
            f'<path d="M{_num(x - d)} {_num(y - d)}L{_num(x + d)} {_num(y + d)}M{_num(x - d)} {_num(y + d)}'
            f'L{_num(x + d)} {_num(y - d)}" stroke="{colour}" stroke-width="2"/>'
        )
    if shape == "star":
        corners = [
            (x + (size if i % 2 == 0 else size * 0.45) * math.sin(i * math.pi / 5),
             y - (size if i % 2 == 0 else size * 0.45) * math.cos(i * math.pi / 5))
            for i in range(10)
        ]  # fmt: skip
    else:
        sign = 1 if shape == "triangle_up" else -1
        corners = [(x, y - sign * size), (x + size, y + sign * size * 0.8), (x - size, y + sign * size * 0.8)]
    points = " ".join(f"{_num(a)},{_num(b)}" for a, b in corners)
    return f'<polygon points="{points}" fill="{colour}"/>'


@dataclass
class Panel:
    """A plotting area of a chart: draws in data coordinates through its two axes."""

    chart: Chart
    x: Axis
    y: Axis

    def rect(self, x0: float, x1: float, y0: float, y1: float, colour: str, *, opacity: float = 1.0) -> None:
        """A filled rectangle between data corners (x0, y0) and (x1, y1)."""
        left, right = sorted((self.x(x0), self.x(x1)))
        top, bottom = sorted((self.y(y0), self.y(y1)))
        if right - left < 0.005 or bottom - top < 0.005:
            return  # nothing to see (a zero count's bar)
        extra = f' fill-opacity="{_num(opacity)}"' if opacity < 1 else ""
        self.chart.parts.append(
            f'<rect x="{_num(left)}" y="{_num(top)}" width="{_num(right - left)}" height="{_num(bottom - top)}" '
            f'fill="{colour}"{extra}/>'
        )

    def segment(self, start: tuple[float, float], end: tuple[float, float], *, width: float = 1.0) -> None:
        """A straight ink line between two data points."""
        pixels = [(self.x(a), self.y(b)) for a, b in (start, end)]
        self.chart.parts.append(_line(pixels[0], pixels[1], INK, width))

    def line(
        self,
        points: Sequence[tuple[float, float | None]],
        colour: str,
        *,
        width: float = 1.8,
        dash: str = "",
        markers: bool = False,
    ) -> None:
        """A polyline through data points; a None value breaks it. With `markers`, a dot on every point."""
        runs: list[list[tuple[float, float]]] = [[]]
        for px, py in points:
            if py is None or (isinstance(py, float) and math.isnan(py)):
                runs.append([])
            else:
                runs[-1].append((self.x(px), self.y(py)))
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        for run in runs:
            if len(run) > 1:
                coords = " ".join(f"{_num(a)},{_num(b)}" for a, b in run)
                self.chart.parts.append(
                    f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="{_num(width)}"{extra}/>'
                )
            if markers:
                self.chart.parts += [_marker(a, b, "circle", colour) for a, b in run]

    def marker(self, x: float, y: float, shape: str, colour: str) -> None:
        """One marker at a data point (`_marker` shapes)."""
        self.chart.parts.append(_marker(self.x(x), self.y(y), shape, colour))

    def frame(
        self,
        *,
        x_ticks: Sequence[tuple[float, str]] | None = None,
        y_ticks: Sequence[tuple[float, str]] | None = None,
        x_label: str = "",
        y_label: str = "",
        title: str = "",
        tick_size: float = 10,
    ) -> None:
        """Left and bottom axis lines with ticks and their labels (default: the axes' round values), axis labels
        and a title above the panel."""
        chart, x, y = self.chart, self.x, self.y
        left, right, bottom, top = x.start, x.end, y.start, y.end
        x_ticks = [(v, f"{v:g}") for v in x.ticks()] if x_ticks is None else x_ticks
        y_ticks = [(v, f"{v:g}") for v in y.ticks()] if y_ticks is None else y_ticks
        for value, label in x_ticks:
            px = x(value)
            chart.parts.append(_line((px, bottom), (px, bottom + 4)))
            chart.text(px, bottom + 6 + tick_size, label, size=tick_size, anchor="middle")
        for value, label in y_ticks:
            py = y(value)
            chart.parts.append(_line((left - 4, py), (left, py)))
            chart.text(left - 6, py + tick_size * 0.35, label, size=tick_size, anchor="end")
        chart.parts.append(_line((left, bottom), (right, bottom)))
        chart.parts.append(_line((left, bottom), (left, top)))
        if x_label:
            chart.text((left + right) / 2, bottom + 2 * tick_size + 14, x_label, size=11, anchor="middle")
        if y_label:
            width = max((text_width(label, tick_size) for _, label in y_ticks), default=0)
            chart.text(left - width - 16, (top + bottom) / 2, y_label, size=11, anchor="middle", rotate=-90)
        if title:
            chart.text((left + right) / 2, top - 8, title, size=12, anchor="middle", bold=True)

    def note(self, text: str) -> None:
        """A line of muted text in the middle of the panel (e.g. why nothing is drawn)."""
        self.chart.text((self.x.start + self.x.end) / 2, (self.y.start + self.y.end) / 2, text, colour=_MUTED,
                        anchor="middle")  # fmt: skip
