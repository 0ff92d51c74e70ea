"""Launch checks: everything that can be checked before compute, checked before any Prefect server starts.

A plan (`Plan`) is what a run needs to start: its pipeline definition, an executor, and a `RunContext` holding the
resolved protocol, reference tables and the model (resolved, checksummed and loading in the background). Building
one raises a `immunostrat.errors.UserError` (exit 2) naming the problem and what to do for:

- a path outside the data roots (`$IMMUNOSTRAT_DATA_ROOTS`);
- a protocol, alias file or IFN methods file that cannot be used;
- a missing pseudonym key when the run publishes;
- an unknown model, or a model or card whose checksum does not match the registry;
- an IFN method without a cut-off (expression inputs, or `harmonise.ifn_default_method`);
- a missing input file, an empty one, or a native file whose header lacks a required column or is not UTF-8.

Nothing here imports Prefect, scikit-learn or skops.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.config.data_roots import confine, data_roots_from_env
from immunostrat.config.run import Protocol, RunConfig, load_protocol
from immunostrat.errors import SettingsError
from immunostrat.followup.events import check_events_header
from immunostrat.followup.visits import check_visits_header
from immunostrat.ingest.io import (
    LAB_OPTIONAL,
    LAB_REQUIRED,
    OUTCOME_OPTIONAL,
    OUTCOME_REQUIRED,
    SUBJECT_OPTIONAL,
    SUBJECT_REQUIRED,
    InputError,
    detect_format,
    scan_input,
)
from immunostrat.ingest.reference import ReferenceTables, load_reference
from immunostrat.modelling.handle import ModelHandle
from immunostrat.modelling.registry import resolve_model_file
from immunostrat.pipeline.engine.definition import Pipeline
from immunostrat.pipeline.engine.executors import InMemory, Streaming
from immunostrat.pipeline.engine.runfolder import new_run_id
from immunostrat.pipeline.partition import is_native, partition_count
from immunostrat.pipeline.selection import LABELLED, STRATIFY, VALIDATE, RunContext

#: Bytes of a native lab CSV row, for deciding to stream without reading the file: the synthetic cohort and
#: the site samples take 87 bytes a row; a lower figure over-estimates rows, so a borderline file streams.
CSV_BYTES_PER_ROW = 64


@dataclass(frozen=True)
class Plan:
    """A run that passed its launch checks: what to run, how, and with what."""

    pipeline: Pipeline
    executor: InMemory | Streaming
    ctx: RunContext
    out: Path | None = None


# ------------------------------------------------------------------------------------------------------ checks


def check_data_roots(
    files: Any,
    cfg: RunConfig,
    *,
    out: str | None = None,
    protocol: str | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Every path a run reads or writes stays inside `$IMMUNOSTRAT_DATA_ROOTS` (or `env`'s), when that is set."""
    roots = data_roots_from_env(env)
    if not roots:
        return
    candidates: list[tuple[str, Any]] = [
        *((f"labs[{i}]", p) for i, p in enumerate(files.labs)),
        ("subjects", files.subjects),
        *((f"expression[{i}]", p) for i, p in enumerate(files.expression)),
        ("samples", files.samples),
        ("patients", files.patients),
        ("visits", getattr(files, "visits", None)),
        ("events", getattr(files, "events", None)),
        ("strata", getattr(files, "strata", None)),
        ("out", out),
        ("protocol", protocol),
        ("harmonise.alias_file", cfg.harmonise.alias_file),
        ("baseline.ifn_methods_file", cfg.baseline.ifn_methods_file),
        ("scoring.registry", cfg.scoring.registry),
        ("readers.crosswalk", cfg.readers.crosswalk),
    ]
    for what, value in candidates:
        if value is not None and os.fspath(value) != "":
            confine(value, roots, what=what)


def load_protocol_at(path: str | None) -> Protocol:
    """The eligibility protocol (the built-in one when `path` is None); SettingsError when unusable."""
    return load_protocol(Path(path) if path else None)


