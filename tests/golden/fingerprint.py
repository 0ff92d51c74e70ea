"""Golden fingerprints: order-independent hashes of every output table and a declared subset of run.json.

Taken on the code before the one-pipeline redesign (issue 11) and held by `tests/test_golden.py`, so that any
refactor of the orchestration shows that it left every existing table unchanged. Regenerate (only for a
deliberate, documented change of outputs) with::

    python -m tests.golden.fingerprint --write

Floats are rounded to 9 significant digits before hashing: scoring multiplies by the model's coefficients, and
a different BLAS kernel on another machine may change the last bits of a product (never the 9th digit).
Row order is not part of a fingerprint (streamed runs order rows partition by partition); each table's
fingerprint is the sorted list of its rows' hashes, hashed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).parent
GOLDEN = HERE / "fingerprints.json"
REPO = HERE.parents[1]
READERS = REPO / "tests" / "data" / "readers"
PILOT = REPO.parent / "shared" / "samples" / "sdtm-cdiscpilot01"
AS_OF = "2026-11-01"
KEY = "immunostrat-golden-fingerprints-only-" + "0" * 27

# run.json keys whose values are part of a fingerprint (paths reduced to file names, floats rounded).
RUN_JSON_KEYS = ("status", "as_of", "counts", "summary", "protocol", "model.model_id", "model.cutoffs", "drift")
# Per-run folder or sponsor tables are fingerprinted when present; new files are additions, not changes.
TABLES = ("strata.parquet", "harmonised.parquet", "quarantine.parquet", "outside_panel.parquet")
# Columns that differ between any two runs by design (the run's own id).
VOLATILE_COLUMNS = ("run_id",)
# Keys a streaming run reports differently by design (documented in docs/operations.md).
STREAMING_DIFFERENCES = ("counts.sdtm_baseline_flags",)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return value
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {str(k): _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _basename_keys(value: Any) -> Any:
    """Reduce absolute paths (dict keys and values) to file names: runs happen in temporary folders."""
    if isinstance(value, dict):
        return {(Path(k).name if "/" in str(k) else k): _basename_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_basename_keys(v) for v in value]
    if isinstance(value, str) and "/" in value:
        return Path(value).name
    return value


def table_fingerprint(frame: pl.DataFrame, folders: tuple[str, ...] = ()) -> dict[str, Any]:
    """Rows, columns and an order-independent hash of the rows (floats rounded, paths as file names).

    `folders` (the run's temporary folders) are replaced by a placeholder wherever text names them (messages).
    """
    exprs = []
    for name, dtype in frame.schema.items():
        if name in VOLATILE_COLUMNS:
            continue
        col = pl.col(name)
        if dtype.is_float():
            col = col.round_sig_figs(9)
        if name == "source_file":
            col = col.str.extract(r"([^/]+)$")
        elif dtype == pl.String:
            for folder in folders:
                col = col.str.replace_all(folder, "<folder>", literal=True)
        exprs.append(col)
    rows = frame.select(exprs).rows()
    digests = sorted(hashlib.sha256(json.dumps(r, default=str).encode()).hexdigest() for r in rows)
    return {
        "rows": frame.height,
        "columns": [c for c in frame.columns],
        "sha256": hashlib.sha256("".join(digests).encode()).hexdigest(),
    }


def _pick(manifest: dict[str, Any], dotted: str) -> Any:
    value: Any = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def run_fingerprint(run_dir: Path, folders: tuple[str, ...] = ()) -> dict[str, Any]:
    """Fingerprints of a run folder's tables and of the declared run.json keys."""
    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    tables = {
        name: table_fingerprint(pl.read_parquet(run_dir / name), folders)
        for name in TABLES
        if (run_dir / name).exists()
    }
    sponsor = run_dir / "sponsor"
    if sponsor.is_dir():
        for path in sorted(sponsor.rglob("*.parquet")):
            rel = path.relative_to(run_dir).as_posix()
            tables[rel] = table_fingerprint(pl.read_parquet(path, hive_partitioning=False), folders)
    keys = {k: _round(_basename_keys(_pick(manifest, k))) for k in RUN_JSON_KEYS}
    return {"tables": tables, "run_json": keys}


def _stratify(args: list[str], out: Path, key_file: Path) -> Path:
    from immunostrat.cli.main import main

    fixed = ["--out", str(out), "--as-of", AS_OF, "--engine", "local", "--key-file", str(key_file)]
    code = main(["stratify", *args, *fixed])
    if code != 0:
        raise RuntimeError(f"stratify exited {code}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def _demo_cohort(work: Path) -> list[str]:
    cohort = work / "demo-input"
    if not cohort.exists():
        from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

        write_cohort(generate_cohort(SynthConfig(n_subjects=500, seed=7)), cohort, fmt="parquet")
    return ["--labs", str(cohort / "labs.parquet"), "--subjects", str(cohort / "subjects.parquet")]


def _mixed_sources(work: Path) -> list[str]:
    return [
        "--labs", str(READERS / "sdtm_lb.csv"), str(READERS / "sdtm_cp.json"),
        str(READERS / "fhir_observations.ndjson"),
        "--expression", str(READERS / "expression_matrix.csv"), "--samples", str(READERS / "expression_samples.csv"),
        "--crosswalk", str(READERS / "crosswalk.csv"), "--subjects", str(READERS / "sdtm_dm.csv"), "--no-publish",
    ]  # fmt: skip


def _pilot(work: Path) -> list[str]:
    return ["--labs", str(PILOT / "lb.xpt"), "--subjects", str(PILOT / "dm.xpt"), "--no-publish"]


SCENARIOS: dict[str, Callable[[Path], list[str]]] = {
    "demo": _demo_cohort,
    "demo-partitioned": lambda work: [*_demo_cohort(work), "--partitions", "3", "--no-publish"],
    "demo-streamed": lambda work: [*_demo_cohort(work), "--streaming", "--partition-rows", "10000", "--no-publish"],
    "fhir-sdtm-expression": _mixed_sources,
    "cdisc-pilot": _pilot,
}


def available(name: str) -> bool:
    """The CDISC pilot lives in ../shared beside the repository; every other scenario is self-contained."""
    return name != "cdisc-pilot" or (PILOT / "lb.xpt").is_file()


def fingerprint_scenario(name: str, work: Path) -> dict[str, Any]:
    key_file = work / "pseudonym.key"
    if not key_file.exists():
        key_file.write_text(KEY + "\n", encoding="utf-8")
        key_file.chmod(0o600)
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    # Longest first, so that a folder inside another is replaced whole.
    folders = tuple(sorted({str(work), str(REPO), str(PILOT)}, key=len, reverse=True))
    return run_fingerprint(_stratify(SCENARIOS[name](work), out, key_file), folders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN.relative_to(REPO)}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = {name: fingerprint_scenario(name, Path(tmp)) for name in SCENARIOS if available(name)}
    text = json.dumps(found, indent=1, sort_keys=True) + "\n"
    if args.write:
        GOLDEN.write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
