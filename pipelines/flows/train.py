"""The `train` flow: the `LABELLED` definition's steps, then label, cross-validate, fit and register, a task each."""

from __future__ import annotations

from typing import Any

from prefect import flow

from immunostrat.config.run import TrainParams
from immunostrat.errors import UserError
from immunostrat.flows.runner import PrefectRunner, call_flow, failed, flow_run_name
from immunostrat.modelling import training


@flow(name="train", flow_run_name=flow_run_name("train"), log_prints=True, validate_parameters=True)
def train_flow(params: TrainParams) -> Any:
    """Fit a responder model on baseline features and outcomes; register it; returns the model id."""
    try:
        return training.train(params, runner=PrefectRunner())
    except UserError as exc:
        return failed(exc)


def run_train_flow(params: TrainParams) -> str:
    """Call the train flow in this process; returns the model id, or raises the user error that stopped it."""
    return call_flow(train_flow, params)
