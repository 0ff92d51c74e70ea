"""Streaming (out-of-core) runs hold exactly the single-pass rows, values and counts; bad files fail first."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from immunostrat.config.run import RunConfig, ScoringConfig, StratifyParams, ValidationConfig
from immunostrat.errors import QuarantineCeilingError
from immunostrat.ingest.io import LAB_OPTIONAL, LAB_REQUIRED, InputError, read_input, scan_input
from immunostrat.pipeline import launch
from immunostrat.pipeline import run as pipeline
from immunostrat.pipeline.engine.execute import merge_counts
from immunostrat.pipeline.partition import partition_count

from .support import AS_OF, Cohort, latest_flow_run_tasks

OUTPUTS = ("strata.parquet", "harmonised.parquet", "quarantine.parquet", "outside_panel.parquet")
# A row's identity in each output: streaming keeps a single pass's rows, ordered partition by partition.
KEYS = {
    "strata.parquet": ["study_id", "subject_id"],
    "harmonised.parquet": ["source_file", "source_row"],
    "quarantine.parquet": ["source_file", "source_row", "reason_code"],
    "outside_panel.parquet": ["source_file", "source_row"],
}


def _params(labs: Path, subjects: Path, out: Path, registry: Path, **options: object) -> StratifyParams:
    validation = options.pop("validation", ValidationConfig(as_of=AS_OF))
    return StratifyParams(
        labs=[str(labs)],
        subjects=str(subjects),
        out=str(out),
        config=RunConfig(validation=validation, scoring=ScoringConfig(registry=registry)),
        **options,
    )


def _read(run_dir: Path, name: str) -> pl.DataFrame:
    frame = pl.read_parquet(run_dir / name)
    return frame.drop("run_id") if "run_id" in frame.columns else frame


def _run_json(run_dir: Path) -> dict[str, object]:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def single_pass(small_cohort: Cohort, trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    return pipeline.stratify(_params(small_cohort.labs, small_cohort.subjects, out, trained_registry)).run_dir


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_streaming_run_holds_the_single_pass_rows_and_counts(
    fmt: str, single_pass: Path, small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    labs = small_cohort.labs
    if fmt == "parquet":
        labs = tmp_path / "labs.parquet"
        pl.read_csv(small_cohort.labs, infer_schema=False).write_parquet(labs)
    params = _params(labs, small_cohort.subjects, tmp_path / "out", trained_registry, streaming=True, partitions=3)
    streamed = pipeline.stratify(params).run_dir
    for name in OUTPUTS:
        expected = _read(single_pass, name)
        if fmt == "parquet":  # the same rows, read from another file
            expected = expected.with_columns(
                pl.col(pl.String).str.replace_all(str(small_cohort.labs), str(labs), literal=True)
            )
        assert_frame_equal(_read(streamed, name).sort(KEYS[name]), expected.sort(KEYS[name]))
    one, many = _run_json(single_pass), _run_json(streamed)
    assert many["streaming"] is True and many["partitions"] == 3
    for key in ("summary", "drift", "model"):
        assert many[key] == one[key], key
    counts = json.loads(json.dumps(many["counts"]).replace(str(labs), str(small_cohort.labs)))
    assert counts == one["counts"]
    assert list(counts["quarantined_by_reason"]) == list(one["counts"]["quarantined_by_reason"])  # same order
    assert not list(streamed.glob(".*")) and (streamed / "sponsor" / "manifest.json").is_file()


def test_streaming_run_over_the_quarantine_ceiling_leaves_a_failed_run_folder(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    params = _params(
        small_cohort.labs,
        small_cohort.subjects,
        tmp_path,
        trained_registry,
        streaming=True,
        partitions=2,
        validation=ValidationConfig(as_of=AS_OF, max_quarantine_fraction=0.0),
    )
    with pytest.raises(QuarantineCeilingError):
        pipeline.stratify(params)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = _run_json(run_dir)
    assert manifest["status"] == "failed" and "ceiling" in str(manifest["error"])
    assert not (run_dir / "strata.parquet").exists()
    assert pl.read_parquet(run_dir / "quarantine.parquet").height == manifest["counts"]["quarantined"]  # type: ignore[index]


def test_a_ragged_csv_fails_the_streaming_run_before_compute_naming_the_file(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    labs = tmp_path / "labs.csv"
    lines = small_cohort.labs.read_text(encoding="utf-8").splitlines()
    labs.write_text("\n".join([*lines[:50], lines[50] + ",extra,fields", *lines[51:]]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=str(labs)):
        pipeline.stratify(_params(labs, small_cohort.subjects, out, trained_registry, streaming=True, partitions=2))
    assert [p.name for p in out.iterdir() if not p.name.startswith(".immunostrat")] == []  # no run folder, no scratch


def test_a_missing_column_is_found_from_the_header_alone(tmp_path: Path) -> None:
    path = tmp_path / "labs.csv"
    path.write_text("study_id,subject_id,test,result,unit\nS1,P1,C3,0.9,g/L\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"missing required column.*collected_at") as caught:
        scan_input(path, LAB_REQUIRED, LAB_OPTIONAL)
    assert caught.value.column == "collected_at"


_cell = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='\r\n"\x00'), max_size=6)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(_cell, min_size=7, max_size=7), max_size=8), extra=st.booleans())
def test_scanning_a_csv_reads_what_the_eager_reader_reads(
    rows: list[list[str]], extra: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    header = ["study_id", "subject_id", "test", "result", "unit", "collected_at", "Site_ID " if not extra else "note"]
    path = tmp_path_factory.mktemp("scan") / "labs.csv"
    frame = pl.DataFrame([pl.Series(f"c{i}", [r[i] for r in rows], pl.String) for i in range(7)])
    frame.columns = header
    frame.write_csv(path)
    eager = read_input(path, LAB_REQUIRED, LAB_OPTIONAL)
    scanned = scan_input(path, LAB_REQUIRED, LAB_OPTIONAL)
    assert_frame_equal(scanned.frame.collect(), eager.frame)
    assert scanned.extra_columns == eager.extra_columns


def test_partition_counts_add_up_and_keep_the_single_pass_order() -> None:
    a = {"rows_read": 3, "per_file": {"f": {"kind": "labs", "rows_read": 3}}, "quarantined_by_reason": {"X": 2}}
    b = {"rows_read": 4, "per_file": {"f": {"kind": "labs", "rows_read": 4}}, "quarantined_by_reason": {"A": 1, "Y": 3}}
    merged = merge_counts([a, b])
    assert merged["rows_read"] == 7 and merged["per_file"]["f"] == {"kind": "labs", "rows_read": 7}
    assert list(merged["quarantined_by_reason"].items()) == [("Y", 3), ("X", 2), ("A", 1)]


def test_partition_count_follows_the_row_target(tmp_path: Path) -> None:
    assert partition_count(1, 1_000_000, 10_000_000) == 10
    assert partition_count(1, 1_000_000, 1) == 1
    assert partition_count(7, 1_000_000, 10_000_000) == 7


def _streams(params: StratifyParams) -> bool:
    return launch.choose_executor(params)[0].name == "streaming"


def test_runs_stream_by_default_only_above_one_partition_of_lab_rows(small_cohort: Cohort, tmp_path: Path) -> None:
    labs = tmp_path / "labs.parquet"
    pl.concat([pl.read_csv(small_cohort.labs, infer_schema=False)] * 5).write_parquet(labs)  # > 10,000 rows
    base = {"labs": [str(labs)], "subjects": str(small_cohort.subjects), "out": str(tmp_path)}
    assert not _streams(StratifyParams(**base))  # the default target is 1M rows
    assert _streams(StratifyParams(**base, partition_rows=10_000))
    assert _streams(StratifyParams(**{**base, "labs": [str(small_cohort.labs)]}, streaming=True))
    assert not _streams(StratifyParams(**base, partition_rows=10_000, streaming=False))
    assert not _streams(StratifyParams(**base, partition_rows=10_000, partitions=4))  # in memory, on Dask


def test_streamed_validate_reports_exactly_what_one_pass_reports(
    small_cohort: Cohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from immunostrat.cli.main import EXIT_PROBLEMS, main

    labs = tmp_path / "labs.parquet"
    pl.concat([pl.read_csv(small_cohort.labs, infer_schema=False)] * 5).write_parquet(labs)  # repeats: duplicates
    printed = {}
    for mode in ("--streaming", "--no-streaming"):
        report = tmp_path / f"report{mode}.csv"
        args = ["validate", "--labs", str(labs), "--subjects", str(small_cohort.subjects), "--as-of", AS_OF.isoformat()]
        assert main([*args, "--partition-rows", "10000", mode, "--report", str(report)]) == EXIT_PROBLEMS
        printed[mode] = capsys.readouterr().out.replace(str(report), "REPORT")
    assert printed["--streaming"] == printed["--no-streaming"]
    assert (tmp_path / "report--streaming.csv").read_bytes() == (tmp_path / "report--no-streaming.csv").read_bytes()


@pytest.mark.flow
def test_streaming_flow_runs_one_task_per_partition_stage(
    prefect_harness: None, single_pass: Path, small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    from immunostrat.flows.stratify import run_stratify_flow
    from immunostrat.pipeline.engine.definition import Phase
    from immunostrat.pipeline.selection import STRATIFY

    params = _params(small_cohort.labs, small_cohort.subjects, tmp_path, trained_registry, streaming=True, partitions=2)
    streamed = Path(run_stratify_flow(params))
    assert_frame_equal(
        _read(streamed, "strata.parquet").sort(KEYS["strata.parquet"]),
        _read(single_pass, "strata.parquet").sort(KEYS["strata.parquet"]),
    )
    assert _run_json(streamed)["counts"] == _run_json(single_pass)["counts"]
    from collections import Counter

    # Task runs are named "<task name>-<suffix>": the definition's steps, one task per phase and partition (never
    # per subject), one per gate, then write and publish.
    expected = Counter({"split-inputs": 1, "write": 1, **{f.name: 1 for f in STRATIFY.finish}})
    expected.update({s.name: 2 if isinstance(s, Phase) else 1 for s in STRATIFY.steps})
    assert latest_flow_run_tasks(at_least=expected.total())[1] == expected
