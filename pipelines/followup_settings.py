"""Deprecated import path, kept for one release: use `immunostrat.config.followup` (issue 14 moved it there).

`immunostrat.followup_settings` re-exports the public names of its new home;
`tests/test_layout.py` checks that it still works until it is removed.
"""

from importlib import import_module

_HOME = import_module("immunostrat.config.followup")
globals().update({name: value for name, value in vars(_HOME).items() if not name.startswith("_")})
