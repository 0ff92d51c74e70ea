"""What changed since the last monitor run (issue 13): findings from a run's tables and their comparison, each
difference sorted into new, resolved or corrected. Expected values are worked by hand."""

from __future__ import annotations

import datetime as dt

import polars as pl

from immunostrat.followup.changes import change_counts, comparable, compare_findings, findings

D = dt.date
DAY0 = D(2025, 1, 1)
PREVIOUS_AS_OF = D(2025, 3, 1)  # day 59


def _endpoints(*rows: tuple[str, str, bool | None, int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "study_id": "S",
                "subject_id": subject,
                "endpoint": "doris_remission",
                "landmark": landmark,
                "met": met,
                "visit_day": day,
                "visit_date": None if day is None else DAY0 + dt.timedelta(days=day),
            }
            for subject, landmark, met, day in rows
        ],
        schema_overrides={"met": pl.Boolean, "visit_day": pl.Int32, "visit_date": pl.Date},
    )


def _grades(*rows: tuple[str, str, int, int | None, int]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "study_id": "S",
                "subject_id": subject,
                "term": term,
                "grade": grade,
                "baseline_grade": baseline,
                "days_since_infusion": day,
                "collected_date": DAY0 + dt.timedelta(days=day),
            }
            for subject, term, grade, baseline, day in rows
        ],
        schema_overrides={"grade": pl.Int64, "baseline_grade": pl.Int64},
    )


def test_findings_keep_severe_treatment_emergent_grades_and_met_endpoints_only() -> None:
    grades = _grades(
        ("P1", "neutrophil count decreased", 4, 0, 5),  # severe, emergent
        ("P1", "neutrophil count decreased", 3, 0, 9),  # same term later: the earliest onset stands
        ("P2", "anemia", 3, 3, 20),  # as bad as at baseline: not emergent
        ("P3", "platelet count decreased", 2, 0, 7),  # not severe
        ("P4", "anemia", 3, 1, 0),  # day 0 is not after infusion
    )
    endpoints = _endpoints(("P1", "month_3", True, 91), ("P2", "month_3", False, 88), ("P3", "month_3", None, None))
    out = findings(endpoints=endpoints, lab_grades=grades)
    assert out.select("subject_id", "kind", "item", "day").rows() == [
        ("P1", "endpoint", "doris_remission@month_3", 91),
        ("P1", "toxicity", "neutrophil count decreased", 5),
    ]


def test_each_difference_gets_exactly_one_change() -> None:
    previous = findings(
        endpoints=_endpoints(("P1", "month_3", True, 91), ("P2", "month_3", True, 90)),
        lab_grades=_grades(("P3", "anemia", 3, 0, 30), ("P4", "anemia", 3, 0, 40)),
    )
    endpoints_now = _endpoints(("P1", "month_3", True, 91), ("P2", "month_3", False, 95))
    current = findings(
        endpoints=endpoints_now,
        lab_grades=_grades(
            ("P3", "anemia", 3, 0, 30),  # unchanged: not listed
            ("P4", "anemia", 3, 0, 42),  # onset moved: corrected
            ("P5", "anemia", 4, 0, 65),  # day 65 = 2025-03-07, after the cut-off: new
            ("P6", "anemia", 3, 0, 50),  # day 50, before the cut-off, absent before: corrected
        ),
    )
    changes = compare_findings(previous, current, PREVIOUS_AS_OF, endpoints_now=endpoints_now)
    assert changes.select("subject_id", "kind", "change").rows() == [
        ("P2", "endpoint", "resolved"),  # met before, evaluated and not met now
        ("P4", "toxicity", "corrected"),
        ("P5", "toxicity", "new"),
        ("P6", "toxicity", "corrected"),
    ]
    counts = change_counts(changes)
    assert counts["toxicity"] == {"new": 1, "resolved": 0, "corrected": 2}
    assert counts["endpoint"] == {"new": 0, "resolved": 1, "corrected": 0}
    assert counts["relapse"] == {"new": 0, "resolved": 0, "corrected": 0}


def test_a_finding_that_disappears_without_a_new_assessment_is_a_correction() -> None:
    previous = findings(lab_grades=_grades(("P1", "anemia", 3, 0, 30)))
    current = findings(lab_grades=_grades(("P1", "anemia", 2, 0, 30)))
    assert compare_findings(previous, current, PREVIOUS_AS_OF)["change"].to_list() == ["corrected"]


def test_relapses_are_dated_from_day_0() -> None:
    relapses = pl.DataFrame({"study_id": ["S"], "subject_id": ["P1"], "kind": ["flare"], "day": [70]})
    day0 = pl.DataFrame({"study_id": ["S"], "subject_id": ["P1"], "day0": [DAY0]})
    changes = compare_findings(findings(), findings(relapses=relapses), PREVIOUS_AS_OF, day0=day0)
    assert changes.select("item", "change", "day").rows() == [("flare", "new", 70)]


def test_runs_with_another_endpoint_definition_are_not_compared() -> None:
    definition = {"version": "1.1.0", "sha256": "b"}
    assert comparable(None, definition) == "no earlier completed monitor run in this output folder"
    reason = comparable({"summary": {"endpoint_definition": {"version": "1.0.0", "sha256": "a"}}}, definition)
    assert reason is not None and "1.0.0 -> 1.1.0" in reason
    assert comparable({"summary": {"endpoint_definition": definition}}, definition) is None
