"""The sponsor snapshot: hive dataset read back by polars, pyarrow and DuckDB, no identifiers, provenance,
the current-snapshot manifest, the contract and its version.

`build_demo` publishes the demo cohort (`make demo`: 500 synthetic subjects, seed 7, the shipped model) once
per session; test_report.py and test_report_browser.py reuse it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandera.polars as pandera
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from immunostrat.cli import publish as cli_publish
from immunostrat.config.run import RunConfig, StratifyParams, ValidationConfig
from immunostrat.pipeline import run as pipeline
from immunostrat.reporting import datadict
from immunostrat.schemas.outputs import OutputContractError, Strata
from immunostrat.schemas.sponsor import DAY_COLUMNS, SPONSOR_SCHEMA_VERSION, WITHHELD, Sponsor, validate_sponsor
from immunostrat.sponsor.current import CURRENT_MANIFEST, PublishError
from immunostrat.sponsor.manifest import SnapshotManifest, key_differences
from immunostrat.sponsor.pseudonym import KEY_ENV, KEY_FILE_ENV, PseudonymKey, PseudonymKeyError, key_id, load_key
from immunostrat.sponsor.publish import (  # read_current and read_snapshot: as docs/sponsor.md imports them
    PublishConfig,
    PublishResult,
    publish_run,
    read_current,
    read_snapshot,
)
from immunostrat.sponsor.table import age_band_labels, sponsor_table

from .support import AS_OF

ROOT = Path(__file__).resolve().parents[1]
KEY_TEXT = "test-only-pseudonym-key-" + "5" * 40
SORT = ["study_id", "subject_pseudonym"]


@dataclass(frozen=True)
class Demo:
    """The demo cohort, stratified and published."""

    root: Path
    out: Path
    run_dir: Path
    key_file: Path
    strata: pl.DataFrame
    subjects: pl.DataFrame
    result: PublishResult


def _write_key(folder: Path, text: str = KEY_TEXT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pseudonym.key"
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def _run_config() -> RunConfig:
    extra: dict[str, Any] = {}
    if "publish" in RunConfig.model_fields:  # once stratify publishes itself, these tests publish explicitly
        extra["publish"] = PublishConfig(enabled=False)
    return RunConfig(validation=ValidationConfig(as_of=AS_OF), **extra)


_DEMO: dict[str, Demo] = {}


def build_demo(factory: pytest.TempPathFactory) -> Demo:
    """`make demo`'s cohort (500 subjects, seed 7, shipped champion model), stratified and published once."""
    if "demo" not in _DEMO:
        from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

        root = factory.mktemp("demo")
        paths = write_cohort(generate_cohort(SynthConfig(n_subjects=500, seed=7)), root / "input")
        params = StratifyParams(
            labs=[str(paths["labs"])], subjects=str(paths["subjects"]), out=str(root / "runs"), config=_run_config()
        )
        run_dir = pipeline.stratify(params).run_dir
        key_file = _write_key(root / "keys")
        result = publish_run(run_dir, PublishConfig(key_file=key_file))
        _DEMO["demo"] = Demo(
            root=root,
            out=root / "runs",
            run_dir=run_dir,
            key_file=key_file,
            strata=pl.read_parquet(run_dir / "strata.parquet"),
            subjects=pl.read_parquet(paths["subjects"]),
            result=result,
        )
    return _DEMO["demo"]


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo(tmp_path_factory)


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _copy_run(demo: Demo, out: Path, run_id: str | None = None) -> Path:
    """A copy of the demo run folder (without its snapshot) under `out`, optionally with another run id."""
    target = out / (run_id or demo.run_dir.name)
    shutil.copytree(demo.run_dir, target, ignore=shutil.ignore_patterns("sponsor", "report.html"))
    if run_id:
        manifest = json.loads((target / "run.json").read_text())
        manifest["run_id"] = run_id
        (target / "run.json").write_text(json.dumps(manifest))
    return target


def _duckdb(sql: str) -> pl.DataFrame:
    con = duckdb.connect()
    try:
        return con.sql(sql).pl()
    finally:
        con.close()


# --------------------------------------------------------------------------------------------------
# Done when: the demo publishes a dataset that DuckDB and polars read back identically, with no identifiers
# --------------------------------------------------------------------------------------------------


