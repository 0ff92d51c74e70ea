"""Tests of the synthetic cohort generator (immunostrat.synth): fast, small cohorts only."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import polars as pl
import pydantic
import pytest

from immunostrat.synth import (
    ENDPOINT,
    FOLLOWUP_SUBJECT_COLUMNS,
    LAB_COLUMNS,
    MESS_FIELDS,
    PANEL_ANALYTES,
    RESPONSE_COEFFICIENTS,
    SUBJECT_COLUMNS,
    SynthCohort,
    SynthConfig,
    generate_cohort,
    oracle_auroc,
    write_cohort,
)

REFERENCE = Path(__file__).resolve().parents[1] / "schemas" / "reference"
CORE = PANEL_ANALYTES[:10]
CONVERTIBLE = ("c3", "c4", "cd19_b_cells", "cd3_t_cells", "cd4_t_cells", "cd8_t_cells", "plasmablasts", "lymphocytes")


@pytest.fixture(scope="module")
def big() -> SynthCohort:
    return generate_cohort(SynthConfig(n_subjects=20_000, seed=11))


@pytest.fixture(scope="module")
def clean() -> SynthCohort:
    return generate_cohort(SynthConfig(n_subjects=1_000, seed=5).clean())


def _mean(s: pl.Series) -> float:
    return float(np.mean(s.to_numpy()))


def _lo(s: pl.Series) -> Any:
    return s.to_frame().select(pl.first().min()).item()


def _hi(s: pl.Series) -> Any:
    return s.to_frame().select(pl.first().max()).item()


def _with_tags(cohort: SynthCohort) -> pl.DataFrame:
    return pl.concat([cohort.labs, cohort.lab_tags], how="horizontal")


# ---- config ------------------------------------------------------------------------------------------------


def test_every_config_field_is_described() -> None:
    for name, info in SynthConfig.model_fields.items():
        assert info.description, name


@pytest.mark.parametrize("field", ["alt_unit", "censored", "missing_analyte"])
def test_rates_must_be_fractions(field: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        SynthConfig.model_validate({field: 1.5})


def test_clean_zeroes_every_mess_rate() -> None:
    cfg = SynthConfig(n_subjects=10).clean()
    assert all(getattr(cfg, f) == 0.0 for f in MESS_FIELDS)
    assert cfg.n_subjects == 10


# ---- determinism and schema -----------------------------------------------------------------------------


def test_deterministic_by_seed() -> None:
    a = generate_cohort(SynthConfig(n_subjects=300, seed=3))
    b = generate_cohort(SynthConfig(n_subjects=300, seed=3))
    c = generate_cohort(SynthConfig(n_subjects=300, seed=4))
    for name in ("labs", "subjects", "outcomes", "truth", "lab_tags"):
        assert getattr(a, name).equals(getattr(b, name)), name
    assert a.coefficients == b.coefficients
    assert not a.labs.equals(c.labs)


def test_schemas(big: SynthCohort) -> None:
    assert big.labs.columns == list(LAB_COLUMNS)
    assert all(dtype == pl.String for dtype in big.labs.dtypes)
    assert big.lab_tags.height == big.labs.height
    assert big.subjects.columns == [*SUBJECT_COLUMNS, *FOLLOWUP_SUBJECT_COLUMNS]
    assert big.subjects.schema["age_years"] == pl.Int64
    assert big.subjects.schema["sledai_2k"] == pl.Int64
    assert big.subjects.schema["egfr"] == pl.Float64
    assert big.subjects.schema["active_cns_lupus"] == pl.Boolean
    assert big.subjects.schema["reference_date"] == pl.String
    assert big.outcomes.columns == ["study_id", "subject_id", "responded", "endpoint"]
    assert big.outcomes.schema["responded"] == pl.Boolean
    assert big.outcomes["endpoint"].unique().to_list() == [ENDPOINT]
    assert {"ifn_high", "ifn_signal", "anti_dsdna_ratio", "response_probability", *PANEL_ANALYTES} <= set(
        big.truth.columns
    )
    n = big.config.n_subjects
    for frame in (big.subjects, big.outcomes, big.truth):
        assert frame.height == n
        assert frame.select(pl.struct("study_id", "subject_id").n_unique()).item() == n
    assert set(big.subjects["study_id"].unique()) == {"SLE-CART-01", "SLE-CART-02", "SLE-CART-03"}


def test_subject_fields_plausible(big: SynthCohort) -> None:
    s = big.subjects
    assert 0.86 < _mean(s["sex"] == "F") < 0.94
    age = s["age_years"]
    assert 0.85 < _mean(age.is_between(18, 65)) < 1.0
    assert _mean(s["sledai_2k"].drop_nulls() >= 8) > 0.6
    assert 0.01 < _mean(s["active_cns_lupus"].drop_nulls()) < 0.05
    assert s["first_exposure_date"].null_count() > 0 and s["egfr"].null_count() > 0
    ref = s["reference_date"].str.to_date()
    assert _lo(ref) >= date(2025, 1, 1) and _hi(ref) <= date(2026, 12, 31)
    assert _hi(ref) < big.config.data_cutoff
    lag = (s["first_exposure_date"].str.to_date() - ref).dt.total_days().drop_nulls()
    assert _lo(lag) >= 14 and _hi(lag) <= 40


# ---- population and response --------------------------------------------------------------------------


def test_response_rate_and_oracle(big: SynthCohort) -> None:
    rate = _mean(big.outcomes["responded"])
    assert 0.55 <= rate <= 0.75
    # The intercept is solved by Newton's method to a step below 1e-10: the mean rate is exact far beyond 1e-6.
    assert math.isclose(_mean(big.truth["response_probability"]), 0.65, abs_tol=1e-6)
    assert 0.72 < oracle_auroc(big) < 0.88


def test_ifn_and_serology_distributions(big: SynthCohort) -> None:
    t = big.truth
    assert 0.75 <= _mean(t["ifn_high"]) <= 0.85
    by = t.group_by("ifn_high").agg(
        pos=(pl.col("anti_dsdna_ratio") >= 1).mean(), c3=pl.col("c3").mean(), lym=pl.col("lymphocytes").mean()
    )
    high, low = by.filter(pl.col("ifn_high")).row(0, named=True), by.filter(~pl.col("ifn_high")).row(0, named=True)
    assert 0.42 < high["pos"] < 0.58 and 0.17 < low["pos"] < 0.33
    assert high["c3"] < low["c3"] and high["lym"] < low["lym"]
    assert set(t["ifn_method"].unique()) == {"MEDIAN_FC_21", "MEDIAN_FC_6", "MEAN_Z"}


def test_linear_predictor_is_the_documented_formula(big: SynthCohort) -> None:
    t = big.truth
    co = big.coefficients
    lp = (
        co["intercept"]
        + co["log2_anti_dsdna_ratio"] * np.log2(t["anti_dsdna_ratio"].to_numpy())
        + co["ifn_signal"] * t["ifn_signal"].to_numpy()
        + co["c3_z"] * (t["c3"].to_numpy() - 0.90) / 0.23
        + co["c4_z"] * (t["c4"].to_numpy() - 0.16) / 0.08
        + co["log10_cd19_centred"] * (np.log10(t["cd19_b_cells"].to_numpy()) - np.log10(200.0))
    )
    # Same terms summed in another order: relative 1e-7, plus an absolute floor for the subjects whose linear
    # predictor is near zero (there a 1e-16 rounding difference would be a large relative one).
    np.testing.assert_allclose(lp, t["linear_predictor"].to_numpy(), rtol=1e-7, atol=1e-12)
    assert set(co) == {"intercept", *RESPONSE_COEFFICIENTS}


# ---- the rows carry the truth ---------------------------------------------------------------------------


def test_clean_cohort_rows_equal_truth(clean: SynthCohort) -> None:
    labs = _with_tags(clean)
    assert set(labs["kind"].cast(pl.String).unique()) == {"baseline"}
    assert set(labs["test"].unique()) <= set(PANEL_ANALYTES)
    per_subject = labs.filter(pl.col("test").is_in(CORE)).group_by("subject_id").len()
    assert per_subject["len"].unique().to_list() == [10]
    # Every baseline row sits 0..60 days before the reference date.
    dated = labs.join(clean.subjects.select("subject_id", "reference_date"), on="subject_id").with_columns(
        lag=(
            pl.col("reference_date").str.to_date() - pl.col("collected_at").str.slice(0, 10).str.to_date()
        ).dt.total_days()
    )
    assert _lo(dated["lag"]) >= 0 and _hi(dated["lag"]) <= 60
    wide = labs.with_columns(pl.col("result").cast(pl.Float64)).pivot(on="test", index="subject_id", values="result")
    joined = clean.truth.join(wide, on="subject_id", suffix="_row")
    for analyte in CORE:
        np.testing.assert_allclose(joined[f"{analyte}_row"].to_numpy(), joined[analyte].to_numpy(), err_msg=analyte)


def test_ifn_high_agrees_with_written_score(clean: SynthCohort) -> None:
    cut = pl.read_csv(REFERENCE / "ifn_methods.csv").select("method", "high_cutoff", "inclusive")
    rows = (
        clean.labs.filter(pl.col("test") == "ifn_score")
        .select("subject_id", "method", score=pl.col("result").cast(pl.Float64))
        .join(cut, on="method")
        .with_columns(
            high=pl.when(pl.col("inclusive"))
            .then(pl.col("score") >= pl.col("high_cutoff"))
            .otherwise(pl.col("score") > pl.col("high_cutoff"))
        )
        .join(clean.truth.select("subject_id", "ifn_high"), on="subject_id")
    )
    assert rows.height == clean.config.n_subjects
    assert (rows["high"] == rows["ifn_high"]).all()


def test_codes_and_units_exist_in_reference_tables(big: SynthCohort) -> None:
    codes = pl.read_csv(REFERENCE / "test_codes.csv", infer_schema=False)
    units = pl.read_csv(REFERENCE / "units.csv", infer_schema=False).with_columns(pl.col("unit").fill_null(""))
    panel = (
        _with_tags(big)
        .filter(pl.col("analyte").cast(pl.String).is_in(PANEL_ANALYTES), pl.col("malformed").is_null())
        .select("test", "unit", analyte=pl.col("analyte").cast(pl.String))
        .unique()
    )
    coded = panel.join(codes.select(test="code", mapped="analyte"), on="test", how="left")
    assert coded["mapped"].null_count() == 0, coded.filter(pl.col("mapped").is_null())
    # The percent form may arrive under the absolute test's alias with unit % (units.csv maps it over).
    known = coded.join(
        units.select(mapped="analyte", unit="unit", target="target_analyte"), on=["mapped", "unit"], how="left"
    )
    assert known["target"].null_count() == 0, known.filter(pl.col("target").is_null())
    expected = (
        pl.when(pl.col("unit").is_in(["U/mL", "AU/mL"])).then(pl.lit("anti_dsdna_xuln")).otherwise(pl.col("analyte"))
    )
    assert (known["target"] == known.select(expected).to_series()).all()


# ---- mess -----------------------------------------------------------------------------------------------


def test_mess_rates_roughly_honoured(big: SynthCohort) -> None:
    labs = _with_tags(big)
    base = labs.filter(pl.col("kind") == "baseline", pl.col("malformed").is_null())
    convertible = base.filter(pl.col("analyte").cast(pl.String).is_in(CONVERTIBLE))
    alt = _mean(convertible["unit"].is_in(["mg/dL", "10^9/L"]))
    assert 0.27 < alt < 0.33
    canonical_name = base["test"] == base["analyte"].cast(pl.String)
    coded = base.filter(~pl.col("analyte").cast(pl.String).is_in(["plasmablasts"]))
    assert 0.37 < _mean(coded["test"] != coded["analyte"].cast(pl.String)) < 0.43
    assert canonical_name.any()
    dsdna = base.filter(pl.col("analyte") == "anti_dsdna")
    censored = dsdna.filter(pl.col("result").str.contains(r"^(<|>)=?\s?\d"))
    assert 0.02 < censored.height / dsdna.height < 0.04
    assert {"<", ">"} <= set(censored["result"].str.slice(0, 1).unique())
    assert censored["result"].str.contains(" ").any() and censored["result"].str.contains("=").any()
    assert 0.008 < _mean(labs["malformed"].is_not_null()) < 0.012
    results, units, stamps = set(labs["result"]), set(labs["unit"]), set(labs["collected_at"])
    assert {"abc", "NEG", ""} <= results and "furlongs" in units and "yesterday" in stamps
    assert any(s.endswith("-02-30") for s in stamps)
    kit = dsdna.filter(pl.col("unit").is_in(["U/mL", "AU/mL"]))
    assert 0.03 < kit.height / dsdna.height < 0.07 and (kit["ref_high"] != "").all()
    assert {"ALB", "WBC", "CRP"} <= set(labs["test"])
    assert big.labs.is_duplicated().any()  # exact duplicate rows
    names = pl.col("missing_analytes")
    missing = big.truth.select((names.str.split(",").list.len() * (names != "")).sum()).item()
    assert 0.02 < missing / (big.config.n_subjects * 10) < 0.04


def test_conflicting_duplicates_and_out_of_window(big: SynthCohort) -> None:
    labs = _with_tags(big)
    key = ["subject_id", "test", "collected_at", "method"]
    conflicts = labs.filter(pl.col("kind") == "conflicting_duplicate").select(key).unique()
    assert conflicts.height > 0
    distinct = labs.join(conflicts, on=key).group_by(key).agg(pl.col("result").n_unique())
    assert (distinct["result"] >= 2).all()
    dated = (
        labs.filter(pl.col("malformed").is_null())
        .join(big.subjects.select("subject_id", "reference_date", "first_exposure_date"), on="subject_id")
        .with_columns(
            day=pl.col("collected_at").str.slice(0, 10).str.to_date(),
            ref=pl.col("reference_date").str.to_date(),
            exp=pl.col("first_exposure_date").str.to_date(),
        )
    )
    assert _hi(dated["day"]) <= big.config.data_cutoff
    pre = dated.filter(pl.col("kind") == "pre_window")
    post = dated.filter(pl.col("kind") == "post_exposure", pl.col("exp").is_not_null())
    assert ((pre["ref"] - pre["day"]).dt.total_days() > 60).all()
    assert (post["day"] > post["exp"]).all()
    share = (pre.height + post.height) / dated.filter(pl.col("kind") == "baseline").height
    assert 0.07 < share < 0.13


# ---- writing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_cohort_round_trips(tmp_path: Path, fmt: Literal["csv", "parquet"]) -> None:
    cohort = generate_cohort(SynthConfig(n_subjects=300, seed=2, malformed=0.2))
    paths = write_cohort(cohort, tmp_path / "out", fmt=fmt)
    assert set(paths) == {"labs", "subjects", "outcomes", "visits", "labs_followup", "events"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{k}.{fmt}" for k in paths)
    if fmt == "csv":
        labs = pl.read_csv(paths["labs"], infer_schema=False)
        subjects = pl.read_csv(paths["subjects"], schema=cohort.subjects.schema)
    else:
        labs = pl.read_parquet(paths["labs"])
        subjects = pl.read_parquet(paths["subjects"])
    assert labs.equals(cohort.labs)
    assert subjects.equals(cohort.subjects)
    assert "truth" in write_cohort(cohort, tmp_path / "t", fmt=fmt, include_truth=True)


def test_write_cohort_rejects_unknown_format(tmp_path: Path) -> None:
    cohort = generate_cohort(SynthConfig(n_subjects=5))
    with pytest.raises(ValueError, match="fmt"):
        write_cohort(cohort, tmp_path, fmt=cast(Any, "xlsx"))
