"""Prefect flows, one file each, built from the pipeline definitions: `stratify` and `train`.

Importing this package imports Prefect; the command line does so only after every launch check passed.
"""

from immunostrat.flows.stratify import run_stratify_flow, stratify_flow
from immunostrat.flows.train import run_train_flow, train_flow

__all__ = ["run_stratify_flow", "run_train_flow", "stratify_flow", "train_flow"]
