"""Fuzz the ingest-to-quarantine stages with 10,000+ generated hostile lab files, counting every outcome.

Usage:
    python benchmarks/fuzz.py [--files 10000] [--workers 2] [--seed 0] [--keep DIR] [--out FILE]

Each file comes from the hypothesis strategies of `tests/test_fuzz_formats.py` (CSV and Parquet with random
defects in values, columns, syntax, encoding and structure), widened here with Parquet byte flips and time
zones polars does not know. Every file goes through the stage functions in-process (`io.read_labs`, then
`run.prepare`: harmonise and validate), exactly as `immunostrat validate` runs them; a Prefect server is never
started. Outcomes are counted:

- ``clean``: read, nothing quarantined; ``quarantined``: read, some rows quarantined (accounting checked);
- ``input_error:<kind>``: refused with an `InputError` naming the file (kind from its message);
- ``violation:<what>``: a property broken (accounting, a must-fail file read, an error not naming the file);
- ``unexpected:<type>``: any other exception, with its full traceback; the file is kept (``--keep``).

This is not part of the CI test run (it takes minutes); results go to ``--out`` (JSON) and are summarised in
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Kinds of InputError, from the text after "<path>: ".
_KINDS = [
    (r"SDTM .* lacks required variable|not an SDTM LB", "missing required column"),
    (r"cannot be read as (JSON|Dataset-JSON NDJSON)|is not a JSON resource", "JSON damaged"),
    (r"Dataset-JSON", "Dataset-JSON structure"),
    (r"FHIR", "FHIR structure"),
    (r"SAS XPORT", "XPT damaged"),
    (r"file not found", "not found"),
    (r"is empty \(0 bytes\)", "empty file"),
    (r"has no header row", "no header"),
    (r"invalid utf-8|UTF-8", "not UTF-8"),
    (r"missing required column", "missing required column"),
    (r"appear more than once|more than one occurrence", "repeated column"),
    (r"cannot be read as text", "column type"),
    (r"found more fields|CSV malformed|could not parse", "CSV syntax"),
    (r"cannot be read as PARQUET", "Parquet damaged"),
    (r"cannot be read as CSV", "CSV other"),
]


def classify(message: str) -> str:
    """A short kind for an InputError message (the path prefix is ignored)."""
    for pattern, kind in _KINDS:
        if re.search(pattern, message):
            return kind
    return "other"


def cause(message: str) -> str:
    """An exception message reduced to its cause (the innermost panic text, numbers replaced) for counting."""
    text = re.sub(r"\d+", "N", message.replace("\\", ""))
    for marker in ('Panic(Id(N), "', 'ErrString("'):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return text.split('", ...)')[0].split("\n")[0][:110]


def _fuzz_strategy() -> Any:
    from hypothesis import strategies as st

    from tests import test_fuzz_formats
    from tests.test_fuzz_formats import (
        PANIC_TIME_ZONES,
        TIME_ZONES,
        _readers_present,
        csv_files,
        fhir_files,
        parquet_files,
        sdtm_files,
    )

    # What the CI property leaves out because it finds known bugs every time: back in for the campaign.
    test_fuzz_formats.ODD_DATES.extend(test_fuzz_formats.CRASH_DATES)
    native = [csv_files(), parquet_files(zones=[*TIME_ZONES, *PANIC_TIME_ZONES], flips=True)]
    return st.one_of(*native, *((sdtm_files(), fhir_files()) if _readers_present() else ()))


def _examine(fuzz: Any, path: Path, tally: dict[str, Any], keep: Path | None) -> None:
    """Run one file through the stages and record its outcome."""
    path.write_bytes(fuzz.data)
    damage = next((d.split(":", 1)[1] for d in fuzz.defects if d.startswith(("csv:", "parquet:", "damage:"))), "?")
    tally["families"][f"{fuzz.fmt}:{damage}"] += 1
    started = time.perf_counter()
    outcome, detail = _outcome(fuzz, path, tally)
    tally["seconds"] += time.perf_counter() - started
    tally["outcomes"][outcome] += 1
    if detail is not None:
        _keep_sample(fuzz, path, tally, keep, outcome=outcome, detail=detail)
    tally["files"] += 1


def _outcome(fuzz: Any, path: Path, tally: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """Read and prepare one file: its outcome, and the detail of a violation or unexpected error (else None).

    Counts the rows of a file that was read, and the cause of an unexpected error, in `tally`.
    """
    from immunostrat.ingest.io import InputError
    from tests.test_fuzz_formats import check_accounting, check_input_error, run_file

    try:
        prepared = run_file(path)
    except InputError as exc:
        try:
            check_input_error(exc, path)
        except AssertionError as bad:
            return "violation:error does not name the file", {"message": str(exc), "check": str(bad)}
        return f"input_error:{classify(str(exc))}", None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        tally["causes"][f"{type(exc).__name__}: {cause(str(exc))}"] += 1
        detail = {"message": str(exc)[:2000], "traceback": traceback.format_exc()[-6000:]}
        return f"unexpected:{type(exc).__module__}.{type(exc).__name__}", detail
    if fuzz.must_fail:
        return "violation:must fail but was read", {"why": fuzz.must_fail}
    try:
        check_accounting(prepared, path, native=fuzz.fmt in ("csv", "parquet"))
    except AssertionError as bad:
        return "violation:accounting", {"check": str(bad)[:2000]}
    counts = prepared.counts
    tally["rows"]["read"] += counts["rows_read"]
    for name in ("quarantined", "outside_panel", "accepted"):  # three counters
        tally["rows"][name] += counts[name]
    return ("quarantined" if counts["quarantined"] else "clean"), None


def _keep_sample(
    fuzz: Any, path: Path, tally: dict[str, Any], keep: Path | None, *, outcome: str, detail: dict[str, Any]
) -> None:
    """Keep up to five samples per outcome in the report, and the file itself under `keep`."""
    kept = None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        what = re.sub(r"\W+", "_", outcome.split(":", 1)[1])
        name = f"{what}-s{tally['seed']}-{tally['files']:05d}"
        kept = keep / f"{name}-{path.name}"
        kept.write_bytes(fuzz.data)
    samples = tally["samples"].setdefault(outcome, [])
    if len(samples) < 5:
        samples.append({"defects": fuzz.defects, "kept": str(kept) if kept else None, **detail})


def worker(files: int, seed: int, keep: str | None) -> dict[str, Any]:
    """Generate and examine `files` files with hypothesis seeded by `seed`."""
    sys.path.insert(0, str(ROOT))
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    tally: dict[str, Any] = {
        "seed": seed,
        "files": 0,
        "seconds": 0.0,
        "outcomes": collections.Counter(),
        "families": collections.Counter(),
        "rows": collections.Counter(),
        "causes": collections.Counter(),
        "samples": {},
    }
    keep_dir = Path(keep) if keep else None
    strategy = _fuzz_strategy()
    with tempfile.TemporaryDirectory(prefix="immunostrat-fuzz-") as tmp:
        batch = 0
        while tally["files"] < files:
            todo = min(1000, files - tally["files"])

            @hseed(seed * 1_000_003 + batch)
            @settings(
                max_examples=todo,
                database=None,
                phases=[Phase.generate],
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(strategy)
            def one(fuzz: Any) -> None:
                if tally["files"] < files:
                    _examine(fuzz, Path(tmp) / fuzz.name, tally, keep_dir)

            one()
            batch += 1
    return tally


def merge(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the workers' counters and keep up to five samples per outcome."""
    merged: dict[str, Any] = {
        "files": 0,
        "seconds_in_stages": 0.0,
        "outcomes": collections.Counter(),
        "families": collections.Counter(),
        "rows": collections.Counter(),
        "causes": collections.Counter(),
        "samples": {},
    }
    for t in tallies:
        merged["files"] += t["files"]
        merged["seconds_in_stages"] += t["seconds"]
        for key in ("outcomes", "families", "rows", "causes"):
            merged[key].update(t[key])
        for outcome, samples in t["samples"].items():
            merged["samples"].setdefault(outcome, []).extend(samples)
    for key in ("outcomes", "families", "rows", "causes"):
        merged[key] = dict(sorted(merged[key].items(), key=lambda kv: (-kv[1], kv[0])))
    merged["samples"] = {k: v[:5] for k, v in sorted(merged["samples"].items())}
    return merged


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzing campaign; exit 1 when any violation or unexpected exception was found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files to generate (default 10000)")
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--seed", type=int, default=0, help="base seed (worker i uses seed + i)")
    parser.add_argument("--keep", help="keep files with unexpected outcomes here (default: OUT's folder/fuzz-kept)")
    parser.add_argument("--out", default=str(HERE / "results" / "fuzz.json"), help="JSON results file")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = args.keep or str(out.parent / "fuzz-kept")
    shares = [args.files // args.workers + (1 if i < args.files % args.workers else 0) for i in range(args.workers)]
    started = time.perf_counter()
    if args.workers == 1:
        tallies = [worker(shares[0], args.seed, keep)]
    else:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            tallies = pool.starmap(worker, [(n, args.seed + i, keep) for i, n in enumerate(shares)])
    wall = time.perf_counter() - started
    result = {
        "command": " ".join(sys.argv),
        "seed": args.seed,
        "workers": args.workers,
        "wall_seconds": round(wall, 1),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **merge(tallies),
    }
    result["seconds_in_stages"] = round(result["seconds_in_stages"], 1)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")

    print(f"{result['files']} files in {wall:.0f} s ({args.workers} workers); results in {out}")
    for outcome, n in result["outcomes"].items():
        print(f"  {outcome:<60} {n:>7}")
    for what, n in result["causes"].items():
        print(f"    cause: {what:<100} {n:>7}")
    bad = {k: v for k, v in result["outcomes"].items() if k.startswith(("violation:", "unexpected:"))}
    for outcome, samples in result["samples"].items():
        if outcome in bad:
            print(f"\n{outcome}: first sample\n{json.dumps(samples[0], indent=2)[:3000]}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
