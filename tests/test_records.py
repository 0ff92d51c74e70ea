"""Typed records (`immunostrat.schemas.records`): run folders and model cards written before the records existed
still read, unchanged; the writer stamps and checks what it writes; the data dictionary's run.json keys come from
the records.

The run.json files in tests/data/run_json were copied from real runs made at commit b23e20a (before this module):
a completed stratify run, a stratify run stopped by the quarantine ceiling, and a completed monitor run. Expected
values below were read off those files by hand."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.followup.summary import monitor_summary
from immunostrat.modelling.registry import default_registry_dir, read_card, read_model_card
from immunostrat.reporting.artifacts import artifact_summary
from immunostrat.reporting.datadict import render_markdown
from immunostrat.reporting.report import render_report
from immunostrat.schemas.records import (
    LEGACY_SCHEMA_VERSION,
    RUN_RECORD_SCHEMA_VERSION,
    ModelCard,
    RunRecord,
    UndeclaredKeyError,
    json_type,
    new_run_record,
    read_run_record,
    run_json_keys,
    undeclared_keys,
)

OLD_RUNS = Path(__file__).parent / "data" / "run_json"
STRATIFY = OLD_RUNS / "stratify-completed-b23e20a.json"
FAILED = OLD_RUNS / "stratify-failed-b23e20a.json"
MONITOR = OLD_RUNS / "monitor-completed-b23e20a.json"
MODELS = Path(__file__).parents[1] / "models"


def _raw(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _run_folder(tmp_path: Path, fixture: Path) -> Path:
    """A run folder holding only the old run.json (byte for byte)."""
    folder = tmp_path / fixture.stem
    folder.mkdir()
    shutil.copyfile(fixture, folder / "run.json")
    return folder


# ------------------------------------------------------------------------------------------------ older run folders


@pytest.mark.parametrize("fixture", [STRATIFY, FAILED, MONITOR], ids=lambda p: p.stem)
def test_an_older_run_json_reads_completely_and_dumps_back_to_the_same_object(fixture: Path) -> None:
    raw = _raw(fixture)
    record = RunRecord.model_validate(raw)
    assert "schema_version" not in raw
    assert record.schema_version == LEGACY_SCHEMA_VERSION
    assert undeclared_keys(record) == []  # every key those runs wrote is modelled (and so documented)
    assert record.to_json_dict() == raw  # nothing added, dropped or retyped


def test_the_older_completed_stratify_run_reads_as_typed_values(tmp_path: Path) -> None:
    run = read_run_record(_run_folder(tmp_path, STRATIFY))
    assert run.completed and run.error is None
    counts = run.counts
    # 339 read = 330 accepted + 3 outside the panel + 6 quarantined
    assert (counts.rows_read, counts.accepted, counts.outside_panel, counts.quarantined) == (339, 330, 3, 6)
    reasons = {"DATE_INVALID": 1, "DUPLICATE_ROW": 2, "RESULT_NOT_NUMERIC": 1, "UNIT_UNKNOWN": 2}
    assert counts.quarantined_by_reason == reasons
    assert counts.panel_groups["selection"].panel_rows == 332  # 330 accepted + 2 quarantined selection rows
    assert counts.subjects is not None and counts.subjects.accepted == 30
    assert counts.selection_sledai is not None and counts.selection_sledai.sledai_2k_from_subjects == 30
    assert counts.events is None and counts.follow_up is None
    assert run.model is not None and run.model.model_id == "responder-lr-20261121-5dfef19c"
    assert run.model.cutoffs == {"likely_min": 0.83, "possible_min": 0.6}
    assert run.summary is not None and run.summary.eligible == {"false": 13, "not_assessable": 1, "true": 16}
    assert run.summary.eligibility_funnel is not None
    assert run.summary.eligibility_funnel[0].criterion == "age_18_65"
    assert run.drift is not None and run.drift.features["c3"].flagged is True
    assert run.outputs["strata.parquet"].rows == 30
    assert [i.kind for i in run.inputs] == ["labs", "subjects", "visits"]


def test_the_older_stopped_run_has_an_error_and_no_summary(tmp_path: Path) -> None:
    run = read_run_record(_run_folder(tmp_path, FAILED))
    assert run.status == "failed" and not run.completed
    assert run.error is not None and run.error.startswith("6 of 332 selection panel rows (1.8%) were quarantined")
    assert run.summary is None and run.drift is None
    assert sorted(run.outputs) == ["harmonised.parquet", "outside_panel.parquet", "quarantine.parquet"]
    assert "summary" not in run.to_json_dict()


def test_the_older_monitor_run_reads_its_follow_up_parts(tmp_path: Path) -> None:
    run = read_run_record(_run_folder(tmp_path, MONITOR))
    assert run.counts.visits is not None and run.counts.visits.rows_read == 143
    assert run.counts.events is not None and run.counts.events.accepted == 390
    assert run.counts.follow_up is not None and run.counts.follow_up.endpoint_rows == 540
    assert run.changes is not None and run.changes.previous_run is None
    assert run.changes.not_compared == "no earlier completed monitor run in this output folder"
    summary = run.summary
    assert summary is not None and summary.endpoint_definition is not None
    assert summary.endpoint_definition.version == "1.0.0"
    assert summary.endpoints is not None and len(summary.endpoints) == 18  # 6 endpoints x 3 landmarks
    first = summary.endpoints[0]
    assert (first.endpoint, first.landmark, first.met, first.not_met, first.rate) == (
        "complete_renal_response",
        "month_12",
        6,
        2,
        0.75,  # 6 / (6 + 2)
    )
    assert summary.by_predicted_group is not None and summary.by_predicted_group.model is not None
    assert summary.by_predicted_group.rates[0].responder_group == "likely"


def test_reports_and_summaries_read_an_older_run_folder(tmp_path: Path) -> None:
    stratify = _run_folder(tmp_path, STRATIFY)
    before = (stratify / "run.json").read_bytes()
    markdown, _ = artifact_summary(stratify)
    assert "Lab rows read 339 = accepted 330 + outside panel 3 + quarantined 6." in markdown
    html = render_report(stratify, sponsor=None, card=None)
    assert "20261203T014127Z-ad9dcb" in html
    failed = render_report(_run_folder(tmp_path, FAILED), sponsor=None, card=None)
    assert "This run did not complete: 6 of 332 selection panel rows" in failed
    text, rows = monitor_summary(_raw(MONITOR))  # a dict, as older callers pass it
    assert "visit rows read 143 = accepted 143 + quarantined 0." in text
    assert "Not compared: no earlier completed monitor run in this output folder." in text
    assert rows[1]["rate"] == "60%"  # complete_renal_response at month_3: 9 met, 6 not met
    assert (stratify / "run.json").read_bytes() == before  # read, never rewritten


# ------------------------------------------------------------------------------------------------ model cards


@pytest.mark.parametrize("card_path", sorted(MODELS.glob("*/card.json")), ids=lambda p: p.parent.name)
def test_the_shipped_cards_read_as_model_cards_without_changing_their_checksum(card_path: Path) -> None:
    data = card_path.read_bytes()
    registry = json.loads((MODELS / "registry.json").read_text(encoding="utf-8"))
    assert hashlib.sha256(data).hexdigest() == registry["models"][card_path.parent.name]["card_sha256"]
    card = ModelCard.model_validate_json(data)
    assert card.model_id == card_path.parent.name
    assert card.default_cutoffs.possible_min == 0.6 and card.default_cutoffs.likely_min == 0.83
    assert [f["name"] for f in card.features][:2] == ["log2_anti_dsdna_ratio", "c3"]
    assert card.model_dump(exclude_unset=True) == json.loads(data)


def test_a_version_1_card_lacks_the_version_2_sections() -> None:
    card = read_model_card("responder-lr-20261121-e236e0fc", default_registry_dir())
    assert card.card_schema_version == 1
    assert card.title is None and card.evaluation is None and card.reference is None
    champion = read_model_card("champion", default_registry_dir())
    assert champion.card_schema_version == 2 and champion.evaluation is not None


def test_read_card_refuses_a_card_that_is_not_one(tmp_path: Path) -> None:
    from immunostrat.modelling.registry import RegistryError

    registry = tmp_path / "models"
    shutil.copytree(MODELS, registry, ignore=shutil.ignore_patterns("*.skops", "__pycache__"))
    card_path = registry / "responder-lr-20261121-e236e0fc" / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    del card["default_cutoffs"]
    card_path.write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(RegistryError, match="default_cutoffs"):
        read_card("responder-lr-20261121-e236e0fc", registry)


# ------------------------------------------------------------------------------------------------ writing


def test_a_new_record_is_stamped_with_the_current_schema_version_and_keeps_absent_parts_absent() -> None:
    record = new_run_record({"run_id": "r1", "status": "failed", "error": "stopped", "counts": {"rows_read": 3}})
    written = record.to_json_dict()
    assert written == {
        "schema_version": RUN_RECORD_SCHEMA_VERSION,
        "run_id": "r1",
        "status": "failed",
        "error": "stopped",
        "counts": {"rows_read": 3},
    }


def test_the_writer_refuses_an_undeclared_key_and_names_it() -> None:
    with pytest.raises(UndeclaredKeyError, match=r"counts\.subjects\.bogus"):
        new_run_record({"run_id": "r1", "status": "completed", "counts": {"subjects": {"bogus": 1}}})
    items = [{"kind": "endpoint", "item": "lldas@month_3", "change": "new", "extra": i} for i in range(3)]
    with pytest.raises(UndeclaredKeyError) as caught:
        new_run_record({"run_id": "r1", "status": "completed", "changes": {"items": items}})
    assert str(caught.value).endswith("changes.items[].extra")  # named once, not once per item


def test_free_form_parts_are_not_checked_key_by_key() -> None:
    record = new_run_record(
        {"run_id": "r1", "status": "completed", "parameters": {"anything": {"nested": 1}}, "inputs": []}
    )
    assert undeclared_keys(record) == []


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (1.0, 1.0), (0.75, 0.75), (None, None)])
def test_numbers_keep_their_json_type(value: Any, expected: Any) -> None:
    rate = {"endpoint": "lldas", "landmark": "month_3", "met": 1, "not_met": 0, "not_assessable": 0, "rate": value}
    dumped = RunRecord.model_validate({"run_id": "r", "status": "completed", "summary": {"endpoints": [rate]}})
    written = dumped.to_json_dict()["summary"]["endpoints"][0]["rate"]
    assert written == expected and type(written) is type(expected)


@settings(deadline=None)  # pydantic's first validation of a new shape can exceed 200 ms on a loaded CI machine
@given(
    st.dictionaries(
        st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
            lambda k: k not in RunRecord.model_fields
        ),
        st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none()),
        max_size=4,
    )
)
def test_keys_a_newer_writer_adds_are_kept_when_read(extra: dict[str, Any]) -> None:
    raw = {"run_id": "r", "status": "completed", **extra}
    record = RunRecord.model_validate(raw)
    assert record.to_json_dict() == raw
    assert sorted(undeclared_keys(record)) == sorted(extra)


# ------------------------------------------------------------------------------------------------ documentation


def test_every_documented_key_has_a_meaning_and_a_type() -> None:
    # With `undeclared_keys(...) == []` on the older runs above, this covers every key those runs wrote.
    keys = run_json_keys()
    assert [k["key"] for k in keys if not k["meaning"].strip() or not k["type"]] == []
    assert len({k["key"] for k in keys}) == len(keys)
    documented = {k["key"] for k in keys}
    assert {"counts.per_file.<path>.rows_read", "summary.endpoints[].rate", "changes.items[].day"} <= documented


def test_the_run_json_section_of_output_md_is_generated_from_the_record() -> None:
    markdown = render_markdown()
    row = "| `counts.per_file.<path>.rows_read` | integer | Data rows read from the file. |"
    assert row in markdown
    assert f"| `schema_version` | string | Version of this layout (now `{RUN_RECORD_SCHEMA_VERSION}`)" in markdown
    # A record documented once: the monitor run's stratify model points to `model`.
    assert "| `summary.by_predicted_group.model.model_id` |" not in markdown
    assert "Keys as `model`." in markdown


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, "string"),
        (int | None, "integer"),
        (int | float, "number"),
        (dict[str, int], "object"),
        (list[str] | None, "list"),
        (bool, "boolean"),
        (RunRecord, "object"),
    ],
)
def test_json_type_names(annotation: Any, expected: str) -> None:
    assert json_type(annotation) == expected
