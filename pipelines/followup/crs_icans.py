"""CRS and ICANS grades per assessment (ASTCT 2019, Lee et al. BBMT 2019;25:625), the worst per subject, and
disagreements with the site's reported grades.

Every grade is three-valued: each domain gives the lowest and the highest grade its known inputs allow (an
unknown input allows all its values), and the grade is known only when the two bounds meet. Both bounds are kept
(`*_lower_bound`, `*_upper_bound`), so an undetermined grade still says how bad it at least was. The grading is
monotone in every input, so the bounds are the grades with every unknown input set to its mildest and to its
worst value.

CRS (sle-domain-facts §6.1, follow-up-facts §4):
- Fever: `temperature_c` >= `CrsIcansConfig.fever_celsius_at_least` (38.0) and not attributed to another cause
  (`fever_other_cause`; null is unknown unless `fever_cause_unrecorded` says otherwise). `fever_other_cause` true
  makes the fever criterion false whatever the temperature.
- Hypotension: `hypotension`, else `systolic_bp` < `hypotension_systolic_below` (90). Vasopressors decide over the
  flag (a pressure held up by a vasopressor is the hypotension it treats): >= 2 vasopressors (vasopressin not
  counted) -> 4; one vasopressor, with or without vasopressin -> 3; vasopressin alone -> 3
  (`vasopressin_alone_is_vasopressor`, else 2); hypotension without vasopressors -> 2; otherwise 0.
- Hypoxia: `OXYGEN_DEVICE_GRADE` (data below). The device decides; the flow decides only for `nasal_cannula`
  (<= `low_flow_max_l_min`, 6 L/min -> 2, above -> 3; no flow -> 2 or 3, unknown). No device recorded: unknown
  (at least 2 when a flow > 0 is recorded).
- Grade: with fever, the worse of 1 and the hypotension and hypoxia grades; without fever but after
  anti-cytokine or antipyretic treatment (`anticytokine_or_antipyretic`, received at or before the assessment),
  the worse of hypotension and hypoxia (fever is no longer required); otherwise 0. So the grade is unknown when
  fever is unknown (unless the treatment and the other domains settle it), when fever is absent and the
  treatment is unknown and a hypotension or hypoxia grade is possible, or when fever or treatment is present and
  the hypotension or hypoxia domain is unknown beyond what the other one already decides.
- `crs_driver`: `none` (grade 0), `fever_only` (grade 1), else the domains known at the grade, `hypotension`,
  `hypoxia` or `hypotension+hypoxia`.

ICANS (follow-up-facts §4): the worst of five domains. ICE score 10 -> 0, 7-9 -> 1, 3-6 -> 2, 0-2 -> 3 (ICE 0 with
an unarousable patient is grade 4 through the consciousness domain); consciousness `ICANS_CONSCIOUSNESS_GRADE`;
seizure `ICANS_SEIZURE_GRADE`; deep focal motor weakness 4; cerebral edema `ICANS_EDEMA_GRADE`. Grade 0 needs all
five known normal. Under `ice_min_age_years` (12) the ICE domain is not assessable (ICE_NOT_VALIDATED_UNDER_12):
the grade is then known only when another domain reaches 3 or 4 (the ICE domain, at most 3, cannot change it);
otherwise it is null and the lower bound says what the other domains show. `icans_driver`: `none` or the domains
known at the grade in table order joined by `+` (e.g. `consciousness+seizure`).

Reasons (`crs_reason`, `icans_reason`) are set exactly when the grade is null and name, comma-separated, only the
unknown inputs that could change the grade (an unknown domain whose worst value cannot exceed what the known
domains already give is not named).

Per subject (`worst_crs_icans`): only assessments on or after day 0 count. The maximum is known when the largest
lower bound meets the largest upper bound. Onset: the day of the first assessment known to be grade >= 1, unless
an assessment on an earlier day could be (then unknown). Grade 5: `death_date` at most
`grade5_death_within_days` (7) days after the last assessment known to be grade >= 3 and no later assessment known
below 3 (an ongoing event); unknown when a later assessment's grade could be below 3 or not. A death is a signal
for review: the data do not say what caused it. A missing `death_date` column or value means no recorded death.
"""

