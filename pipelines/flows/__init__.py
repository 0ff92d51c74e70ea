"""Prefect flows, one file each, built from the pipeline definitions: `stratify`, `monitor` and `train`.

Import the flow a command runs (`immunostrat.flows.stratify`, ...), never the package for all three: each flow
pays Prefect's parameter-schema build when its module loads, and `train`'s pulls in scikit-learn. Every flow
module imports Prefect; the command line imports one only after every launch check passed.
"""
