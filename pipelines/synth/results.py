"""What a synthetic cohort holds: `SynthCohort` and its follow-up part `SynthFollowUp` (frames and truth)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from immunostrat.synth.config import SynthConfig


@dataclass
class SynthCohort:
    """A generated cohort.

    Attributes:
        labs: native lab rows, all String (`LAB_COLUMNS`), in random order.
        subjects: one row per subject (`SUBJECT_COLUMNS`); dates are ISO strings.
        outcomes: study_id, subject_id, responded (Boolean), endpoint.
        truth: per subject, the true baseline values (canonical units, as written in the baseline rows),
            `ifn_signal`, `anti_dsdna_ratio`, `missing_analytes`, `linear_predictor`, `response_probability`.
        lab_tags: row-aligned with `labs`: how each row was made (`kind`, `analyte`, mess flags). Not part of
            the native contract; for tests of downstream stages.
        coefficients: the response model's coefficients, including the calibrated `intercept`.
        config: the config the cohort was generated from.
        followup: visits, follow-up labs and their truth (`SynthFollowUp`); None when `config.followup` is
            False. With it, `subjects` also has `FOLLOWUP_SUBJECT_COLUMNS`.
    """

    labs: pl.DataFrame
    subjects: pl.DataFrame
    outcomes: pl.DataFrame
    truth: pl.DataFrame
    lab_tags: pl.DataFrame
    coefficients: dict[str, float]
    config: SynthConfig
    followup: SynthFollowUp | None = None


@dataclass
class SynthFollowUp:
    """The follow-up part of a cohort (`SynthConfig.followup`).

    Attributes:
        visits: one row per visit (`VISIT_COLUMNS`): descriptors and booleans as "true"/"false" text, null when
            not assessed; `pga` and `prednisone_mg_day` Float64, `immunosuppressants` Int64.
        visit_tags: row-aligned with `visits`: `phase` (0 screening; 1..4 the course stage of months 1, 3, 6,
            12, also for unscheduled visits), `days_since_infusion` (null when not infused), `incomplete`.
        labs: native follow-up lab rows, all String (`FOLLOWUP_LAB_COLUMNS`: the lab columns plus `lloq`),
            sorted by subject, date and analyte; from visits and from blood draws between them.
        lab_tags: row-aligned with `labs`: `analyte`, `visit_row` (index into `visits`; null for a draw),
            `days_since_infusion` (null when not infused), `descriptor` (the SLEDAI-2K descriptor the row
            carries, or null), `lab_descriptor` (that descriptor as the row shows it: the value lies on its
            present side; for C3 and C4 the visit's low complement), `below_lloq`, `alt_unit` (kit units
            included), `alt_code`.
        truth: one row per subject: `infused`, `responded`, `discontinued`, `b_cell_return_day` (days after
            infusion; null when not infused), `screening_sledai_2k` (the weighted sum of the screening
            descriptors, before any cell is left empty), `clinical_sledai_2k_month_6` (null without a month-6
            visit), the immune course's model values (`b_cell_aplasia_day`, `car_t_peak_day`, `car_t_peak`,
            `anc_nadir`, `anc_nadir_days`, `platelet_nadir`, `igg_drop`, `renal_signal_day`, `seroconverted`,
            `serological_relapse`) and the events' (`crs_max_grade`, `crs_onset_day`, `icans_max_grade`,
            `icans_onset_day`).
        events: CRS/ICANS assessments of infused subjects (`EVENT_COLUMNS`): flags as "true"/"false" text,
            numbers typed, null when not assessed.
        event_tags: row-aligned with `events`: `days_since_infusion`, `crs_grade` and `icans_grade` (the true
            ASTCT 2019 grades), `reported_differs`, `incomplete`.
    """

    visits: pl.DataFrame
    visit_tags: pl.DataFrame
    labs: pl.DataFrame
    lab_tags: pl.DataFrame
    truth: pl.DataFrame
    events: pl.DataFrame
    event_tags: pl.DataFrame
