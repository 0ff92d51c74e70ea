"""Data dictionary of the run outputs, generated from the pandera contracts in `immunostrat.schemas`.

`python -m immunostrat.reporting.datadict --out docs/output.md` rewrites docs/output.md and, beside it,
docs/data-dictionary.json (the same dictionary as JSON); `--check` exits 1 when either differs from what would
be generated (CI runs it), so the documentation cannot drift from the schemas. The column tables are generated;
the run.json keys are generated from the typed record (`immunostrat.schemas.records.RunRecord`, field
descriptions) and the sponsor snapshots' manifest.json keys from their declaration
(`immunostrat.sponsor.manifest`, which the manifest writer checks against); the prose around them (run folder,
sponsor snapshot) is kept here as constants.

The sponsor dataset is versioned (`SPONSOR_SCHEMA_VERSION`): writing refuses a dictionary whose sponsor columns
changed while the version did not (or changed in a breaking way within the same major version), comparing with
the JSON file already there; see docs/schema-changelog.md.

It is one module: the generated tables and the prose placed between them make one document, which `--check` compares
as a whole.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import inspect
import json
import sys
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

import pandera.polars as pa

from immunostrat.config.features import DEFAULT_FEATURES, FeatureSpec
from immunostrat.config.followup import EventsConfig
from immunostrat.followup.events import event_rules
from immunostrat.followup.visits import documented_visit_rules
from immunostrat.schemas.endpoints import FOLLOW_UP_SCHEMA_VERSION, SPONSOR_WITHHELD, sponsor_endpoint_schema
from immunostrat.schemas.outputs import FOLLOW_UP_TABLES, OUTPUT_MODELS
from immunostrat.schemas.records import RUN_RECORD_SCHEMA_VERSION, run_json_keys
from immunostrat.schemas.sponsor import (
    PARTITION_COLUMN,
    SPONSOR_SCHEMA_VERSION,
    SPONSOR_TABLE,
    WITHHELD,
    sponsor_model,
)
from immunostrat.sponsor.manifest import FollowUpManifest, SnapshotManifest, follow_up_only_keys, manifest_keys
from immunostrat.stages.rules import Rule
from immunostrat.stages.subjects import subject_rules
from immunostrat.stages.validate import lab_rules

DEFAULT_OUT = Path("docs/output.md")
JSON_NAME = "data-dictionary.json"
REGENERATE = "python -m immunostrat.reporting.datadict --out docs/output.md"

# --------------------------------------------------------------------------------------------------
# Dictionary
# --------------------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _type_name(dtype: Any) -> str:
    text = str(dtype)
    if text.startswith("Datetime("):
        unit = getattr(getattr(dtype, "type", None), "time_unit", "us")
        return f"Datetime({unit})"
    return text


_COMPARISONS = {
    "greater_than_or_equal_to": (">=", "min_value"),
    "greater_than": (">", "min_value"),
    "less_than_or_equal_to": ("<=", "max_value"),
    "less_than": ("<", "max_value"),
    "equal_to": ("=", "value"),
}


def _check_text(check: pa.Check) -> str | None:
    """A short readable form of a column check; None for `isin` (rendered as allowed values)."""
    stats = check.statistics or {}
    name = check.name
    text: str | None = str(check.error or name)
    if name == "isin":
        text = None
    elif name == "in_range":
        inclusive = stats.get("include_min", True) and stats.get("include_max", True)
        text = f"between {_number(stats['min_value'])} and {_number(stats['max_value'])}"
        text += "" if inclusive else " (bounds excluded)"
    elif name in _COMPARISONS:
        op, key = _COMPARISONS[name]
        text = f"{op} {_number(stats[key])}"
    elif name == "str_length":
        low, high = stats.get("min_value"), stats.get("max_value")
        text = "not empty" if (low == 1 and high is None) else f"length {low or 0} to {high or 'any'}"
    elif name == "str_matches":
        text = f"matches `{stats['pattern']}`"
    return text


def _column_entry(name: str, column: Any) -> dict[str, Any]:
    allowed = next((list(c.statistics["allowed_values"]) for c in column.checks if c.name == "isin"), None)
    checks = [text for text in (_check_text(c) for c in column.checks) if text]
    metadata = column.metadata or {}
    return {
        "name": name,
        "pattern": name if column.regex else None,
        "type": _type_name(column.dtype),
        "nullable": bool(column.nullable),
        "required": bool(column.required),
        "unit": metadata.get("unit"),
        "description": column.description or "",
        "checks": checks,
        "allowed_values": allowed,
    }


def _table_entry(model: type[pa.DataFrameModel] | pa.DataFrameSchema, description: str = "") -> dict[str, Any]:
    schema = model if isinstance(model, pa.DataFrameSchema) else model.to_schema()
    named = f"{model.__module__}.{model.__name__}" if isinstance(model, type) else str(schema.name)
    return {
        "model": named,
        "description": description or inspect.getdoc(model) or "",
        "strict": schema.strict,
        "unique": list(schema.unique or []),
        "columns": [_column_entry(name, column) for name, column in schema.columns.items()],
        "row_checks": [{"name": c.name, "description": str(c.error or c.name)} for c in schema.checks],
    }


def data_dictionary() -> dict[str, Any]:
    """Every output table: its contract's columns (name, type, nullable, unit, description, checks) and row checks.

    The run tables of stratify (`OUTPUT_MODELS`), then monitor's own (`FOLLOW_UP_TABLES`).
    """
    follow_up = {name: getattr(import_module(module), model) for name, (module, model) in FOLLOW_UP_TABLES.items()}
    return {file_name: _table_entry(model) for file_name, model in {**OUTPUT_MODELS, **follow_up}.items()}


def follow_up_sponsor_dictionary() -> dict[str, Any]:
    """The follow-up snapshot's endpoint rows (monitor runs), with their schema version and layout."""
    return {
        "table": "sponsor endpoints",
        "schema_version": FOLLOW_UP_SCHEMA_VERSION,
        "layout": "sponsor/data/study_id=<study>/part-0.parquet in a monitor run folder (hive partitioning)",
        "partitioned_by": [PARTITION_COLUMN],
        **_table_entry(
            sponsor_endpoint_schema(),
            "One endpoint of one pseudonymised subject at one landmark (endpoints.parquet without the subject id "
            "and dates; study days kept).",
        ),
        "withheld": {c: "identifying or a date" for c in SPONSOR_WITHHELD},
    }


