"""Deprecated import path, kept for one release: use `immunostrat.sponsor.publish` (issue 14 moved it there).

`immunostrat.publish` re-exports the public names of its new home and of the modules it was split into since
(`immunostrat.sponsor.table`, `.current`, `.follow_up`); `tests/test_layout.py` checks that it still works until it
is removed.
"""

from importlib import import_module

for _home in ("immunostrat.sponsor.publish", "immunostrat.sponsor.table", "immunostrat.sponsor.current",
              "immunostrat.sponsor.follow_up"):  # fmt: skip
    globals().update({name: value for name, value in vars(import_module(_home)).items() if not name.startswith("_")})
