"""Validate lab rows: the lab row rules, duplicate measurements, and the split into accepted and quarantined.

The rule engine (one plan of rules per table, one pandera check, the readable quarantine) is
`immunostrat.stages.rules`; subjects and outcomes are `immunostrat.stages.subjects`; whether a row's subject
is enrolled is `immunostrat.stages.enrolment`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from immunostrat.followup.urinalysis import RANGE_REVERSED, SEMI_QUANTITATIVE_ANALYTES, WORD_UNMAPPED
from immunostrat.schemas.inputs import LabCandidate
from immunostrat.stages.enrolment import enrolment_rules, lab_enrolment, subject_refusals
from immunostrat.stages.rules import Rule, Split, apply_rules, filled, is_repeated, rule_flags, string

_DUP_KEY = ["study_id", "subject_id", "analyte", "collected_at_parsed", "method"]
#: What `harmonised_table` reads from accepted lab rows.
ACCEPTED_LAB_COLUMNS = (
    "study_id",
    "subject_id",
    "site_id",
    "analyte",
    "value",
    "value_high",
    "unit_canonical",
    "censoring",
    "ref_low_value",
    "ref_high_value",
    "lloq_value",
    "method",
    "collected_at_parsed",
    "collected_date",
    "test",
    "result",
    "unit",
    "source_file",
    "source_row",
)


def lab_rules(as_of: dt.date, ifn_methods: Sequence[str]) -> list[Rule]:
    """The row rules for harmonised lab candidates, in priority order.

    A declarative rule table, kept whole so that the rules read as one list.
    """
    value = pl.col("value")
    high = pl.col("value_high")
    problem = pl.col("_result_problem")
    is_count = pl.coalesce("analyte", "analyte_reported").is_in(SEMI_QUANTITATIVE_ANALYTES).fill_null(False)
    count_forms = ", ".join(SEMI_QUANTITATIVE_ANALYTES)
    return [
        Rule(
            "TEST_MISSING",
            "test",
            "the test is empty",
            pl.col("analyte_reported").is_not_null(),
            string("a test name or code (canonical analyte, LOINC, CDISC LBTESTCD or a configured alias)"),
        ),
        Rule(
            "STUDY_ID_MISSING",
            "study_id",
            "study_id is empty",
            filled("study_id"),
            string("a study identifier"),
        ),
        Rule(
            "SUBJECT_ID_MISSING",
            "subject_id",
            "subject_id is empty",
            filled("subject_id"),
            string("a subject identifier"),
        ),
        Rule(
            "RESULT_MISSING",
            "result",
            "the result is empty",
            pl.col("_present_result"),
            string("a numeric result, optionally censored (<10, >800)"),
        ),
        Rule(
            "RESULT_RANGE_REVERSED",
            "result",
            "the result is a range whose lower bound is above its upper bound",
            (problem != RANGE_REVERSED).fill_null(True),
            string("a range low-high with low <= high (e.g. 3-5 per field)"),
        ),
        Rule(
            "RESULT_WORD_UNMAPPED",
            "result",
            "the result is a word that has no configured reading",
            (problem != WORD_UNMAPPED).fill_null(True),
            pl.format(
                "a count for {}: a number, a range (3-5), <x or >x, or TNTC; words are never guessed: map this "
                "one to an interval in harmonise.urine_count_words (e.g. few: [1, 5])",
                pl.coalesce("analyte", "analyte_reported"),
            ),
        ),
        Rule(
            "RESULT_NOT_NUMERIC",
            "result",
            "the result is not a number or a censored number",
            ~pl.col("_present_result")
            | pl.col("value_reported").is_not_null()
            | problem.is_in([RANGE_REVERSED, WORD_UNMAPPED]).fill_null(False),
            pl.when(is_count)
            .then(string(f"a count ({count_forms}): a number, a range (3-5), <x or >x, TNTC, or a mapped word"))
            .otherwise(string("a number, optionally censored (<10, >800, <=, >=); text results are not quantitative")),
        ),
        Rule(
            "UNIT_UNKNOWN",
            "unit",
            "the unit is not known for this analyte",
            pl.col("analyte_reported").is_null() | pl.col("analyte").is_not_null(),
            pl.format("a unit known for {}: {}", "analyte_reported", "allowed_units"),
        ),
        Rule(
            "UNIT_NEEDS_UPPER_LIMIT",
            "ref_high",
            "a kit-specific unit cannot be converted without the lab's upper limit",
            (pl.col("conversion") != "per_upper_limit").fill_null(True)
            | (pl.col("ref_high_reported") > 0).fill_null(False),
            pl.format(
                "a reference upper limit > 0: {} in '{}' is kit-specific, not convertible to IU/mL, and is "
                "expressed as a multiple of the lab's own upper limit",
                "analyte_reported",
                "unit",
            ),
        ),
        Rule(
            "IFN_METHOD_UNKNOWN",
            "method",
            "an IFN score names no method, or a method without a known cut-off",
            (pl.col("analyte") != "ifn_score").fill_null(True)
            | pl.col("method").is_in(list(ifn_methods)).fill_null(False),
            string(
                "an IFN-signature method with a known cut-off ("
                + ", ".join(ifn_methods)
                + "); scores from different methods are on different scales and are never pooled"
            ),
        ),
        Rule(
            "REF_LOW_INVALID",
            "ref_low",
            "ref_low is not a finite, non-negative number",
            ~pl.col("_present_ref_low")
            | (pl.col("ref_low_reported").is_finite() & (pl.col("ref_low_reported") >= 0)).fill_null(False),
            string("a plain, finite number >= 0, or empty"),
        ),
        Rule(
            "REF_HIGH_INVALID",
            "ref_high",
            "ref_high is not a finite, positive number",
            ~pl.col("_present_ref_high")
            | (pl.col("ref_high_reported").is_finite() & (pl.col("ref_high_reported") > 0)).fill_null(False),
            string("a plain, finite number > 0, or empty"),
        ),
        Rule(
            "REF_RANGE_INVERTED",
            "ref_low",
            "ref_low is above ref_high",
            (pl.col("ref_low_reported") <= pl.col("ref_high_reported")).fill_null(True),
            pl.format("ref_low not above ref_high ({})", "ref_high"),
        ),
        Rule(
            "LLOQ_INVALID",
            "lloq",
            "lloq is not a finite, non-negative number",
            # Refuses the row, as a bad ref_low does: a limit that cannot be read says the row's metadata is wrong,
            # and keeping the value without it would let a below-LLOQ result pass as a measured one.
            ~pl.col("_present_lloq")
            | (pl.col("lloq_reported").is_finite() & (pl.col("lloq_reported") >= 0)).fill_null(False),
            string(
                "a plain, finite number >= 0 in the row's unit (the assay's lower limit of quantification), or empty"
            ),
        ),
        Rule(
            "DATE_MISSING",
            "collected_at",
            "collected_at is empty",
            pl.col("_present_collected_at"),
            string("an ISO 8601 collection date"),
        ),
        Rule(
            "DATE_INVALID",
            "collected_at",
            "collected_at is not a valid ISO 8601 date",
            ~pl.col("_present_collected_at") | pl.col("collected_date").is_not_null(),
            string(
                "an ISO 8601 date YYYY-MM-DD or date-time YYYY-MM-DDThh:mm[:ss][Z|+hh:mm]; "
                "partial dates are not accepted"
            ),
        ),
        Rule(
            "DATE_AFTER_AS_OF",
            "collected_at",
            "the collection date is after the run's as_of date",
            (pl.col("collected_date") <= pl.lit(as_of)).fill_null(True),
            string(f"a date on or before the run's as_of date {as_of.isoformat()}"),
        ),
        Rule(
            "VALUE_NOT_FINITE",
            "result",
            "the result is not finite",
            value.is_finite().fill_null(True) & high.is_finite().fill_null(True),
            string("a finite number"),
        ),
        Rule(
            "VALUE_OUT_OF_RANGE",
            "result",
            "the value is outside the plausible range for the analyte",
            (~value.is_finite()).fill_null(True)
            | (
                value.is_between(pl.col("plausible_min"), pl.col("plausible_max")).fill_null(True)
                & high.is_between(pl.col("plausible_min"), pl.col("plausible_max")).fill_null(True)
            ),
            pl.format(
                "a plausible {} between {} and {} {} (this row converts to {} {})",
                "analyte",
                "plausible_min",
                "plausible_max",
                "unit_canonical",
                "value",
                "unit_canonical",
            ),
        ),
        *enrolment_rules(),
        Rule(
            "DUPLICATE_CONFLICT",
            "result",
            "another row reports a different result for the same measurement",
            ~pl.col("_dup_conflict"),
            pl.format(
                "one result per subject, analyte, collection time and method; rows {} of {} disagree",
                "_dup_rows",
                "_dup_first_file",
            ),
        ),
        Rule(
            "DUPLICATE_ROW",
            "result",
            "the row repeats an earlier row exactly",
            ~pl.col("_dup_repeat"),
            pl.format("no repeated measurements; this repeats {} row {}", "_dup_first_file", "_dup_first_row"),
        ),
    ]


def _with_duplicate_flags(frame: pl.DataFrame, basic_ok: pl.Series) -> pl.DataFrame:
    """Flag conflicting and repeated measurements among rows that pass every other rule (`basic_ok`).

    Duplicates are rare, so rows are first narrowed to those whose key hash occurs more than once (a cheap
    pass); the exact group analysis then runs on that small subset only. Hash collisions can only widen the
    subset, never change a flag, because the analysis groups on the exact key. The flags come back as
    columns stacked beside the wide frame (joined on a bare row position, never the wide frame itself).
    """
    # An interval's upper bound is part of the result: "3-5" and "3-8" disagree.
    narrow = frame[[*_DUP_KEY, "value", "value_high", "censoring", "source_file", "source_row"]].with_row_index("_pos")
    maybe = narrow.filter(basic_ok & is_repeated(narrow[_DUP_KEY].hash_rows()))
    analysed = (
        maybe.select("_pos", *_DUP_KEY, "value", "value_high", "censoring", "source_file", "source_row")
        .with_columns(
            _n_versions=pl.struct("value", "value_high", "censoring").n_unique().over(_DUP_KEY),
            _first_pos=pl.col("_pos").min().over(_DUP_KEY),
            _dup_first_file=pl.col("source_file").first().over(_DUP_KEY),
            _dup_first_row=pl.col("source_row").first().over(_DUP_KEY),
            # Name every row of a conflicting group in its message.
            _dup_rows=pl.col("source_row").sort().cast(pl.String).str.join(", ").over(_DUP_KEY),
        )
        .with_columns(
            _dup_conflict=pl.col("_n_versions") > 1,
            _dup_repeat=(pl.col("_n_versions") == 1) & (pl.col("_pos") != pl.col("_first_pos")),
        )
        .filter(pl.col("_dup_conflict") | pl.col("_dup_repeat"))
        .select("_pos", "_dup_conflict", "_dup_repeat", "_dup_first_file", "_dup_first_row", "_dup_rows")
    )
    flags = (
        narrow.select("_pos")
        .join(analysed, on="_pos", how="left", maintain_order="left")
        .select(
            pl.col("_dup_conflict").fill_null(False),
            pl.col("_dup_repeat").fill_null(False),
            "_dup_first_file",
            "_dup_first_row",
            "_dup_rows",
        )
    )
    return frame.hstack(flags)


def validate_labs(
    candidates: pl.DataFrame,
    as_of: dt.date,
    ifn_methods: Sequence[str],
    enrolled: pl.DataFrame | None = None,
    refused: pl.DataFrame | None = None,
) -> Split:
    """Split harmonised lab candidates into accepted rows and quarantine.

    Args:
        candidates: output of `harmonise_labs` (stripped identifiers, `_present_<col>` flags, typed columns).
        as_of: the run's as_of date; later collection dates are quarantined.
        ifn_methods: IFN-signature methods with a known cut-off (upper-case).
        enrolled: (study_id, subject_id) of valid subjects; None to skip the enrolment rules.
        refused: the subjects file's quarantine (`validate_subjects(...).quarantine`), read with `enrolled`:
            the rows of a subject refused there are SUBJECT_REFUSED, and their message names the subject's
            row and reason. Without it every subject missing from `enrolled` is SUBJECT_NOT_ENROLLED.
    """
    refusals = subject_refusals(refused)
    if enrolled is None:
        frame = candidates.with_columns(_enrolled=pl.lit(True), _refused=pl.lit(False))
    else:
        frame = candidates.hstack(lab_enrolment(candidates, enrolled, refusals))
    rules = lab_rules(as_of, ifn_methods)
    flags = rule_flags(frame, [r for r in rules if not r.code.startswith("DUPLICATE_")])
    frame = _with_duplicate_flags(frame, flags.select(pl.all_horizontal(pl.all())).to_series())

    def why_refused(failed: pl.LazyFrame) -> pl.LazyFrame:
        return failed.join(refusals.lazy(), on=["study_id", "subject_id"], how="left", maintain_order="left")

    return apply_rules(
        frame, LabCandidate, rules, keep=ACCEPTED_LAB_COLUMNS, flags=flags, annotate=why_refused, input_kind="labs"
    )
