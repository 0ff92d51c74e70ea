"""The reports' SVG charts: round ticks, axes onto pixels, escaped text, and figures that draw only what they show."""

from __future__ import annotations

import re

import numpy as np
import pytest

from immunostrat.reporting.figures import funnel_figure, group_bars_figure
from immunostrat.reporting.svg import Axis, Chart, linear_ticks, log_ticks


def test_linear_ticks_are_round_steps_covering_the_range() -> None:
    # 0..489.3 in about 5 steps: 97.9 rounds up to the next 1-2-5 step, 100.
    assert linear_ticks(0, 489.3) == [0, 100, 200, 300, 400]
    # 0.6..1.35: a raw step of 0.15 rounds up to 0.2; the first tick is the first multiple inside.
    assert linear_ticks(0.6, 1.35) == [0.6, 0.8, 1.0, 1.2]


def test_log_ticks_are_one_two_five_per_decade_inside_the_range() -> None:
    assert log_ticks(0.3, 12) == [0.5, 1, 2, 5, 10]
    assert log_ticks(1.1, 1.9) == [1.1, 1.9]  # no round value inside: the ends


def test_axes_map_data_onto_pixels() -> None:
    assert Axis(0, 10, 100, 200)(2.5) == 125
    assert Axis(0, 10, 300, 100)(2.5) == 250  # a y axis runs upwards
    assert Axis(1, 100, 0, 200, log=True)(10) == pytest.approx(100)  # one decade of two


def test_text_is_escaped_and_the_chart_is_labelled() -> None:
    chart = Chart(100, 50)
    chart.text(0, 10, "<script>alert(1)</script> & co")
    svg = str(chart.render('a "chart" <b>'))
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in svg
    assert 'aria-label="a &quot;chart&quot; &lt;b&gt;"' in svg and "<title>a &quot;chart&quot; &lt;b&gt;</title>" in svg


def test_the_funnel_draws_and_labels_counts_as_the_tables_show_them() -> None:
    # Criterion a: 466 remain, 34 failed (both shown); b: remaining hidden as "*", failed "<5": no bar, the
    # table's labels instead.
    svg = str(funnel_figure(["a", "b"], ["466", "*"], ["34", "<5"])["svg"])
    bars = re.findall(r'<rect x="[^"]+" y="[^"]+" width="([^"]+)" height="32"', svg)
    assert len(bars) == 2  # 466 and 34 (a hidden count draws nothing)
    assert float(bars[0]) / float(bars[1]) == pytest.approx(466 / 34, rel=1e-3)
    texts = re.findall(r"<text [^>]*>([^<]*)</text>", svg)
    assert {"466", "*", "failed &lt;5"} <= set(texts)


def test_group_bars_stack_each_studys_groups_in_order() -> None:
    drawn = np.array([[10, 0, 5, 20]])  # 0: a suppressed cell is passed as 0 and not drawn
    block = group_bars_figure(["ST-A"], ["likely", "possible", "unlikely", "not_assessable"], drawn)
    bars = re.findall(
        r'<rect x="([^"]+)" y="[^"]+" width="([^"]+)" height="35.2" fill="(#[0-9a-f]+)"', str(block["svg"])
    )
    assert [colour for _, _, colour in bars] == ["#2f855a", "#4a6fa5", "#a0aec0"]
    (x1, w1, _), (x2, w2, _), (x3, w3, _) = ((float(x), float(w), c) for x, w, c in bars)
    assert x2 == pytest.approx(x1 + w1, abs=0.01) and x3 == pytest.approx(x2 + w2, abs=0.01)
    assert (w1, w2, w3) == pytest.approx((w1, w1 / 2, w1 * 2), rel=1e-3)