from __future__ import annotations

import polars as pl

from immunostrat.config.followup import CrsIcansConfig
from immunostrat.followup.columns import with_optional_columns

__all__ = [
    "CRS_DRIVERS",
    "CRS_REASONS",
    "ICANS_CONSCIOUSNESS_GRADE",
    "ICANS_DOMAINS",
    "ICANS_EDEMA_GRADE",
    "ICANS_REASONS",
    "ICANS_SEIZURE_GRADE",
    "OXYGEN_DEVICE_GRADE",
    "WORST_REASONS",
    "disagreement_counts",
    "grade_crs_icans",
    "reported_disagreements",
    "worst_crs_icans",
]

KEY = ["study_id", "subject_id"]
GRADE = pl.Int8

#: ASTCT 2019 CRS hypoxia rows by oxygen device (Lee et al. 2019, table 2): low-flow nasal cannula or blow-by -> 2;
#: high-flow nasal cannula, facemask, non-rebreather, Venturi -> 3; positive pressure (CPAP, BiPAP, intubation and
#: mechanical ventilation) -> 4. `nasal_cannula` is None: its flow decides (`CrsIcansConfig.low_flow_max_l_min`).
OXYGEN_DEVICE_GRADE: dict[str, int | None] = {
    "none": 0,
    "nasal_cannula": None,
    "blow_by": 2,
    "high_flow_nasal_cannula": 3,
    "facemask": 3,
    "non_rebreather": 3,
    "venturi": 3,
    "cpap": 4,
    "bipap": 4,
    "mechanical_ventilation": 4,
}
#: ASTCT 2019 ICANS depressed level of consciousness.
ICANS_CONSCIOUSNESS_GRADE: dict[str, int] = {
    "awake": 0,
    "awakens_spontaneously": 1,
    "awakens_to_voice": 2,
    "awakens_to_touch": 3,
    "unarousable": 4,
}
#: ASTCT 2019 ICANS seizure: any clinical seizure that resolves rapidly -> 3; life-threatening prolonged
#: (> 5 min) or repetitive seizures without return to baseline in between -> 4.
ICANS_SEIZURE_GRADE: dict[str, int] = {"none": 0, "rapidly_resolving": 3, "prolonged_or_repetitive": 4}
#: ASTCT 2019 ICANS raised intracranial pressure / cerebral edema on neuroimaging.
ICANS_EDEMA_GRADE: dict[str, int] = {"none": 0, "focal": 3, "diffuse": 4}
#: ICANS domains in ASTCT table order (the order of `icans_driver`).
ICANS_DOMAINS: tuple[str, ...] = ("ice", "consciousness", "seizure", "motor", "cerebral_edema")
CRS_DRIVERS: tuple[str, ...] = ("none", "fever_only", "hypotension", "hypoxia", "hypotension+hypoxia")

