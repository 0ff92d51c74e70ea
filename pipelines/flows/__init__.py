"""Prefect flows, one file each, built from the pipeline definitions: `stratify`, `monitor` and `train`.

Importing this package imports Prefect; the command line does so only after every launch check passed.
"""

from immunostrat.flows.monitor import monitor_flow, run_monitor_flow
from immunostrat.flows.stratify import run_stratify_flow, stratify_flow
from immunostrat.flows.train import run_train_flow, train_flow

__all__ = ["monitor_flow", "run_monitor_flow", "run_stratify_flow", "run_train_flow", "stratify_flow", "train_flow"]
