"""Time each stratify stage in one process; prints one JSON line of seconds per stage (last line).

Usage: python benchmarks/stages.py LABS SUBJECTS OUTDIR
Called by benchmarks/run.py; useful alone when profiling (e.g. under py-spy or pyinstrument).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

from immunostrat import run as pipeline
from immunostrat.config import HarmoniseConfig, RunConfig, ValidationConfig, load_protocol


def main() -> int:
    labs, subjects, out = sys.argv[1:4]
    cfg = RunConfig(
        harmonise=HarmoniseConfig(ifn_default_method="MEDIAN_FC_21"),
        validation=ValidationConfig(as_of=dt.date(2026, 11, 1)),
    )
    protocol = load_protocol()
    times: dict[str, float] = {}

    def lap(name: str, start: float) -> float:
        now = time.perf_counter()
        times[name] = round(now - start, 3)
        return now

    t = time.perf_counter()
    inputs = pipeline.read_inputs([labs], subjects)
    t = lap("ingest", t)
    prepared = pipeline.prepare(inputs, cfg)
    t = lap("harmonise_validate", t)
    strata = pipeline.build_strata(prepared, protocol, cfg)
    t = lap("baseline_eligibility", t)
    run_id = pipeline.new_run_id()
    scored, model = pipeline.score(strata, cfg, run_id)
    t = lap("score", t)
    manifest = pipeline.base_manifest(inputs, cfg, protocol, dt.datetime.now(dt.UTC))
    manifest.update(
        status="completed", counts=prepared.counts, model=model, summary=pipeline.summary_stats(scored, protocol)
    )
    outputs = pipeline.write_run(out, run_id, strata=scored, prepared=prepared, manifest=manifest)
    t = lap("write", t)
    from immunostrat.publish import publish_run

    publish_run(outputs.run_dir, cfg.publish)
    lap("publish", t)
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