def sponsor_dictionary(features: Sequence[FeatureSpec] = DEFAULT_FEATURES) -> dict[str, Any]:
    """The sponsor dataset's contract for a model with these features, with its schema version and layout."""
    return {
        "table": SPONSOR_TABLE,
        "schema_version": SPONSOR_SCHEMA_VERSION,
        "layout": "sponsor/data/study_id=<study>/part-0.parquet (hive partitioning)",
        "partitioned_by": [PARTITION_COLUMN],
        **_table_entry(sponsor_model(features)),
        "withheld": dict(WITHHELD),
    }


def dictionary_json() -> dict[str, Any]:
    """docs/data-dictionary.json: every table (run outputs and the sponsor dataset), reason codes, run.json keys."""
    return {
        "generated_by": REGENERATE,
        "sponsor_schema_version": SPONSOR_SCHEMA_VERSION,
        "tables": {
            **data_dictionary(),
            "sponsor": sponsor_dictionary(),
            "sponsor_endpoints": follow_up_sponsor_dictionary(),
        },
        "reason_codes": reason_codes(),
        "run_json_keys": run_json_keys(),
        "sponsor_manifest_keys": [{"key": k, "type": t, "meaning": m} for k, t, m in sponsor_manifest_keys()],
        "current_manifest_keys": [{"key": k, "type": t, "meaning": m} for k, t, m in CURRENT_MANIFEST_KEYS],
    }


