"""The follow-up benchmark cohort: the one generator `monitor` is timed on (issues 12 and 13).

Usage:
    python benchmarks/gen_followup.py OUT SUBJECTS SEED [--format parquet|csv]

It is `immunostrat.synth.generate_cohort(SynthConfig(n_subjects=SUBJECTS, seed=SEED))` with its default
(messy) settings, written by `write_cohort` to OUT: `subjects`, `labs` (selection-time rows), `outcomes`,
`visits`, `labs_followup` and `events` (issue 13). Everything is vectorised (numpy + polars); the timings and
peak memory are printed as one JSON line. The design is in docs/synthetic.md ("Follow-up", "Immune course",
"Events"). The same generator serves 500 and 100,000 subjects.

What a cohort holds, per subject (data cut-off 2026-10-31, day 0 = infusion):

- **Subjects**: one row; 95 % infused (`infusion_date` = `first_exposure_date` + 3-5 days), about 3 %
  discontinued (withdrawal or death, 20-400 days after infusion).
- **Visits**: a SCREENING visit 0-7 days before `reference_date`; for infused subjects MONTH_1 (day 30 +- 3),
  MONTH_3 (90 +- 7), MONTH_6 (180 +- 7) and MONTH_12 (365 +- 14), each missed at 3 %, and for 25 % one
  UNSCHEDULED visit (days 40-75, 105-160 or 200-340). Visits after the cut-off or the discontinuation are not
  there, so MONTH_12 exists for about half the subjects: about 4.5 visits per subject in all.
- **Lab collections**: one per visit, on the visit date (platelets, wbc, neutrophils, hemoglobin, creatinine,
  egfr, upcr, urine_rbc, urine_wbc, urine_casts, cd19_b_cells, anti_dsdna, c3, c4; after infusion also
  lymphocytes and cd4_t_cells; igg at scheduled visits; urine_protein_24h at a quarter of visits; car_t_cells,
  and car_t_copies at half the sites, up to day 200). For infused subjects also early draws on days 0, 2, 4, 7,
  10, 14, 17, 21, 24 (blood count with lymphocytes, hemoglobin, creatinine, egfr; CAR-T from day 2; CD19 on
  days 4-21; CD4 on days 7-21) and monthly draws around days 60, 120, 150, 210-330 (blood count, creatinine,
  egfr, CD19; CD4 on days 120 and 240; CAR-T on day 60). Any row missing at 2 %. About 210 follow-up rows per
  subject, beside about 11 selection-time rows (`labs`, dated before first exposure).
- **Events**: per infused subject, 13 CRS/ICANS assessments (days 0-10, 12, 14): about 12 rows per subject.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Generate and write the follow-up benchmark cohort; print counts and timings as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("subjects", type=int, help="number of subjects")
    parser.add_argument("seed", type=int, help="random seed")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

    cohort = generate_cohort(SynthConfig(n_subjects=args.subjects, seed=args.seed))
    generated = time.perf_counter()
    paths = write_cohort(cohort, args.out, fmt=args.format)
    written = time.perf_counter()
    assert cohort.followup is not None  # the default config generates the follow-up
    print(
        json.dumps(
            {
                "subjects": args.subjects,
                "seed": args.seed,
                "visits": cohort.followup.visits.height,
                "followup_lab_rows": cohort.followup.labs.height,
                "event_rows": cohort.followup.events.height,
                "selection_lab_rows": cohort.labs.height,
                "generate_s": round(generated - start, 2),
                "write_s": round(written - generated, 2),
                # ru_maxrss is in KiB on Linux
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "files": {name: str(path) for name, path in paths.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
