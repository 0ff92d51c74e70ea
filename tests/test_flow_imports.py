"""What running one flow loads: only its own flow module, never another flow's libraries (issue 15).

`immunostrat stratify` as a flow used to import the package `immunostrat.flows`, which loaded all three flows:
`train`'s scikit-learn (1.8 s) and two more parameter schemas Prefect builds when a flow is declared.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Libraries no stratify or monitor flow run uses (Dask only for `--partitions`, scikit-learn only to train).
NOT_FOR_A_FLOW_RUN = ("sklearn", "skops", "scipy", "dask", "distributed", "prefect_dask", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    wanted = f"m.startswith('immunostrat.flows') or m.split('.')[0] in {NOT_FOR_A_FLOW_RUN!r}"
    probe = f"import sys; {code}; print(' '.join(sorted(m for m in sys.modules if {wanted})))"
    return set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split())


@pytest.mark.parametrize(
    ("module", "flows"),
    [
        ("immunostrat.flows.stratify", {"immunostrat.flows", "immunostrat.flows.runner", "immunostrat.flows.stratify"}),
        ("immunostrat.flows.monitor", {"immunostrat.flows", "immunostrat.flows.runner", "immunostrat.flows.monitor"}),
    ],
)
def test_a_flow_loads_its_own_module_and_none_of_the_other_flows_libraries(module: str, flows: set[str]) -> None:
    assert _loaded_after(f"import {module}") == flows


def test_the_flows_package_alone_loads_no_flow() -> None:
    assert _loaded_after("import immunostrat.flows") == {"immunostrat.flows"}