#: Why `crs_grade` is null (comma-separated in `crs_reason`, in this order; null when the grade is known).
CRS_REASONS: dict[str, str] = {
    "FEVER_UNKNOWN": "Fever unknown: no temperature, or >= 38 C with the other-cause attribution not assessed.",
    "TREATMENT_UNKNOWN": "Whether anti-cytokine or antipyretic treatment was given is unknown (matters without fever).",
    "HYPOTENSION_UNKNOWN": "The hypotension domain is undetermined (hypotension, blood pressure or vasopressors "
    "not assessed).",
    "HYPOXIA_UNKNOWN": "The hypoxia domain is undetermined (no oxygen device, or a nasal cannula without its flow).",
}
#: Why `icans_grade` is null (comma-separated in `icans_reason`, in this order; null when the grade is known).
ICANS_REASONS: dict[str, str] = {
    "ICE_NOT_VALIDATED_UNDER_12": "The subject is younger than `ice_min_age_years`: the ICE score is not validated "
    "(a paediatric tool such as CAPD would be needed), so the ICE domain is not assessable.",
    "ICE_AGE_UNKNOWN": "The subject's age is unknown and `ice_when_age_unknown` is `not_assessable`.",
    "ICE_UNKNOWN": "No ICE score (or one outside 0-10).",
    "CONSCIOUSNESS_UNKNOWN": "Level of consciousness not assessed.",
    "SEIZURE_UNKNOWN": "Seizures not assessed.",
    "MOTOR_UNKNOWN": "Motor weakness not assessed.",
    "CEREBRAL_EDEMA_UNKNOWN": "Cerebral edema not assessed.",
}
#: Why a subject's worst grade is null (`crs_max_grade_reason`, `icans_max_grade_reason`).
WORST_REASONS: dict[str, str] = {
    "NOT_INFUSED": "The subject has no day 0.",
    "NO_ASSESSMENT": "No assessment on or after day 0.",
    "GRADE_UNKNOWN": "An assessment's grade is undetermined and could exceed the worst known grade.",
    "GRADE5_UNKNOWN": "Death within the grade-5 window after a grade >= 3 event, and a later assessment's grade "
    "(below 3 or not) is undetermined.",
}