def render_json() -> str:
    """The JSON dictionary as text (2-space indent, key order as built, UTF-8)."""
    return json.dumps(dictionary_json(), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------------
# Sponsor schema versioning
# --------------------------------------------------------------------------------------------------


def _major(version: str) -> str:
    return str(version).split(".")[0]


def sponsor_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(breaking, other) changes between two sponsor dictionaries (`sponsor_dictionary()` output).

    Breaking: a column removed, its type or unit changed, nulls or absence newly allowed, allowed values extended.
    Other: a column added, allowed values narrowed, nulls no longer allowed, checks changed. Descriptions are free.
    """
    before = {c["name"]: c for c in old["columns"]}
    after = {c["name"]: c for c in new["columns"]}
    breaking = [f"column `{n}` removed" for n in before if n not in after]
    other = [f"column `{n}` added" for n in after if n not in before]
    for name in before.keys() & after.keys():
        a, b = before[name], after[name]
        if a["type"] != b["type"]:
            breaking.append(f"`{name}`: type {a['type']} -> {b['type']}")
        if a["unit"] != b["unit"]:
            breaking.append(f"`{name}`: unit {a['unit']!r} -> {b['unit']!r}")
        if b["nullable"] and not a["nullable"]:
            breaking.append(f"`{name}`: now nullable")
        elif a["nullable"] and not b["nullable"]:
            other.append(f"`{name}`: no longer nullable")
        if a["required"] and not b["required"]:
            breaking.append(f"`{name}`: may now be absent")
        elif b["required"] and not a["required"]:
            other.append(f"`{name}`: now always present")
        old_values, new_values = a["allowed_values"], b["allowed_values"]
        if old_values != new_values:
            extended = old_values is not None and (new_values is None or not set(new_values) <= set(old_values))
            (breaking if extended else other).append(f"`{name}`: allowed values {old_values} -> {new_values}")
        if a["checks"] != b["checks"]:
            other.append(f"`{name}`: checks {a['checks']} -> {b['checks']}")
    return sorted(breaking), sorted(other)


def version_problem(committed: dict[str, Any] | None) -> str | None:
    """Why the current sponsor contract may not replace the committed one, or None when it may."""
    if committed is None or "sponsor" not in committed.get("tables", {}):
        return None
    old = committed["tables"]["sponsor"]
    new = sponsor_dictionary()
    breaking, other = sponsor_changes(old, new)
    if not (breaking or other):
        return None
    listed = "; ".join(breaking + other)
    where = "schemas/sponsor.py SPONSOR_SCHEMA_VERSION"
    if breaking and _major(old["schema_version"]) == _major(new["schema_version"]):
        return (
            f"breaking change to the sponsor dataset ({listed}) needs a new major version: bump {where} "
            f"(now {new['schema_version']}) and describe it in docs/schema-changelog.md"
        )
    if old["schema_version"] == new["schema_version"]:
        return (
            f"the sponsor dataset changed ({listed}) but its version did not: bump {where} (minor for a "
            f"compatible change; now {new['schema_version']}) and describe it in docs/schema-changelog.md"
        )
    return None


def reason_codes() -> list[dict[str, str]]:
    """Every quarantine reason code with the input it applies to, the column it names, and its meaning."""
    found: dict[str, dict[str, str]] = {}
    sources: list[tuple[str, list[Rule]]] = [
        ("labs", lab_rules(dt.date(2000, 1, 1), ())),
        ("subjects", subject_rules()),
        ("visits", documented_visit_rules()),
        ("events", event_rules(dt.date(2000, 1, 1), EventsConfig())),
    ]
    for kind, rules in sources:
        for rule in rules:
            if rule.code in found:
                found[rule.code]["input"] += f", {kind}"
                continue
            found[rule.code] = {"code": rule.code, "input": kind, "column": rule.column, "meaning": rule.description}
    return list(found.values())


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

HEADER = f"""# Outputs: the run folder and its data dictionary

<!-- Generated by `{REGENERATE}` from the pandera contracts in schemas/outputs.py.
     Do not edit by hand: CI runs `python -m immunostrat.reporting.datadict --check`. -->

Every `immunostrat stratify` or `monitor` run writes one new folder. This page describes its layout, every column
of every table (generated from the pandera contracts in `schemas/`, so it cannot drift from them) and the keys of
`run.json`. The input side is in [input.md](input.md).

## Run folder

```
OUT/                          --out
  <run_id>/                   one folder per run, e.g. 20261121T212429Z-609a74
    strata.parquet            one row per valid subject: baseline, flags, eligibility, responder score
    harmonised.parquet        accepted lab rows, one measurement per row, canonical units
    quarantine.parquet        rejected lab, subject and visit rows, with reason codes and messages
    outside_panel.parquet     lab rows whose test is not on the panel (set aside, counted)
    ifn_controls.parquet      with --expression only: the healthy controls' reference and scores (team QC)
    run.json                  manifest: provenance, parameters, counts, model, summary, output checksums
    sponsor/                  the sponsor snapshot (see "Sponsor snapshot" below): data, manifest, dictionary, report
  <run_id>/                   a monitor run (follow-up):
    activity.parquet          one row per accepted visit: SLEDAI-2K descriptors with their source, scores, bounds
    endpoints.parquet         one row per subject, endpoint and landmark: met / not met / not assessable, reason
    harmonised.parquet, quarantine.parquet, outside_panel.parquet, ifn_controls.parquet, run.json   as for stratify
    report.html               the team's follow-up report (aggregates, small cells suppressed)
    sponsor/                  the follow-up snapshot: pseudonymised endpoint rows, endpoint_rates.parquet, report
  .<run_id>.partial/          staging folder while a run is being written; never a finished run
  sponsor-manifest.json       the current sponsor snapshot of each study: stratify's under `studies`, monitor's
                              under `follow_up`, side by side (see docs/sponsor.md)
```

- `run_id` is the UTC start time (`YYYYMMDDTHHMMSSZ`) plus 6 random hex digits, so folders sort by start time.
- The folder is written atomically: files go to `.<run_id>.partial/` (each file itself temp-then-rename) and the
  folder is renamed to `<run_id>` at the end. A folder named `<run_id>` is complete; a crash leaves only the hidden
  staging folder. A run never overwrites an existing folder.
- Parquet files are zstd-compressed and carry footer key-value metadata `immunostrat_run_id` and
  `immunostrat_version`; their row counts and SHA-256 are in `run.json` `outputs`.
- A run stopped by the quarantine ceiling (`validation.max_quarantine_fraction`, default 0.25 of panel rows)
  still writes `harmonised.parquet`, `quarantine.parquet` and `run.json` (with `status: "failed"` and `error`),
  but no `strata.parquet`, and the command exits with status 1.

Read a table with polars (`pl.read_parquet("OUT/<run_id>/strata.parquet")`) or any Parquet reader. To check a
frame against its contract in code: `immunostrat.schemas.outputs.validate_output("strata", frame)`.

## Conventions

- Null means missing or unknown; nothing is imputed. Flags are three-valued (true / false / null = unknown).
- Values are in the analyte's canonical unit (column *unit* below). A censored result (`<10`) keeps its number in
  the value column and its comparator in the matching `censoring` column.
- Dates are calendar dates as written by the lab (local time; UTC offsets are read but not applied).
- "nullable" says whether the column may hold nulls; "checks" are enforced by the contract, together with the
  row checks listed under each table.
"""

TABLE_INTRO = {
    "strata.parquet": (
        "The columns `A`, `A_date`, `A_censoring` exist for every panel analyte `A` of "
        "`schemas/reference/analytes.csv`, and `contrib_<feature>` for every feature of the scoring model (the "
        "default features are listed; a model with other features has its own `contrib_*` columns, named in "
        "`run.json` `model.features`). The `criterion_<id>` columns follow the eligibility protocol of the run "
        "(`run.json` `protocol`): one per criterion, matched by the pattern `^criterion_.+$`. The table is strict: "
        "no other column may appear."
    ),
    "harmonised.parquet": (
        "Only rows that passed every rule. Rows whose test is not on the panel are not here (they are counted in "
        "`run.json` `counts.outside_panel_by_test`), and rejected rows are in `quarantine.parquet`."
    ),
    "quarantine.parquet": (
        "Lab, subject and visit rows share this table (`input_kind` tells them apart). The original input columns "
        "follow the fixed columns as text: lab columns are present when a lab row was quarantined, subject-only "
        "columns when a subject row was, visit-only columns when a visit row was. The values of `reason_code` are "
        "listed under *Reason codes*; [input.md](input.md) explains each one."
    ),
    "outside_panel.parquet": (
        "Rows whose test maps to no analyte are neither accepted nor quarantined: they are set aside here, one row "
        "per input row, and counted per test in `run.json` `counts.outside_panel_by_test` (so `rows_read` = "
        "`accepted` + `outside_panel` + `quarantined`). Join on `source_file` and `source_row` to the input file "
        "for the rest of the row. Team only: never in the sponsor snapshot."
    ),
    "ifn_controls.parquet": (
        "Written only when the run is given expression matrices (`--expression`), for the team's quality control "
        "of the IFN scores; never in the sponsor snapshot. One long table, two kinds of row (`level`): per matrix, "
        "a `gene` row per gene of the IFN method with the healthy controls' mean, SD and median (the reference the "
        "scores are computed against), then a `sample` row per healthy control with its own score. Each kind has "
        "its own columns, null on the other kind; `n_controls`, `method` and `statistic` are on both."
    ),
}

RUN_JSON_INTRO = f"""## run.json

One JSON object (keys sorted, 2-space indent), typed by `immunostrat.schemas.records.RunRecord` (this table is
generated from it; layout version `{RUN_RECORD_SCHEMA_VERSION}`, in `schema_version`). Optional parts are absent
when a run did not produce them: `summary` exists only when `status` is `completed`, `error` only when it is
`failed`. Dotted keys are nested; `<name>` stands for an object's own keys (a path, a group), `[]` for each item
of a list. Readers accept run folders of earlier versions and keys they do not know.
"""


SPONSOR_INTRO = """## Sponsor snapshot (sponsor/)

What leaves the team. The publish step writes it at the end of every completed `stratify` run (or later:
`immunostrat publish RUN`). Keys, configuration, reading recipes and the report are in [sponsor.md](sponsor.md).

```
OUT/
  sponsor-manifest.json                    the current snapshot of each study: consumers start here
  <run_id>/sponsor/                        one run's complete snapshot
    data/study_id=<study>/part-0.parquet   the sponsor table, hive-partitioned by study
    manifest.json                          provenance, privacy settings, counts, files with rows and SHA-256
    data_dictionary.json, .md              this table's columns for the run's model
    report.html                            the run report: one self-contained, sponsor-safe file
```

- The snapshot is staged in `<run_id>/.sponsor.partial-*/` and renamed to `sponsor/` when complete; the sponsor
  contract below is enforced before anything is written. `sponsor-manifest.json` is rewritten atomically under a
  lock, after the snapshot exists, and moves a study to a run only when that run is at least as new as its current
  one (`--make-current` rolls back on purpose).
- `study_id` is not stored in the data files: readers take it from the folder name (hive partitioning, value
  percent-encoded). Read it as text: polars `hive_schema={"study_id": pl.String}`, DuckDB
  `hive_types={'study_id': VARCHAR}`, pyarrow `partitioning=ds.partitioning(pa.schema([("study_id",
  pa.string())]), flavor="hive")`.
- Every data file carries footer key-value metadata: `immunostrat_run_id`, `immunostrat_version`,
  `immunostrat_schema_version`, `immunostrat_model_id`, `immunostrat_model_sha256`,
  `immunostrat_pseudonym_key_id`, `immunostrat_study_id` and `immunostrat_provenance` (the provenance part of
  `manifest.json` as JSON).
"""


def sponsor_manifest_keys() -> list[tuple[str, str, str]]:
    """(key, JSON type, meaning) of sponsor/manifest.json, from its declaration (`immunostrat.sponsor.manifest`);
    dotted keys are nested, the follow-up snapshot's own keys last."""
    keys = [(k["key"], k["type"], k["meaning"]) for k in manifest_keys(SnapshotManifest)]
    follow_up = {k["key"]: k for k in manifest_keys(FollowUpManifest)}
    return keys + [
        (key, follow_up[key]["type"], "Follow-up snapshot only. " + follow_up[key]["meaning"])
        for key in follow_up_only_keys()
    ]


#: (key, JSON type, meaning) of OUT/sponsor-manifest.json.
CURRENT_MANIFEST_KEYS: tuple[tuple[str, str, str], ...] = (
    ("format", "string", "`immunostrat-sponsor-current/1`."),
    ("updated_at", "string", "Last change (UTC)."),
    ("studies", "object", "Per study, its current snapshot (paths relative to this file's folder):"),
    ("studies.<study>.run_id", "string", "The run whose snapshot is current."),
    ("studies.<study>.data", "string", "The study's partition folder: read exactly this folder."),
    ("studies.<study>.snapshot", "string", "The snapshot folder (`<run_id>/sponsor`)."),
    ("studies.<study>.manifest", "string", "The snapshot's `manifest.json`."),
    ("studies.<study>.rows", "integer", "Rows of the study."),
    ("studies.<study>.schema_version", "string", "Sponsor schema version of the snapshot."),
    ("studies.<study>.key_id", "string", "Id of the pseudonym key; publishing with another key is refused."),
    ("studies.<study>.published_at", "string", "When the snapshot was written (UTC)."),
    (
        "follow_up",
        "object",
        "Per study, its current follow-up snapshot (a monitor run), with the keys of `studies.<study>`; "
        "`schema_version` is the follow-up schema version. Absent until a monitor run publishes.",
    ),
)


def _keys_table(keys: Sequence[tuple[str, str, str]]) -> list[str]:
    lines = ["| key | type | meaning |", "|---|---|---|"]
    return lines + [f"| `{key}` | {kind} | {_cell(meaning)} |" for key, kind, meaning in keys]


def _sponsor_columns(table: dict[str, Any]) -> list[str]:
    key = ", ".join(f"`{c}`" for c in table["unique"])
    lines = [
        f"Contract: `{table['model']}`, schema version **{table['schema_version']}**; "
        f"unique key ({key}); strict (no undeclared columns); partitioned by "
        + ", ".join(f"`{c}`" for c in table["partitioned_by"])
        + ". The `contrib_<feature>` columns follow the run's model (its `manifest.json` `model.features`; the "
        "snapshot's own `data_dictionary.json` lists them) and the `criterion_<id>` columns its protocol.",
        "",
        "| column | type | nullable | unit | description | checks |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_column_row(c) for c in table["columns"]]
    if table["row_checks"]:
        lines += ["", "Row checks:", ""]
        lines += [f"- `{c['name']}`: {c['description']}" for c in table["row_checks"]]
    lines += ["", "Strata columns that are not published as they are:", "", "| strata column | instead |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(why)} |" for name, why in table["withheld"].items()]
    lines.append("")
    return lines


def _sponsor_section() -> list[str]:
    table = sponsor_dictionary()
    lines = [SPONSOR_INTRO, "### Sponsor dataset", "", table["description"], ""]
    lines += _sponsor_columns(table)
    follow_up = follow_up_sponsor_dictionary()
    lines += [
        "### Follow-up snapshot (monitor runs)",
        "",
        follow_up["description"],
        f"Layout: {follow_up['layout']}; beside it `endpoint_rates.parquet` (endpoint rates overall and by "
        "predicted group: `predicted_group` null for all subjects; counts null and `suppressed` true where a small "
        "cell was hidden), `manifest.json` (as below, plus "
        + " and ".join(f"`{k}`" for k in follow_up_only_keys())
        + ") and `report.html`.",
        "",
        f"Contract: `{follow_up['model']}`, schema version **{follow_up['schema_version']}**.",
        "",
        "| column | type | nullable | unit | description | checks |",
        "|---|---|---|---|---|---|",
        *[_column_row(c) for c in follow_up["columns"]],
        "",
    ]
    lines += ["### sponsor/manifest.json", "", *_keys_table(sponsor_manifest_keys()), ""]
    lines += ["### sponsor-manifest.json (current snapshots)", "", *_keys_table(CURRENT_MANIFEST_KEYS), ""]
    return lines


def render_sponsor_markdown(features: Sequence[FeatureSpec] = DEFAULT_FEATURES) -> str:
    """The sponsor table's data dictionary on its own (the snapshot's `data_dictionary.md`)."""
    table = sponsor_dictionary(features)
    lines = [
        f"# Sponsor dataset: data dictionary (schema version {table['schema_version']})",
        "",
        table["description"],
        "",
        "Layout: `data/study_id=<study>/part-0.parquet` (hive partitioning; `study_id` comes from the folder name "
        "and is text). Provenance, privacy settings and checksums are in `manifest.json`.",
        "",
        "- Null means missing or unknown; nothing is imputed. Flags are three-valued (true / false / null).",
        "- Values are in the analyte's canonical unit; a censored result keeps its number in the value column and "
        "its comparator in the matching `censoring` column.",
        "- No calendar dates: `*_day` columns count days from the subject's reference date (0 = that day).",
        "",
    ]
    lines += _sponsor_columns(table)
    return "\n".join(lines).rstrip("\n") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(value: Any) -> str:
    return "(empty)" if value == "" else f"`{value}`"


def _column_row(col: dict[str, Any]) -> str:
    name = "`criterion_<id>`" if col["pattern"] and col["pattern"].startswith("^criterion_") else f"`{col['name']}`"
    if col["pattern"]:
        name += f" (pattern `{col['pattern']}`)"
    checks = list(col["checks"])
    if col["allowed_values"] is not None:
        checks.insert(0, "one of: " + ", ".join(_value(v) for v in col["allowed_values"]))
    if not col["required"]:
        checks.append("column may be absent")
    cells = [
        name,
        col["type"],
        "yes" if col["nullable"] else "no",
        col["unit"] or "",
        col["description"],
        "; ".join(checks),
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table_section(file_name: str, table: dict[str, Any]) -> list[str]:
    lines = [f"## {file_name}", "", table["description"], ""]
    if file_name in TABLE_INTRO:
        lines += [TABLE_INTRO[file_name], ""]
    key = ", ".join(f"`{c}`" for c in table["unique"])
    lines += [
        f"Contract: `{table['model']}`"
        + (f"; unique key ({key})" if key else "")
        + ("; strict (no undeclared columns)." if table["strict"] else "."),
        "",
        "| column | type | nullable | unit | description | checks |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_column_row(c) for c in table["columns"]]
    if table["row_checks"]:
        lines += ["", "Row checks:", ""]
        lines += [f"- `{c['name']}`: {c['description']}" for c in table["row_checks"]]
    lines.append("")
    return lines


def _reason_section() -> list[str]:
    lines = [
        "### Reason codes",
        "",
        "In priority order within each input: a row's `reason_code` is the first rule it failed, and `reason_codes`",
        "lists all of them in this order.",
        "",
        "| reason_code | input | column | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{r['code']}` | {r['input']} | `{r['column']}` | {_cell(r['meaning'])} |" for r in reason_codes()]
    lines.append("")
    return lines


def render_markdown() -> str:
    """docs/output.md: run folder layout, every column of every output table, and the keys of run.json."""
    lines = [HEADER]
    for file_name, table in data_dictionary().items():
        lines += _table_section(file_name, table)
        if file_name == "quarantine.parquet":
            lines += _reason_section()
    lines += [RUN_JSON_INTRO, "| key | type | meaning |", "|---|---|---|"]
    lines += [f"| `{k['key']}` | {k['type']} | {_cell(k['meaning'])} |" for k in run_json_keys()]
    lines += ["", *_sponsor_section()]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _compare(path: Path, expected: str, what: str) -> tuple[bool, str]:
    if not path.is_file():
        return False, f"{path} does not exist; generate it with: {REGENERATE}"
    actual = path.read_text(encoding="utf-8")
    if actual == expected:
        return True, f"{path} is up to date"
    diff = list(
        difflib.unified_diff(
            actual.splitlines(), expected.splitlines(), f"{path} (committed)", f"{path} (generated)", lineterm=""
        )
    )
    shown = "\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else "")
    return False, f"{path} differs from the {what}; regenerate it with: {REGENERATE}\n{shown}"


def _committed_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


def json_path(markdown: Path) -> Path:
    """Where the JSON dictionary goes: beside the Markdown one (docs/data-dictionary.json)."""
    return markdown.with_name(JSON_NAME)


def check_file(path: Path) -> tuple[bool, str]:
    """(up to date?, explanation) for the data dictionary at `path` and the JSON dictionary beside it."""
    results = [_compare(path, render_markdown(), "schemas"), _compare(json_path(path), render_json(), "schemas")]
    problem = version_problem(_committed_json(json_path(path)))
    if problem:
        results.append((False, problem))
    ok = all(r[0] for r in results)
    return ok, "\n".join(message for fine, message in results if ok or not fine)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m immunostrat.reporting.datadict [--out PATH] [--check]`."""
    parser = argparse.ArgumentParser(
        prog="python -m immunostrat.reporting.datadict", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"markdown file (default {DEFAULT_OUT}); {JSON_NAME} goes beside it",
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 when a file differs from the generated text"
    )
    args = parser.parse_args(argv)
    if args.check:
        ok, message = check_file(args.out)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    problem = version_problem(_committed_json(json_path(args.out)))
    if problem:
        print(f"not written: {problem}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_markdown(), encoding="utf-8")
    json_path(args.out).write_text(render_json(), encoding="utf-8")
    print(f"wrote {args.out} and {json_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