def checked_reference(cfg: RunConfig) -> ReferenceTables:
    """The mapping tables (with the run's alias and IFN methods files), or a SettingsError naming the file."""
    try:
        return load_reference(cfg.harmonise.alias_file, cfg.baseline.ifn_methods_file)
    except OSError as exc:
        raise SettingsError(f"cannot read a mapping file: {exc}") from exc
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def check_ifn_methods(files: Any, cfg: RunConfig, ref: ReferenceTables) -> None:
    """An IFN method the run will assign must have a cut-off: else every IFN score would be quarantined."""
    known = set(ref.ifn_methods["method"].to_list())
    table = cfg.baseline.ifn_methods_file or "the built-in schemas/reference/ifn_methods.csv"
    wanted = []
    if files.expression:
        wanted.append(("readers.ifn_method (--ifn-method)", cfg.readers.ifn_method))
    if cfg.harmonise.ifn_default_method:
        wanted.append(("harmonise.ifn_default_method (--ifn-default-method)", cfg.harmonise.ifn_default_method))
    for setting, method in wanted:
        if method.strip().upper() not in known:
            raise SettingsError(
                f"{setting} is {method!r}, which has no cut-off in {table}; add a row (method,high_cutoff,inclusive) "
                f"to a copy of it and pass it as baseline.ifn_methods_file, or use one of: {', '.join(sorted(known))}"
            )


def check_key(cfg: RunConfig) -> None:
    """A run that publishes needs the pseudonym key (its value never leaves `immunostrat.sponsor.pseudonym`)."""
    if cfg.publish.enabled:
        # Start-up time: the sponsor package loads only for a run that publishes (never for validate).
        from immunostrat.sponsor.pseudonym import load_key

        load_key(cfg.publish.key_file, demo=cfg.publish.demo_key)


def resolve_model(cfg: RunConfig, *, load: bool = True) -> Any:
    """The run's model: resolved and checksummed now (a `ModelHandle`); deserialised in the background only when
    its card has no coefficient form to score from."""
    handle = ModelHandle(resolve_model_file(cfg.scoring.model, cfg.scoring.registry))
    return handle.start_loading() if load else handle


def check_inputs(files: Any) -> None:
    """Every input exists and is not empty; native files' headers hold the required columns (rows unread)."""
    for path in files.labs:
        _exists(path, "lab results")  # before `is_native` reads the file's start to detect its format
        if is_native(path, files.lab_format):  # the header, and the first 64 KiB's encoding
            scan_input(path, LAB_REQUIRED, LAB_OPTIONAL, kind="lab results")
    for path in files.expression:
        _exists(path, "expression matrix")
    for path, kind in ((files.subjects, "subjects"), (files.samples, "sample sheet"), (files.patients, "patients")):
        if path:
            _exists(path, kind)
    if files.subjects and is_native(files.subjects, None):
        scan_input(files.subjects, SUBJECT_REQUIRED, SUBJECT_OPTIONAL, kind="subjects")
    visits = getattr(files, "visits", None)
    if visits:
        _exists(visits, "visits")
        check_visits_header(visits)  # the header, rows unread: an unknown column stops here too
    events = getattr(files, "events", None)
    if events:
        _exists(events, "events")
        check_events_header(events)


