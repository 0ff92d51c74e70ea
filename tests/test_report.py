"""The run report: every section on the demo cohort, small-cell suppression, escaping, no identifiers, offline,
model card and drift present or absent, failed runs, and the Prefect artifact content."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from immunostrat.reporting.artifacts import artifact_summary
from immunostrat.reporting.disclosure import suppress
from immunostrat.reporting.figures import box_stats
from immunostrat.reporting.report import SECTIONS, render_report
from immunostrat.sponsor.publish import write_report

from .test_publish import Demo, build_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def demo_html(demo: Demo) -> str:
    assert demo.result.report is not None
    return demo.result.report.read_text(encoding="utf-8")


class _Page(HTMLParser):
    """Sections of a report page: their table cells, figures (each inline SVG's aria-label) and text."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.cells: dict[str, list[str]] = {}
        self.images: dict[str, list[str]] = {}
        self.text: dict[str, list[str]] = {}
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.section = values.get("id")
            for store in (self.cells, self.images, self.text):
                store.setdefault(self.section or "", [])
        elif tag == "td" and self.section:
            self._in_cell = True
            self.cells[self.section].append("")
        elif tag == "svg" and self.section:
            self.images[self.section].append(values.get("aria-label") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False
        elif tag == "section":
            self.section = None

    def handle_data(self, data: str) -> None:
        if self.section:
            self.text[self.section].append(data)
            if self._in_cell:
                self.cells[self.section][-1] += data


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _run_copy(demo: Demo, tmp_path: Path, **changes: Any) -> Path:
    run_dir = tmp_path / demo.run_dir.name
    shutil.copytree(demo.run_dir, run_dir, ignore=shutil.ignore_patterns("sponsor"))
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest.update(changes)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    return run_dir


def _sponsor(demo: Demo) -> pl.DataFrame:
    from immunostrat.sponsor.publish import read_snapshot

    return read_snapshot(demo.result.snapshot_dir)


# --------------------------------------------------------------------------------------------------
# Done when: the report shows every section on the demo cohort, offline
# --------------------------------------------------------------------------------------------------


def test_demo_report_has_every_section_with_content(demo_html: str) -> None:
    page = _page(demo_html)
    assert list(page.text) == [sid for sid, _ in SECTIONS]
    for sid in ("cohort", "funnel", "groups", "biomarkers", "quarantine"):
        assert page.cells[sid], f"section {sid} has no table"
    for sid in ("funnel", "groups", "biomarkers"):
        assert page.images[sid], f"section {sid} has no figure"
    text = {sid: " ".join(parts) for sid, parts in page.text.items()}
    assert "SLE-CART-01" in text["groups"] and "all studies" in text["groups"]
    assert "serologically_active" in text["funnel"]
    assert "DUPLICATE_ROW" in text["quarantine"]
    assert "responder-lr-" in text["model"]
    # the shipped card carries calibration and ROC; the run compares every model feature with training
    assert "not available in this model's card" in text["model"] or page.images["model"]
    assert all(f in text["drift"] for f in ("log2_anti_dsdna_ratio", "log2_ifn_ratio", "cd4_cd8_ratio"))


def test_report_is_one_offline_file(demo_html: str) -> None:
    assert "Content-Security-Policy" in demo_html and "default-src 'none'" in demo_html
    assert "<script" not in demo_html.lower()
    assert not re.search(r"(?:src|href)=\"(?!data:|#)", demo_html), "a resource outside the file"
    assert "<img" not in demo_html and "<image" not in demo_html and "<use" not in demo_html
    # Only the SVG namespace declaration names a URL; nothing is fetched from it.
    assert set(re.findall(r"https?://[^\"' ]+", demo_html)) == {"http://www.w3.org/2000/svg"}
    figures = re.findall(r"<figure>\s*<svg [^>]*>", demo_html)
    assert len(figures) >= 3
    assert all('role="img"' in svg and "aria-label=" in svg for svg in figures)


def test_report_shows_no_identifier_or_date(demo: Demo, demo_html: str) -> None:
    for subject in demo.subjects["subject_id"].to_list():
        assert subject not in demo_html
    for site in {s for s in demo.subjects["site_id"].to_list() if s}:
        assert site not in demo_html
    assert str(demo.root) not in demo_html
    dates = set(re.findall(r"\b\d{4}-\d{2}-\d{2}\b", demo_html))
    run = json.loads((demo.run_dir / "run.json").read_text())
    allowed = {run["as_of"], run["finished_at"][:10], *re.findall(r"Generated (\d{4}-\d{2}-\d{2})", demo_html)}
    assert dates <= allowed, dates - allowed  # no collection, reference or exposure date


def test_no_shown_subject_count_is_below_the_threshold(demo: Demo) -> None:
    sponsor = _sponsor(demo).filter(pl.col("study_id") == "SLE-CART-01")
    big, small = sponsor["site"].unique().sort().head(2).to_list()
    subset = pl.concat([sponsor.filter(pl.col("site") == big), sponsor.filter(pl.col("site") == small).head(3)])
    page = _page(render_report(demo.run_dir, sponsor=subset, card=None))
    for sid in ("cohort", "funnel", "groups", "biomarkers"):
        for cell in page.cells[sid]:
            assert not (cell.isdigit() and 0 < int(cell) < 5), f"{sid}: {cell}"
            assert not re.search(r"\(n=[1-4]\)", cell), f"{sid}: {cell}"
    groups = page.cells["groups"]
    assert "<5" in groups and "*" in groups  # the small site, and the cells that would give it away


# --------------------------------------------------------------------------------------------------
# Suppression
# --------------------------------------------------------------------------------------------------


def _lines(rows: int, cols: int) -> list[list[tuple[int, int]]]:
    return [[(i, j) for j in range(cols)] for i in range(rows)] + [[(i, j) for i in range(rows)] for j in range(cols)]


def _with_totals(values: np.ndarray) -> np.ndarray:
    full = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.int64)
    full[:-1, :-1] = values
    full[:-1, -1] = values.sum(axis=1)
    full[-1] = full[:-1].sum(axis=0)
    return full


def test_suppression_hides_small_cells_and_what_would_give_them_away() -> None:
    full = _with_totals(np.array([[3, 10, 12], [8, 9, 20]]))
    shown = suppress(full, _lines(*full.shape), 5)
    assert shown[0, 0] == "<5"
    assert (shown == "*").sum() >= 3  # one more in its row, one in its column, and the one closing the square
    assert shown[-1, -1] == str(full[-1, -1])
    assert list(suppress(np.array([[0, 7]]), [], 5)[0]) == ["0", "7"]


def test_suppression_leaves_no_line_with_a_single_hidden_cell() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        full = _with_totals(rng.integers(0, 12, size=(rng.integers(1, 5), rng.integers(1, 5))))
        lines = _lines(*full.shape)
        shown = suppress(full, lines, 5)
        hidden = np.isin(shown, ["<5", "*"])
        for line in lines:
            n_hidden = sum(hidden[c] for c in line)
            others = [full[c] for c in line if not hidden[c]]
            assert n_hidden != 1 or not any(others), (full, shown, line)


# --------------------------------------------------------------------------------------------------
# Model card, drift, escaping, failed runs
# --------------------------------------------------------------------------------------------------


def _card(demo: Demo, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    from immunostrat.modelling.registry import load_model

    card = dict(load_model("champion").card)
    card.pop("evaluation", None)
    if evaluation is not None:
        card["evaluation"] = evaluation
    return card


def test_model_section_draws_calibration_and_roc_from_the_card(demo: Demo) -> None:
    evaluation = {
        "kind": "internal (out-of-fold)",
        "metrics": {"auroc": {"estimate": 0.81, "ci_low": 0.79, "ci_high": 0.83}},
        "calibration": [
            {"bin": i + 1, "mean_predicted": (i + 0.5) / 5, "observed": (i + 0.4) / 5, "n": 3 if i == 0 else 40}
            for i in range(5)
        ],
        "roc": {"fpr": [0.0, 0.1, 0.3, 1.0], "tpr": [0.0, 0.5, 0.8, 1.0]},
    }
    page = _page(render_report(demo.run_dir, sponsor=None, card=_card(demo, evaluation)))
    text = " ".join(page.text["model"])
    assert page.images["model"] and "not available" not in text
    assert page.cells["model"][:3] == ["AUROC", "0.810", "0.790–0.830"]
    assert "<5" in page.cells["model"]  # a calibration bin of 3 is suppressed
    bare = _page(render_report(demo.run_dir, sponsor=None, card=_card(demo, None)))
    bare_text = " ".join(bare.text["model"])
    assert "Calibration is not available in this model's card" in bare_text
    assert "ROC curve is not available in this model's card" in bare_text
    assert not bare.images["model"]


def test_drift_flags_are_listed_when_the_run_has_them(demo: Demo, tmp_path: Path) -> None:
    drift = {
        "features": {
            "c3": {"psi": 0.31, "missing_rate": 0.05, "reference_missing_rate": 0.04, "flagged": True},
            "c4": {"psi": 0.02, "missing_rate": 0.03, "reference_missing_rate": 0.03, "flagged": False},
        },
        "flagged": ["c3"],
    }
    run_dir = _run_copy(demo, tmp_path, drift=drift)
    page = _page(render_report(run_dir, sponsor=None, card=None))
    assert "Flagged: c3" in " ".join(page.text["drift"])
    assert page.cells["drift"][:5] == ["c3", "0.31", "5.0%", "4.0%", "yes"]


def test_quarantine_examples_are_escaped_and_never_show_identifiers(demo: Demo, tmp_path: Path) -> None:
    run_dir = _run_copy(demo, tmp_path)
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    evil = quarantine.head(2).with_columns(
        reason_code=pl.Series(["RESULT_NOT_NUMERIC", "SUBJECT_NOT_ENROLLED"]),
        column=pl.Series(["result", "subject_id"]),
        value=pl.Series(["<script>alert(1)</script>", "999-SECRET-ID"]),
        source_row=pl.Series([0, 1], dtype=pl.Int64),
    )
    pl.concat([evil, quarantine]).write_parquet(run_dir / "quarantine.parquet")
    html = render_report(run_dir, sponsor=None, card=None)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/scrip…" in html
    assert "999-SECRET-ID" not in html and "(withheld)" in html
    assert "message" not in " ".join(_page(html).cells["quarantine"])


def test_a_failed_run_still_gets_its_accounting_report(demo: Demo, tmp_path: Path) -> None:
    run_dir = _run_copy(demo, tmp_path, status="failed", error="200 of 300 panel rows were quarantined")
    for name in ("strata.parquet",):
        (run_dir / name).unlink()
    manifest = json.loads((run_dir / "run.json").read_text())
    for key in ("model", "summary"):
        manifest.pop(key)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    path = write_report(run_dir)
    page = _page(path.read_text())
    assert list(page.text) == [sid for sid, _ in SECTIONS]
    assert "did not complete: 200 of 300" in " ".join(page.text["summary"])
    assert "no model was used" in " ".join(page.text["model"])
    assert page.cells["quarantine"]


def test_write_report_reads_a_published_snapshot_without_a_key(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMMUNOSTRAT_PSEUDONYM_KEY", raising=False)
    out = write_report(demo.run_dir, tmp_path / "again.html")
    assert "pseudonym key id" in out.read_text()


# --------------------------------------------------------------------------------------------------
# Prefect artifacts
# --------------------------------------------------------------------------------------------------


def test_artifact_summary_gives_markdown_and_suppressed_group_rows(demo: Demo) -> None:
    markdown, rows = artifact_summary(demo.run_dir)
    run = json.loads((demo.run_dir / "run.json").read_text())
    assert f"# Stratify run `{run['run_id']}`" in markdown
    assert "Sponsor snapshot" in markdown and "Report:" in markdown
    totals = {r["responder_group"]: r["subjects"] for r in rows if r["study_id"] == "all studies"}
    assert totals == run["summary"]["responder_groups"]
    assert {r["study_id"] for r in rows} == {*demo.strata["study_id"].unique().to_list(), "all studies"}
    for row in rows:
        assert isinstance(row["subjects"], str) or row["subjects"] == 0 or row["subjects"] >= 5


def test_box_statistics_by_group_are_worked_out_by_hand() -> None:
    """Quartiles by linear interpolation; whiskers at the most extreme values inside the 5th/95th percentiles
    (never inside the box); non-finite values are left out; one aggregation serves every group and column."""
    frame = pl.DataFrame(
        {
            "group": ["a"] * 12 + ["b"] * 3,
            # a: 1..10 plus a NaN and an infinity (left out); b: three values.
            "x": [*map(float, range(1, 11)), float("nan"), float("inf"), 4.0, 2.0, 9.0],
        }
    )
    stats = {r["group"]: r["x"] for r in frame.group_by("group").agg(box_stats(["x"])).iter_rows(named=True)}
    # a = 1..10: position p*(n-1) = 9p. q1 at 2.25 -> 3.25, median at 4.5 -> 5.5, q3 at 6.75 -> 7.75; the 5th
    # percentile (1.45) makes 2 the lowest value inside, the 95th (9.55) makes 9 the highest.
    assert stats["a"] == {"n": 10, "q1": 3.25, "med": 5.5, "q3": 7.75, "whislo": 2.0, "whishi": 9.0, "min": 1.0}
    # b = 2, 4, 9: q1 at 0.5 -> 3, median 4, q3 at 1.5 -> 6.5. The 5th percentile (2.2) leaves only 4 and 9
    # inside, and 4 is inside the box: the whisker stops at q1 = 3. The 95th (8.5): 4 is the highest inside,
    # below q3, so that whisker stops at q3 = 6.5.
    assert stats["b"] == {"n": 3, "q1": 3.0, "med": 4.0, "q3": 6.5, "whislo": 3.0, "whishi": 6.5, "min": 2.0}


def test_building_a_report_imports_no_plotting_or_model_library(demo: Demo, tmp_path: Path) -> None:
    """The report reads the model's card (checksummed) without deserialising the model, and draws its figures
    without a plotting library: a fresh process writing it imports neither matplotlib nor scikit-learn/skops."""
    script = (
        "import sys; from immunostrat.sponsor.publish import write_report; "
        f"write_report({str(demo.run_dir)!r}, {str(tmp_path / 'report.html')!r}); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'sklearn', 'skops', 'scipy'}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "cross-validated AUROC" in (tmp_path / "report.html").read_text(encoding="utf-8")  # the card is shown