def test_demo_dataset_reads_back_identically_in_polars_pyarrow_and_duckdb(demo: Demo) -> None:
    data = demo.result.snapshot_dir / "data"
    assert sorted(p.name for p in data.iterdir()) == [f"study_id={s}" for s in sorted(demo.strata["study_id"].unique())]
    via_polars = read_snapshot(demo.result.snapshot_dir).sort(SORT)
    assert via_polars.height == demo.strata.height == demo.result.rows
    via_duckdb = _duckdb(
        f"SELECT * FROM read_parquet('{data}/*/*.parquet', hive_partitioning = true, "
        "hive_types = {'study_id': VARCHAR})"
    )
    partitioning = ds.partitioning(pa.schema([("study_id", pa.string())]), flavor="hive")
    via_pyarrow = pl.from_arrow(ds.dataset(data, format="parquet", partitioning=partitioning).to_table())
    assert isinstance(via_pyarrow, pl.DataFrame)
    for other in (via_duckdb, via_pyarrow):
        assert_frame_equal(via_polars, other.select(via_polars.columns).sort(SORT))
    # DuckDB's own hive type inference gives the same table for these study ids
    plain = _duckdb(f"SELECT * FROM read_parquet('{data}/**/*.parquet', hive_partitioning = true)")
    assert_frame_equal(via_polars, plain.select(via_polars.columns).sort(SORT))


def _parquet_texts(path: Path) -> list[str]:
    """Every value of every column (lists flattened) and every footer metadata entry, as text."""
    table = pl.read_parquet(path)
    texts: list[str] = []
    for name, dtype in table.schema.items():
        column = table[name]
        if isinstance(dtype, pl.List):
            column = column.explode()
        texts += [str(v) for v in column.drop_nulls().cast(pl.String).to_list()]
    metadata = pq.read_metadata(path).metadata or {}
    texts += [f"{k.decode()}={v.decode()}" for k, v in metadata.items()]
    return texts


def test_no_raw_subject_identifier_anywhere_in_what_sponsors_get(demo: Demo) -> None:
    subject_ids = set(demo.subjects["subject_id"].to_list())
    site_ids = {s for s in demo.subjects["site_id"].to_list() if s}
    assert subject_ids and site_ids
    files = [p for p in demo.result.snapshot_dir.rglob("*") if p.is_file()] + [demo.out / CURRENT_MANIFEST]
    assert {p.name for p in files} >= {"part-0.parquet", "manifest.json", "report.html", "data_dictionary.json"}
    offending = []
    for path in files:
        raw = path.read_bytes().decode("utf-8", errors="replace")
        texts = [raw, *(_parquet_texts(path) if path.suffix == ".parquet" else [])]
        for text in texts:
            offending += [(path.name, s) for s in subject_ids | site_ids if s in text]
        assert str(demo.root) not in raw, f"{path} names a local path"
    assert not offending, offending[:5]
    published = read_snapshot(demo.result.snapshot_dir)
    assert not [n for n, t in published.schema.items() if t in (pl.Date, pl.Datetime)], "calendar dates published"
    assert "anti_dsdna_method" not in published.columns  # free text


def test_published_data_validates_against_its_dictionary(demo: Demo) -> None:
    published = read_snapshot(demo.result.snapshot_dir)
    validate_sponsor(published)
    dictionary = json.loads((demo.result.snapshot_dir / "data_dictionary.json").read_text())
    assert dictionary["schema_version"] == SPONSOR_SCHEMA_VERSION
    documented = {c["name"] for c in dictionary["columns"]}
    for column in published.columns:
        assert column in documented or column.startswith("criterion_"), column
    for column in dictionary["columns"]:
        assert column["description"].strip() and column["type"], column["name"]
    assert "study_id=<study>" in (demo.result.snapshot_dir / "data_dictionary.md").read_text()


