"""Deprecated import path, kept for one release: use `immunostrat.sponsor.publish` (issue 14 moved it there).

`immunostrat.publish` re-exports the public names of its new home;
`tests/test_layout.py` checks that it still works until it is removed.
"""

from importlib import import_module

_HOME = import_module("immunostrat.sponsor.publish")
globals().update({name: value for name, value in vars(_HOME).items() if not name.startswith("_")})
