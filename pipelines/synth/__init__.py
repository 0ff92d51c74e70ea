"""Synthetic SLE CAR-T cohorts, with the mess real sites send, for testing immunostrat end to end.

`generate_cohort` draws a cohort of subjects with latent baseline biomarkers, writes them as native-contract
lab rows (every column a string), adds configurable mess (alternative units and codes, censored and
malformed results, duplicates, out-of-window and outside-panel rows, kit units, missing analytes) and samples
a binary outcome from an invented response mechanism. Generation is fully vectorised (numpy + polars):
nothing loops over rows or subjects, so a million subjects take seconds.

Response mechanism (INVENTED FOR TESTING; it is not clinical knowledge and must not be read as one).
With the TRUE baseline values that are written as the in-window baseline lab rows::

    logit p = b0 + 0.35 * log2(anti_dsdna_ratio)          # anti-dsDNA over its positivity cut-off
                 + 0.60 * ifn_signal                        # log2(IFN score / method cut-off)
                 - 0.35 * (c3 - 0.90) / 0.23                # g/L
                 - 0.30 * (c4 - 0.16) / 0.08                # g/L
                 + 0.80 * (log10(cd19_b_cells) - log10(200))  # cells/uL

`b0` is solved on each cohort (Newton's method on the mean probability) so that the mean true probability
equals `SynthConfig.response_rate`. For MEAN_Z, whose scale is additive, `ifn_signal = (score - 2) / 2`.
Outcomes are Bernoulli draws from these probabilities, so `oracle_auroc` is the ceiling any model of the
baseline features can reach (about 0.80 with the defaults). See docs/synthetic.md.

Follow-up (`SynthConfig.followup`, on by default; its own RNG streams, so every table above is unchanged):
`infusion_date` and `discontinued_date` on the subjects, a visits table (screening, months 1, 3, 6, 12,
unscheduled) with the 24 SLEDAI-2K descriptors, follow-up lab rows at the visits and at early (days 0-24) and
monthly blood draws, and CRS/ICANS assessments (`events`, days 0-14). Screening descriptors sum to the subjects
file's `sledai_2k`; after infusion, responders reach drug-free DORIS remission by month 6 and non-responders
keep activity, so the endpoint derived from the visits is the latent outcome. The immune course (cytopenias,
CAR-T expansion, B-cell aplasia below the LLOQ and return, IgG, a renal signal, seroconversion) and the event
rates follow the published figures in follow-up-facts §3-4; docs/synthetic.md states each rate. Choices: the
course only lowers blood counts, so a cytopenia the site reports stays on the lab; eGFR is CKD-EPI 2021 of the
written creatinine, so the two rows agree as a lab's would; the event truth is the ASTCT 2019 grade of the
written fields, and the site's reported grades differ from it only at `event_report_disagreement`.

The package, one job per module: `config` (the config and shared column lists), `results` (what a cohort holds),
`cohort` (`generate_cohort`: the order of the random draws), `subjects`, `baseline_labs`, `followup` (visits, labs
and events together), `visits`, `followup_labs`, `course` (the immune course), `events`, `write`; reference tables
in `panel`, `followup_panel` and `sledai`; string rendering in `strings`. The modules share underscored names among
themselves; `__all__` below is the public surface.
"""

from immunostrat.schemas.event_columns import (
    CEREBRAL_EDEMA,
    CONSCIOUSNESS,
    EVENT_COLUMNS,
    ICANS_SEIZURE,
    OXYGEN_DEVICES,
)
from immunostrat.synth.cohort import generate_cohort, oracle_auroc
from immunostrat.synth.config import (
    ENDPOINT,
    LAB_COLUMNS,
    MESS_FIELDS,
    RESPONSE_COEFFICIENTS,
    SUBJECT_COLUMNS,
    SynthConfig,
)
from immunostrat.synth.followup_panel import FOLLOWUP_ANALYTES, ckd_epi_2021, creatinine_for_egfr
from immunostrat.synth.panel import PANEL_ANALYTES
from immunostrat.synth.results import SynthCohort, SynthFollowUp
from immunostrat.synth.sledai import (
    CLINICAL_DESCRIPTORS,
    FOLLOWUP_LAB_COLUMNS,
    FOLLOWUP_SUBJECT_COLUMNS,
    LABORATORY_DESCRIPTORS,
    SLEDAI_WEIGHTS,
    VISIT_BOOLEAN_FIELDS,
    VISIT_COLUMNS,
    VISIT_LABELS,
)
from immunostrat.synth.write import write_cohort

__all__ = [
    "CEREBRAL_EDEMA",
    "CLINICAL_DESCRIPTORS",
    "CONSCIOUSNESS",
    "ENDPOINT",
    "EVENT_COLUMNS",
    "FOLLOWUP_ANALYTES",
    "FOLLOWUP_LAB_COLUMNS",
    "FOLLOWUP_SUBJECT_COLUMNS",
    "ICANS_SEIZURE",
    "LABORATORY_DESCRIPTORS",
    "LAB_COLUMNS",
    "MESS_FIELDS",
    "OXYGEN_DEVICES",
    "PANEL_ANALYTES",
    "RESPONSE_COEFFICIENTS",
    "SLEDAI_WEIGHTS",
    "SUBJECT_COLUMNS",
    "VISIT_BOOLEAN_FIELDS",
    "VISIT_COLUMNS",
    "VISIT_LABELS",
    "SynthCohort",
    "SynthConfig",
    "SynthFollowUp",
    "ckd_epi_2021",
    "creatinine_for_egfr",
    "generate_cohort",
    "oracle_auroc",
    "write_cohort",
]