def test_provenance_in_parquet_metadata_and_manifest(demo: Demo) -> None:
    run = json.loads((demo.run_dir / "run.json").read_text())
    manifest = demo.result.manifest
    assert json.loads((demo.result.snapshot_dir / "manifest.json").read_text()) == manifest
    # Exactly the declared keys (the declaration docs/output.md is generated from), nested parts included.
    assert set(manifest) == set(SnapshotManifest.model_fields) and key_differences(SnapshotManifest, manifest) == []
    assert manifest["run_id"] == run["run_id"] and manifest["schema_version"] == SPONSOR_SCHEMA_VERSION
    assert manifest["model"]["model_id"] == run["model"]["model_id"] and manifest["model"]["sha256"]
    assert manifest["code_version"] == run["versions"]["immunostrat"]
    assert [i["sha256"] for i in manifest["inputs"]] == [i["sha256"] for i in run["inputs"]]
    assert manifest["counts"]["lab_rows"]["rows_read"] == run["counts"]["rows_read"]
    assert manifest["counts"]["published_rows"] == demo.strata.height
    assert manifest["privacy"]["pseudonym"]["key_id"] == key_id(KEY_TEXT.encode())
    assert KEY_TEXT not in json.dumps(manifest)
    assert manifest["parameters"]["validation"]["as_of"] == AS_OF.isoformat()
    assert manifest["privacy"]["age_bands"] == age_band_labels(PublishConfig().age_bands)
    for study, entry in manifest["studies"].items():
        (item,) = entry["files"]
        path = demo.result.snapshot_dir / item["path"]
        from immunostrat.ingest.io import sha256_file

        assert sha256_file(path) == item["sha256"] and pq.read_metadata(path).num_rows == item["rows"]
        meta = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
        assert meta["immunostrat_run_id"] == run["run_id"]
        assert meta["immunostrat_study_id"] == study
        assert meta["immunostrat_schema_version"] == SPONSOR_SCHEMA_VERSION
        assert meta["immunostrat_model_sha256"] == run["model"]["sha256"]
        assert json.loads(meta["immunostrat_provenance"])["inputs"] == manifest["inputs"]
    kv = _duckdb(
        f"SELECT decode(key) AS key, decode(value) AS value FROM parquet_kv_metadata('{path}') "
        "WHERE decode(key) = 'immunostrat_pseudonym_key_id'"
    )
    assert kv["value"].to_list() == [key_id(KEY_TEXT.encode())]


# --------------------------------------------------------------------------------------------------
# Snapshots and the current manifest
# --------------------------------------------------------------------------------------------------


def test_current_manifest_names_one_snapshot_per_study_and_never_moves_back(demo: Demo, tmp_path: Path) -> None:
    older = _copy_run(demo, tmp_path, "20260101T000000Z-aaaaaa")
    newer = _copy_run(demo, tmp_path, "20260102T000000Z-bbbbbb")
    cfg = PublishConfig(key_file=demo.key_file, report=False)
    publish_run(newer, cfg)
    result = publish_run(older, cfg)
    assert result.made_current == []  # an older run never replaces a newer current snapshot
    current = json.loads((tmp_path / CURRENT_MANIFEST).read_text())
    assert {e["run_id"] for e in current["studies"].values()} == {newer.name}
    table = read_current(tmp_path)
    assert table.height == demo.strata.height  # one snapshot per study: no run read twice
    assert table["run_id"].n_unique() == 1
    assert table.select(SORT).is_duplicated().sum() == 0
    rolled = publish_run(older, cfg, force=True, make_current=True)
    assert sorted(rolled.made_current) == sorted(current["studies"])
    assert {e["run_id"] for e in json.loads((tmp_path / CURRENT_MANIFEST).read_text())["studies"].values()} == {
        older.name
    }
    # the same subject keeps the same pseudonym across runs
    assert_frame_equal(
        read_snapshot(older / "sponsor").select(SORT).sort(SORT), read_snapshot(newer / "sponsor").select(SORT)
    )


def test_publishing_with_another_key_is_refused_unless_rotating(demo: Demo, tmp_path: Path) -> None:
    first = _copy_run(demo, tmp_path, "20260101T000000Z-aaaaaa")
    second = _copy_run(demo, tmp_path, "20260102T000000Z-bbbbbb")
    publish_run(first, PublishConfig(key_file=demo.key_file, report=False))
    other = _write_key(tmp_path / "other-key", "another-key-" + "7" * 40)
    with pytest.raises(PublishError, match="pseudonym key changed"):
        publish_run(second, PublishConfig(key_file=other, report=False))
    assert not (second / "sponsor").exists()
    rotated = publish_run(second, PublishConfig(key_file=other, report=False), allow_key_change=True)
    assert rotated.made_current and rotated.key.key_id != key_id(KEY_TEXT.encode())