_EVENT_COLUMNS: dict[str, pl.DataType] = {
    "temperature_c": pl.Float64(),
    "fever_other_cause": pl.Boolean(),
    "anticytokine_or_antipyretic": pl.Boolean(),
    "systolic_bp": pl.Float64(),
    "hypotension": pl.Boolean(),
    "vasopressors": pl.Int64(),
    "vasopressin": pl.Boolean(),
    "oxygen_device": pl.String(),
    "oxygen_flow_l_min": pl.Float64(),
    "ice_score": pl.Int64(),
    "consciousness": pl.String(),
    "icans_seizure": pl.String(),
    "motor_weakness": pl.Boolean(),
    "cerebral_edema": pl.String(),
    "crs_grade_reported": pl.Int64(),
    "icans_grade_reported": pl.Int64(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}


def _bounds(grade: pl.Expr, worst: int) -> tuple[pl.Expr, pl.Expr]:
    """(lower, upper) bounds of a domain grade that is null when unknown: 0 and `worst` for an unknown one."""
    return grade.fill_null(0), grade.fill_null(worst)


def _max(*exprs: pl.Expr) -> pl.Expr:
    return pl.max_horizontal(*exprs)


# --------------------------------------------------------------------------------------------------
# CRS
# --------------------------------------------------------------------------------------------------


def _hypotension_grade(hypotension: pl.Expr, vasopressors: pl.Expr, vasopressin: pl.Expr, alone: bool) -> pl.Expr:
    """ASTCT hypotension grade from known (non-null) inputs; monotone in each."""
    return (
        pl.when(vasopressors >= 2)
        .then(4)
        .when(vasopressors == 1)
        .then(3)
        .when(vasopressin)
        .then(3 if alone else 2)
        .when(hypotension)
        .then(2)
        .otherwise(0)
    )


def _crs_from(fever: pl.Expr, treated: pl.Expr, worst_organ: pl.Expr) -> pl.Expr:
    """CRS grade from known fever, treatment and the worse of the hypotension and hypoxia grades."""
    return pl.when(fever).then(_max(pl.lit(1), worst_organ)).when(treated).then(worst_organ).otherwise(0)


def _crs_columns(cfg: CrsIcansConfig) -> list[pl.Expr]:
    temperature, other = pl.col("temperature_c"), pl.col("fever_other_cause")
    if cfg.fever_cause_unrecorded == "not_other_cause":
        other = other.fill_null(False)
    # Kleene: a fever attributed to another cause is no fever, whatever the temperature.
    fever = (temperature >= cfg.fever_celsius_at_least) & ~other
    treated = pl.col("anticytokine_or_antipyretic")

    hypotension = pl.coalesce(pl.col("hypotension"), pl.col("systolic_bp") < cfg.hypotension_systolic_below)
    pressors, vasopressin = pl.col("vasopressors"), pl.col("vasopressin")
    alone = cfg.vasopressin_alone_is_vasopressor
    hypotension_lo = _hypotension_grade(
        hypotension.fill_null(False), pressors.fill_null(0), vasopressin.fill_null(False), alone
    )
    hypotension_hi = _hypotension_grade(
        hypotension.fill_null(True), pressors.fill_null(2), vasopressin.fill_null(True), alone
    )

    device, flow = pl.col("oxygen_device"), pl.col("oxygen_flow_l_min")
    by_device = device.replace_strict(
        {k: v for k, v in OXYGEN_DEVICE_GRADE.items() if v is not None}, default=None, return_dtype=pl.Int32
    )
    cannula = device == "nasal_cannula"
    cannula_by_flow = pl.when(flow <= cfg.low_flow_max_l_min).then(2).when(flow > cfg.low_flow_max_l_min).then(3)
    hypoxia = pl.when(cannula).then(cannula_by_flow).otherwise(by_device)
    hypoxia_lo = (
        pl.when(hypoxia.is_not_null())
        .then(hypoxia)
        .when(cannula)
        .then(2)
        # No (readable) device: some oxygen when a flow is recorded.
        .when((flow > 0).fill_null(False))
        .then(2)
        .otherwise(0)
    )
    hypoxia_hi = pl.when(hypoxia.is_not_null()).then(hypoxia).when(cannula).then(3).otherwise(4)

    organ_lo, organ_hi = _max(hypotension_lo, hypoxia_lo), _max(hypotension_hi, hypoxia_hi)
    lower = _crs_from(fever.fill_null(False), treated.fill_null(False), organ_lo)
    upper = _crs_from(fever.fill_null(True), treated.fill_null(True), organ_hi)
    grade = pl.when(lower == upper).then(lower)
    domains = pl.concat_str(
        pl.when(hypotension_lo == grade).then(pl.lit("hypotension")),
        pl.when(hypoxia_lo == grade).then(pl.lit("hypoxia")),
        separator="+",
        ignore_nulls=True,
    )
    driver = (
        pl.when(grade == 0)
        .then(pl.lit("none"))
        .when(grade == 1)
        .then(pl.lit("fever_only"))
        .when(grade >= 2)
        .then(domains)
    )
    reason = pl.when(grade.is_null()).then(
        pl.concat_str(
            # Each input only where it could change the grade: fever adds nothing after treatment with an
            # organ grade >= 2; treatment matters only without a known fever and with an organ grade possible; an
            # organ domain only where it could exceed the other's known grade.
            pl.when(fever.is_null() & ~(treated.fill_null(False) & (organ_lo >= 2))).then(pl.lit("FEVER_UNKNOWN")),
            pl.when(treated.is_null() & ~fever.fill_null(False) & (organ_hi >= 2)).then(pl.lit("TREATMENT_UNKNOWN")),
            pl.when((hypotension_lo != hypotension_hi) & (hypotension_hi > hypoxia_lo)).then(
                pl.lit("HYPOTENSION_UNKNOWN")
            ),
            pl.when((hypoxia_lo != hypoxia_hi) & (hypoxia_hi > hypotension_lo)).then(pl.lit("HYPOXIA_UNKNOWN")),
            separator=", ",
            ignore_nulls=True,
        )
    )
    return [
        grade.cast(GRADE).alias("crs_grade"),
        lower.cast(GRADE).alias("crs_grade_lower_bound"),
        upper.cast(GRADE).alias("crs_grade_upper_bound"),
        driver.alias("crs_driver"),
        reason.alias("crs_reason"),
    ]


# --------------------------------------------------------------------------------------------------
# ICANS
# --------------------------------------------------------------------------------------------------


def _ice_grade(score: pl.Expr) -> pl.Expr:
    """ICE score 10 -> 0, 7-9 -> 1, 3-6 -> 2, 0-2 -> 3; null (unknown) outside 0-10."""
    return (
        pl.when(score == 10)
        .then(0)
        .when(score.is_between(7, 9))
        .then(1)
        .when(score.is_between(3, 6))
        .then(2)
        .when(score.is_between(0, 2))
        .then(3)
    )


def _icans_columns(cfg: CrsIcansConfig) -> list[pl.Expr]:
    age = pl.col("_age_years")
    under_12 = (age < cfg.ice_min_age_years).fill_null(False)
    age_unknown = age.is_null() & pl.lit(cfg.ice_when_age_unknown == "not_assessable")
    ice_usable = ~under_12 & ~age_unknown
    ice = pl.when(ice_usable).then(_ice_grade(pl.col("ice_score")))

    def mapped(column: str, table: dict[str, int]) -> pl.Expr:
        return pl.col(column).replace_strict(table, default=None, return_dtype=pl.Int32)

    domains = {
        "ice": (ice, 3),
        "consciousness": (mapped("consciousness", ICANS_CONSCIOUSNESS_GRADE), 4),
        "seizure": (mapped("icans_seizure", ICANS_SEIZURE_GRADE), 4),
        "motor": (pl.when(pl.col("motor_weakness")).then(4).when(~pl.col("motor_weakness")).then(0), 4),
        "cerebral_edema": (mapped("cerebral_edema", ICANS_EDEMA_GRADE), 4),
    }
    bounds = {name: _bounds(expr, worst) for name, (expr, worst) in domains.items()}
    lower = _max(*(lo for lo, _ in bounds.values()))
    upper = _max(*(hi for _, hi in bounds.values()))
    grade = pl.when(lower == upper).then(lower)
    driver = (
        pl.when(grade == 0)
        .then(pl.lit("none"))
        .when(grade >= 1)
        .then(
            pl.concat_str(
                *(pl.when(bounds[d][0] == grade).then(pl.lit(d)) for d in ICANS_DOMAINS),
                separator="+",
                ignore_nulls=True,
            )
        )
    )
    # A domain is named only where it could raise the grade above what the known domains already give.
    open_ = {d: domains[d][0].is_null() & (bounds[d][1] > lower) for d in ICANS_DOMAINS}
    unknown_codes = {
        "ICE_NOT_VALIDATED_UNDER_12": under_12 & open_["ice"],
        "ICE_AGE_UNKNOWN": age_unknown & open_["ice"],
        "ICE_UNKNOWN": ice_usable & open_["ice"],
        "CONSCIOUSNESS_UNKNOWN": open_["consciousness"],
        "SEIZURE_UNKNOWN": open_["seizure"],
        "MOTOR_UNKNOWN": open_["motor"],
        "CEREBRAL_EDEMA_UNKNOWN": open_["cerebral_edema"],
    }
    reason = pl.when(grade.is_null()).then(
        pl.concat_str(
            *(pl.when(flag).then(pl.lit(code)) for code, flag in unknown_codes.items()),
            separator=", ",
            ignore_nulls=True,
        )
    )
    return [
        grade.cast(GRADE).alias("icans_grade"),
        lower.cast(GRADE).alias("icans_grade_lower_bound"),
        upper.cast(GRADE).alias("icans_grade_upper_bound"),
        driver.alias("icans_driver"),
        reason.alias("icans_reason"),
    ]


# --------------------------------------------------------------------------------------------------
# Per assessment
# --------------------------------------------------------------------------------------------------


def _subject_fields(subjects: pl.DataFrame) -> pl.DataFrame:
    """study_id, subject_id, `_day0`, `_age_years`, `_death_date` (absent columns as nulls), one row per subject."""
    optional = {"day0": pl.Date(), "age_years": pl.Float64(), "death_date": pl.Date()}
    return (
        with_optional_columns(subjects, optional)
        .select(
            *KEY,
            pl.col("day0").alias("_day0"),
            pl.col("age_years").cast(pl.Float64).alias("_age_years"),
            pl.col("death_date").alias("_death_date"),
        )
        .unique(subset=KEY, keep="first", maintain_order=True)
    )


def grade_crs_icans(events: pl.DataFrame, subjects: pl.DataFrame, config: CrsIcansConfig | None = None) -> pl.DataFrame:
    """CRS and ICANS grades per assessment (rules in the module docstring); contract `schemas.toxicity_events.CrsIcans`.

    Args:
        events: accepted events (`study_id`, `subject_id`, `assessed_at` and the optional columns of
            `_EVENT_COLUMNS`; an absent optional column counts as not assessed).
        subjects: accepted subjects (`study_id`, `subject_id`, `day0`, optional `age_years`); an assessment of a
            subject not listed has no `days_since_infusion` and an unknown age.
        config: grading settings (defaults when None).

    Returns:
        One row per assessment, in input order: identifiers, `assessed_at`, `days_since_infusion` (calendar days
        from day 0), per toxicity `<t>_grade` (null when undetermined), `<t>_grade_lower_bound`,
        `<t>_grade_upper_bound`, `<t>_driver`, `<t>_reason`, the reported grades and `source_file`, `source_row`.
    """
    cfg = config or CrsIcansConfig()
    frame = with_optional_columns(events, _EVENT_COLUMNS).join(
        _subject_fields(subjects), on=KEY, how="left", maintain_order="left"
    )
    days = (pl.col("assessed_at").dt.date() - pl.col("_day0")).dt.total_days().cast(pl.Int32)
    return frame.select(
        *KEY,
        "assessed_at",
        days.alias("days_since_infusion"),
        *_crs_columns(cfg),
        *_icans_columns(cfg),
        pl.col("crs_grade_reported").cast(GRADE),
        pl.col("icans_grade_reported").cast(GRADE),
        pl.col("source_file").cast(pl.String),
        pl.col("source_row").cast(pl.Int64),
    )


# --------------------------------------------------------------------------------------------------
# Per subject
# --------------------------------------------------------------------------------------------------


def _worst_one(graded: pl.LazyFrame, toxicity: str, cfg: CrsIcansConfig) -> pl.LazyFrame:
    """Per subject with assessments on or after day 0: the worst grade of one toxicity, its lower bound, onset day."""
    lo, hi = pl.col(f"{toxicity}_grade_lower_bound"), pl.col(f"{toxicity}_grade_upper_bound")
    day, at = pl.col("days_since_infusion"), pl.col("assessed_at")
    last_severe = at.filter(lo >= 3).max()
    later = at > last_severe
    per_subject = graded.group_by(KEY).agg(
        _lo=lo.max(),
        _hi=hi.max(),
        _first_known=day.filter(lo >= 1).min(),
        _first_possible=day.filter(hi >= 1).min(),
        _last_severe=last_severe,
        _resolved=(later & (hi < 3)).any(),
        _undetermined_later=(later & (hi >= 3)).any(),
        _death=pl.col("_death_date").first(),
    )
    within = (
        (pl.col("_death") - pl.col("_last_severe").dt.date())
        .dt.total_days()
        .is_between(0, cfg.grade5_death_within_days)
    )
    grade5 = (
        pl.when(pl.col("_last_severe").is_null() | ~within.fill_null(False) | pl.col("_resolved"))
        .then(False)
        .when(pl.col("_undetermined_later"))
        .then(None)
        .otherwise(True)
    )
    known = pl.col("_lo") == pl.col("_hi")
    maximum = pl.when(grade5).then(5).when(grade5.is_null()).then(None).when(known).then(pl.col("_lo"))
    onset = pl.when(pl.col("_first_known") == pl.col("_first_possible")).then(pl.col("_first_known"))
    reason = (
        pl.when(maximum.is_not_null())
        .then(None)
        .when(grade5.is_null())
        .then(pl.lit("GRADE5_UNKNOWN"))
        .otherwise(pl.lit("GRADE_UNKNOWN"))
    )
    return per_subject.select(
        *KEY,
        maximum.cast(GRADE).alias(f"{toxicity}_max_grade"),
        pl.when(grade5).then(5).otherwise(pl.col("_lo")).cast(GRADE).alias(f"{toxicity}_max_grade_lower_bound"),
        onset.cast(pl.Int32).alias(f"{toxicity}_onset_day"),
        reason.alias(f"{toxicity}_max_grade_reason"),
    )


def worst_crs_icans(graded: pl.DataFrame, subjects: pl.DataFrame, config: CrsIcansConfig | None = None) -> pl.DataFrame:
    """The worst CRS and ICANS grade per subject, with its onset day and grade 5 (rules in the module docstring).

    Args:
        graded: the output of `grade_crs_icans`.
        subjects: accepted subjects (`study_id`, `subject_id`, `day0`, optional `death_date`).
        config: the grade-5 window (defaults when None).

    Returns:
        One row per subject of `subjects`, in its order: per toxicity `<t>_max_grade` (0-5, null when
        undetermined), `<t>_max_grade_lower_bound`, `<t>_onset_day` and `<t>_max_grade_reason` (`WORST_REASONS`;
        null when the maximum is known). Contract `schemas.toxicity_events.CrsIcansWorst`.
    """
    cfg = config or CrsIcansConfig()
    people = _subject_fields(subjects)
    post = graded.lazy().join(people.lazy(), on=KEY, how="inner").filter(pl.col("days_since_infusion") >= 0)
    out = people.lazy().select(*KEY, "_day0")
    for toxicity in ("crs", "icans"):  # two toxicities
        out = out.join(_worst_one(post, toxicity, cfg), on=KEY, how="left", maintain_order="left")
    no_day0 = pl.col("_day0").is_null()
    fixes = []
    for toxicity in ("crs", "icans"):
        reason = pl.col(f"{toxicity}_max_grade_reason")
        fixes.append(
            pl.when(no_day0)
            .then(pl.lit("NOT_INFUSED"))
            .when(pl.col(f"{toxicity}_max_grade_lower_bound").is_null())
            .then(pl.lit("NO_ASSESSMENT"))
            .otherwise(reason)
            .alias(f"{toxicity}_max_grade_reason")
        )
    return out.with_columns(fixes).drop("_day0").collect()


# --------------------------------------------------------------------------------------------------
# Reported grades
# --------------------------------------------------------------------------------------------------


def reported_disagreements(graded: pl.DataFrame) -> pl.DataFrame:
    """Assessments whose reported grade the derivation rules out: one row per assessment and toxicity.

    A reported grade disagrees when it lies outside the derived bounds (below `<t>_grade_lower_bound` or above
    `<t>_grade_upper_bound`), so a disagreement is certain even where the derived grade is undetermined; a
    reported grade inside undetermined bounds is not listed. Contract `schemas.toxicity_events.CrsIcansDisagreement`.
    """
    parts = []
    for toxicity in ("crs", "icans"):  # two toxicities
        lo, hi = pl.col(f"{toxicity}_grade_lower_bound"), pl.col(f"{toxicity}_grade_upper_bound")
        reported = pl.col(f"{toxicity}_grade_reported")
        parts.append(
            graded.filter((reported < lo) | (reported > hi)).select(
                *KEY,
                "assessed_at",
                "days_since_infusion",
                pl.lit(toxicity).alias("toxicity"),
                pl.col(f"{toxicity}_grade").alias("derived_grade"),
                lo.alias("derived_lower_bound"),
                hi.alias("derived_upper_bound"),
                reported.alias("reported_grade"),
                "source_file",
                "source_row",
            )
        )
    return pl.concat(parts, how="vertical")


def disagreement_counts(graded: pl.DataFrame) -> dict[str, int]:
    """Counts for run.json: per toxicity, assessments with a reported grade (`<t>_reported`) and those the
    derivation rules out (`<t>_disagreements`, as `reported_disagreements` lists them)."""
    counts: dict[str, int] = {}
    for toxicity in ("crs", "icans"):  # two toxicities
        lo, hi = pl.col(f"{toxicity}_grade_lower_bound"), pl.col(f"{toxicity}_grade_upper_bound")
        reported = pl.col(f"{toxicity}_grade_reported")
        row = graded.select(
            n_reported=reported.is_not_null().sum(), n_disagree=((reported < lo) | (reported > hi)).sum()
        ).row(0)
        counts[f"{toxicity}_reported"] = int(row[0])
        counts[f"{toxicity}_disagreements"] = int(row[1])
    return counts