def check_out_folder(out: str | Path) -> None:
    """The output folder exists or can be created (a run folder is staged inside it)."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"output folder {out} cannot be created ({exc.strerror or exc}); choose another --out"
        ) from exc
    if not os.access(out, os.W_OK):
        raise SettingsError(f"output folder {out} is not writable; choose another --out")


def _exists(path: str, kind: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{kind} file not found")
    if p.stat().st_size == 0:
        raise InputError(p, f"{kind} file is empty (0 bytes)")


def estimated_lab_rows(files: Any) -> int:
    """Native lab rows, without reading a CSV: Parquet from its metadata, CSV from its size (`CSV_BYTES_PER_ROW`)."""
    rows = 0
    for path in files.labs:
        if not is_native(path, files.lab_format):
            continue
        p = Path(path)
        if detect_format(p) == "parquet":
            rows += int(pl.scan_parquet(p).select(pl.len()).collect().item())  # from the footer's metadata
        else:
            rows += math.ceil(p.stat().st_size / CSV_BYTES_PER_ROW)
    return rows


def choose_executor(params: Any) -> tuple[InMemory | Streaming, int]:
    """Streaming as configured, else when the native lab rows exceed one partition; in-memory partitions when
    asked for (`partitions` > 1, e.g. on Dask). Returns the executor and the partition count of a split."""
    partitions = getattr(params, "partitions", 1)
    streaming = getattr(params, "streaming", False)
    partition_rows = getattr(params, "partition_rows", 1_000_000)
    if streaming is False or (streaming is None and partitions > 1):
        return InMemory(partitions), partitions
    rows = estimated_lab_rows(params)
    if streaming is None and rows <= partition_rows:
        return InMemory(1), 1
    return Streaming(), partition_count(partitions, partition_rows, rows)


# ------------------------------------------------------------------------------------------------------- plans


def _context(files: Any, cfg: RunConfig, **fields: Any) -> RunContext:
    started = dt.datetime.now(dt.UTC)
    ref = checked_reference(cfg)
    check_ifn_methods(files, cfg, ref)
    return RunContext(run_id=new_run_id(started), files=files, cfg=cfg, reference=ref, started=started, **fields)


def plan_stratify(params: Any, *, load_model: bool = True) -> Plan:
    """Launch checks of a stratify run (see the module docstring); the model starts loading in the background
    (unless `load_model` is False: the checks only, before a Prefect flow makes its own plan)."""
    cfg = params.config
    check_data_roots(params, cfg, out=params.out, protocol=params.protocol)
    protocol = load_protocol_at(params.protocol)
    check_key(cfg)
    check_inputs(params)
    check_out_folder(params.out)
    executor, n = choose_executor(params)
    ctx = _context(params, cfg, protocol=protocol, model=resolve_model(cfg, load=load_model), partitions=n)
    return Plan(STRATIFY, executor, ctx, out=Path(params.out))


def check_strata_run(run_dir: str | None) -> None:
    """`--strata` names a completed stratify run folder whose strata table holds the predicted groups."""
    if not run_dir:
        return
    # Start-up time: the follow-up pipeline loads only for the follow-up plans (monitor, train by endpoint).
    from immunostrat.pipeline.follow_up import read_strata_run

    read_strata_run(run_dir)


def plan_monitor(params: Any) -> Plan:
    """Launch checks of a monitor run: inputs with their visits file, protocol with its endpoint definition, the
    stratify run named by `--strata`, the output folder. No model is loaded: groups come from that run."""
    # Start-up time: the follow-up pipeline loads only for the follow-up plans (validate and stratify never use it).
    from immunostrat.pipeline.follow_up import MONITOR

    cfg = params.config
    if not params.visits:
        raise SettingsError("monitor needs a visits file: give --visits FILE (docs/input.md, Visits)")
    check_data_roots(params, cfg, out=params.out, protocol=params.protocol)
    protocol = load_protocol_at(params.protocol)
    check_key(cfg)
    check_inputs(params)
    check_strata_run(params.strata)
    check_out_folder(params.out)
    executor, n = choose_executor(params)
    return Plan(MONITOR, executor, _context(params, cfg, protocol=protocol, partitions=n), out=Path(params.out))


def plan_validate(params: Any) -> Plan:
    """Launch checks of `immunostrat validate` (inputs and mapping tables only: no model, key or protocol)."""
    cfg = params.config
    check_data_roots(params, cfg)
    check_inputs(params)
    executor, n = choose_executor(params) if params.subjects else (InMemory(1), 1)
    return Plan(VALIDATE, executor, _context(params, cfg, partitions=n))


def plan_training(params: Any) -> Plan:
    """Launch checks of `train`: from an outcomes file (`plan_labelled`), or from an endpoint of the visits,
    whose name and landmark the protocol's endpoint definition must know."""
    if params.endpoint is None:
        return plan_labelled(params, params.config, params.protocol, outcomes=params.outcomes)
    # Start-up time: the follow-up pipeline loads only for the follow-up plans (here, outcomes from the visits).
    from immunostrat.pipeline.follow_up import LABELLED_BY_ENDPOINT

    check_data_roots(params, params.config, protocol=params.protocol)
    protocol = load_protocol_at(params.protocol)
    protocol.endpoints.check_known(params.endpoint, params.landmark)
    check_inputs(params)
    return Plan(LABELLED_BY_ENDPOINT, InMemory(1), _context(params, params.config, protocol=protocol))


def plan_labelled(files: Any, cfg: RunConfig, protocol: str | None = None, *, outcomes: str | None = None) -> Plan:
    """Launch checks of the labelled strata behind train, evaluate and models compare (one pass in memory); the
    outcomes file, when given, is checked on its header too."""
    check_data_roots(files, cfg, protocol=protocol)
    check_inputs(files)
    if outcomes is not None:
        scan_input(outcomes, OUTCOME_REQUIRED, OUTCOME_OPTIONAL, kind="outcomes")
    return Plan(LABELLED, InMemory(1), _context(files, cfg, protocol=load_protocol_at(protocol)))