def test_republishing_needs_force_and_is_deterministic(demo: Demo, tmp_path: Path) -> None:
    run_dir = _copy_run(demo, tmp_path)
    (run_dir / ".sponsor.partial-dead00").mkdir()  # left by a killed publication
    cfg = PublishConfig(key_file=demo.key_file, report=False)
    first = publish_run(run_dir, cfg)
    with pytest.raises(PublishError, match="already published"):
        publish_run(run_dir, cfg)
    second = publish_run(run_dir, cfg, force=True)
    assert second.manifest["studies"] == first.manifest["studies"]  # same bytes, same checksums
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".sponsor")]


def test_a_valid_sponsor_table_is_checked_without_pandera(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-pass contract check decides a valid table alone; pandera only runs to report failures."""
    published = read_snapshot(demo.result.snapshot_dir)
    monkeypatch.setattr(pandera.DataFrameSchema, "validate", lambda *a, **k: pytest.fail("pandera ran"))
    assert validate_sponsor(published) is published
    assert validate_sponsor(published.reverse()).equals(published.reverse())  # unsorted: uniqueness by hashes


def test_the_contract_is_enforced_before_anything_is_written(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _copy_run(demo, tmp_path)
    bad = demo.strata.with_columns(c3=pl.lit(-1.0))
    key = load_key(demo.key_file)
    with pytest.raises(OutputContractError, match="sponsor dataset") as error:
        sponsor_table(bad, key)
    assert "c3" in error.value.columns
    # a strata file changed after the run is refused; nothing is written
    bad.write_parquet(run_dir / "strata.parquet")
    with pytest.raises(PublishError, match="SHA-256"):
        publish_run(run_dir, PublishConfig(key_file=demo.key_file))
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.name]
    assert not (run_dir / "sponsor").exists()


def test_a_failed_run_is_not_published(demo: Demo, tmp_path: Path) -> None:
    run_dir = _copy_run(demo, tmp_path)
    manifest = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**manifest, "status": "failed"}))
    with pytest.raises(PublishError, match="did not complete"):
        publish_run(run_dir, PublishConfig(key_file=demo.key_file))


def test_publishing_without_a_key_is_a_clear_error(demo: Demo, tmp_path: Path, no_key_env: None) -> None:
    run_dir = _copy_run(demo, tmp_path)
    with pytest.raises(PseudonymKeyError, match=KEY_ENV):
        publish_run(run_dir, PublishConfig())
    assert not (run_dir / "sponsor").exists()


# --------------------------------------------------------------------------------------------------
# Privacy options
# --------------------------------------------------------------------------------------------------


def test_sites_ages_and_dates_as_configured(demo: Demo) -> None:
    key = PseudonymKey(secret=KEY_TEXT.encode(), key_id=key_id(KEY_TEXT.encode()), source="test")
    strata = demo.strata
    default = sponsor_table(strata, key)
    assert default["site"].str.starts_with("site-").all()
    assert set(default["age_band"].drop_nulls()) <= set(age_band_labels(PublishConfig().age_bands))
    assert "reference_date_shifted" not in default.columns
    kept = sponsor_table(strata, key, PublishConfig(site="keep"))
    assert set(kept["site"].drop_nulls()) == set(strata["site_id"].drop_nulls())
    assert sponsor_table(strata, key, PublishConfig(site="drop"))["site"].null_count() == strata.height
    banded = sponsor_table(strata, key, PublishConfig(age_bands=(40,)))
    assert set(banded["age_band"].drop_nulls()) == {"<40", "40+"}
    shifted = sponsor_table(strata, key, PublishConfig(dates="shift", max_shift_days=10))
    delta = (
        shifted.select(*SORT, "reference_date_shifted")
        .join(_with_pseudonyms(strata, key), on=SORT)
        .select((pl.col("reference_date_shifted") - pl.col("reference_date")).dt.total_days().alias("d"))["d"]
    )
    assert delta.len() == strata.height and delta.abs().max() <= 10 and delta.n_unique() > 1
    # study days: the baseline day is never after the window end, and 0 means the reference date itself
    assert (default["c3_day"].drop_nulls() <= 0).all()
    assert set(DAY_COLUMNS.values()) <= set(default.columns)
    # ages are banded by whole years
    four = strata.head(4).with_columns(age_years=pl.Series([17.9, 18.0, 29.99, 65.0]))
    ids = _with_pseudonyms(four, key).with_columns(four["age_years"])
    bands = sponsor_table(four, key).select(*SORT, "age_band").join(ids, on=SORT).sort("age_years")
    assert bands["age_band"].to_list() == ["<18", "18-29", "18-29", "65+"]


def _with_pseudonyms(strata: pl.DataFrame, key: PseudonymKey) -> pl.DataFrame:
    from immunostrat.sponsor.pseudonym import subject_pseudonyms

    return strata.select(
        "study_id", "reference_date", subject_pseudonyms(key, strata["study_id"], strata["subject_id"])
    )


def test_age_bands_are_whole_years_and_validated() -> None:
    assert age_band_labels((18, 30, 65)) == ["<18", "18-29", "30-64", "65+"]
    with pytest.raises(ValueError, match="strictly increasing"):
        PublishConfig(age_bands=(30, 18))
    for name, info in PublishConfig.model_fields.items():
        assert (info.description or "").strip(), f"PublishConfig.{name} has no description"


def test_every_strata_column_is_published_or_withheld_on_purpose() -> None:
    published = set(Sponsor.to_schema().columns)
    withheld = set(WITHHELD) | set(DAY_COLUMNS)
    for name in Strata.to_schema().columns:
        assert name in published or name in withheld, f"strata column {name} has no sponsor rule"
    for name, column in Sponsor.to_schema().columns.items():
        assert (column.description or "").strip(), name


# --------------------------------------------------------------------------------------------------
# Schema version, changelog and dictionary
# --------------------------------------------------------------------------------------------------


def test_schema_changelog_names_the_current_version() -> None:
    text = (ROOT / "docs" / "schema-changelog.md").read_text(encoding="utf-8")
    assert f"## {SPONSOR_SCHEMA_VERSION}" in text


def test_committed_json_dictionary_is_up_to_date() -> None:
    committed = json.loads((ROOT / "docs" / "data-dictionary.json").read_text(encoding="utf-8"))
    assert committed == json.loads(datadict.render_json())
    assert committed["tables"]["sponsor"]["schema_version"] == SPONSOR_SCHEMA_VERSION


def test_a_changed_sponsor_contract_needs_a_new_version() -> None:
    current = datadict.dictionary_json()
    assert datadict.version_problem(current) is None

    def committed(edit: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(current))
        edit(copy["tables"]["sponsor"])
        return copy

    def drop_column(table: dict[str, Any]) -> None:
        table["columns"].append({**table["columns"][-1], "name": "old_column"})

    problem = datadict.version_problem(committed(drop_column))
    assert problem and "breaking" in problem and "`old_column` removed" in problem

    def retype(table: dict[str, Any]) -> None:
        next(c for c in table["columns"] if c["name"] == "c3_day")["type"] = "Int64"

    assert "type Int64 -> Int32" in (datadict.version_problem(committed(retype)) or "")

    def fewer_columns(table: dict[str, Any]) -> None:
        table["columns"] = [c for c in table["columns"] if c["name"] != "age_band"]

    problem = datadict.version_problem(committed(fewer_columns))
    assert problem and "version did not" in problem and "`age_band` added" in problem

    def older_major(table: dict[str, Any]) -> None:
        table["schema_version"] = "0.9.0"
        table["columns"].append({**table["columns"][-1], "name": "old_column"})

    assert datadict.version_problem(committed(older_major)) is None  # bumped: fine


def test_datadict_refuses_to_write_over_an_unversioned_change(tmp_path: Path) -> None:
    out = tmp_path / "output.md"
    assert datadict.main(["--out", str(out)]) == 0
    stored = json.loads((tmp_path / "data-dictionary.json").read_text())
    stored["tables"]["sponsor"]["columns"].append({**stored["tables"]["sponsor"]["columns"][0], "name": "gone"})
    (tmp_path / "data-dictionary.json").write_text(json.dumps(stored))
    assert datadict.main(["--out", str(out)]) == 1
    assert datadict.main(["--check", "--out", str(out)]) == 1


def test_output_doc_covers_the_sponsor_dataset() -> None:
    text = datadict.render_markdown()
    assert "## Sponsor snapshot (sponsor/)" in text
    for name in Sponsor.to_schema().columns:
        assert f"`{name}`" in text or name.startswith("^criterion"), name
    assert "sponsor-manifest.json" in text


# --------------------------------------------------------------------------------------------------
# Command line and the stratify wiring
# --------------------------------------------------------------------------------------------------


def test_publish_and_report_commands(
    demo: Demo, tmp_path: Path, no_key_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy_run(demo, tmp_path)
    assert cli_publish.main(["publish", str(run_dir)]) == 1
    assert KEY_ENV in capsys.readouterr().err
    code = cli_publish.main(
        ["publish", str(run_dir), "--key-file", str(demo.key_file), "--site", "drop", "--no-report"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "current for: SLE-CART-01" in out and "report:" not in out
    assert read_snapshot(run_dir / "sponsor")["site"].null_count() == demo.strata.height
    assert cli_publish.main(["report", str(run_dir), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_demo_key_via_the_command_line(demo: Demo, tmp_path: Path, no_key_env: None) -> None:
    run_dir = _copy_run(demo, tmp_path)
    assert cli_publish.main(["publish", str(run_dir), "--demo-key", "--no-report"]) == 0
    assert (tmp_path / "config" / "immunostrat" / "demo-pseudonym.key").is_file()
    manifest = json.loads((run_dir / "sponsor" / "manifest.json").read_text())
    assert manifest["privacy"]["pseudonym"]["key_source"] == "demo key file"
    assert not (run_dir / "sponsor" / "report.html").exists()


def test_stratify_publishes_by_default(demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "publish" not in RunConfig.model_fields:
        pytest.skip("run.stratify does not publish yet (RunConfig has no `publish` section)")
    monkeypatch.setenv(KEY_ENV, KEY_TEXT)
    inputs = demo.root / "input"
    params = StratifyParams(
        labs=[str(inputs / "labs.parquet")],
        subjects=str(inputs / "subjects.parquet"),
        out=str(tmp_path),
        config=RunConfig(validation=ValidationConfig(as_of=AS_OF)),
    )
    run_dir = pipeline.stratify(params).run_dir
    assert (run_dir / "sponsor" / "manifest.json").is_file() and (tmp_path / CURRENT_MANIFEST).is_file()
    assert_frame_equal(
        read_snapshot(run_dir / "sponsor").drop("run_id"), read_snapshot(demo.result.snapshot_dir).drop("run_id")
    )


def test_manifest_timestamps_are_utc(demo: Demo) -> None:
    published = dt.datetime.fromisoformat(demo.result.manifest["published_at"])
    assert published.utcoffset() == dt.timedelta(0)


def test_a_large_run_is_published_chunk_by_chunk_with_the_same_rows_in_the_same_order(
    demo: Demo, tmp_path: Path
) -> None:
    """Above `chunk_subjects`, each study is written as pseudonym-prefix buckets: same table, same report."""
    import re

    run_dir = _copy_run(demo, tmp_path)
    result = publish_run(run_dir, PublishConfig(key_file=demo.key_file, chunk_subjects=100), make_current=False)
    assert_frame_equal(read_snapshot(result.snapshot_dir), read_snapshot(demo.result.snapshot_dir))
    for study, entry in result.manifest["studies"].items():
        names = [Path(f["path"]).name for f in entry["files"]]
        assert names == sorted(names) and len(names) > 1, study
        assert sum(f["rows"] for f in entry["files"]) == entry["rows"] == demo.result.manifest["studies"][study]["rows"]
    assert result.manifest["counts"] == demo.result.manifest["counts"]
    assert not list(result.snapshot_dir.rglob("*.ipc"))  # the spill files are gone

    def report(folder: Path) -> str:
        text = (folder / "report.html").read_text(encoding="utf-8")
        return re.sub(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}[^<\"]*", "TIME", text)

    assert report(result.snapshot_dir) == report(demo.result.snapshot_dir)


def test_a_pseudonym_repeated_across_chunks_is_refused(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk is checked alone, so uniqueness across chunks is checked per bucket: pseudonyms made to
    restart at 0…0 in every chunk pass each chunk's check and still stop the publication."""
    from immunostrat.sponsor import publish as publish_module

    real_rows = publish_module.sponsor_rows

    def restarting(*args: Any, **kwargs: Any) -> pl.DataFrame:
        rows = real_rows(*args, **kwargs)
        counter = pl.int_range(pl.len()).over("study_id").cast(pl.String).str.zfill(32)
        return rows.with_columns(subject_pseudonym=counter)

    monkeypatch.setattr(publish_module, "sponsor_rows", restarting)
    run_dir = _copy_run(demo, tmp_path)
    with pytest.raises(OutputContractError, match="sponsor dataset"):
        publish_run(run_dir, PublishConfig(key_file=demo.key_file, chunk_subjects=250), make_current=False)
    assert not (run_dir / "sponsor").exists()
