"""Deprecated import path, kept for one release: use `immunostrat.reporting.datadict` (issue 14 moved it there).

`immunostrat.datadict` re-exports the public names of its new home;
`tests/test_layout.py` checks that it still works until it is removed.
"""

from importlib import import_module

_HOME = import_module("immunostrat.reporting.datadict")
globals().update({name: value for name, value in vars(_HOME).items() if not name.startswith("_")})

if __name__ == "__main__":  # `python -m immunostrat.datadict`, as documented before the move
    raise SystemExit(_HOME.main())
