"""Count the polars plans an immunostrat command executes, by the module that asked for them.

Usage:
    python benchmarks/collects.py [--top N] -- validate --labs L --subjects S [...]   # any immunostrat command line

Every polars query runs through one engine method (`collect`, `collect_all`; eager DataFrame methods are lazy
plans collected there too), so wrapping it counts every plan a command executes. Each plan is attributed to the
innermost calling frame outside polars itself (an immunostrat module, or pandera's backend), and the counts are
printed after the command ends (to stderr, so the command's own output is unchanged). A count, not a timing:
the same on a loaded machine as on an idle one.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable
from typing import Any

import polars.lazyframe.engine as polars_engine

COUNTS: collections.Counter[str] = collections.Counter()


def _caller() -> str:
    """`package.module:function` of the innermost frame that is not polars' own."""
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", "?"))
        if not module.startswith("polars") and module != __name__:
            return f"{module}:{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def _counted(method: Callable[..., Any], plans: Callable[[Any], int]) -> Callable[..., Any]:
    """`method`, counting `plans(args)` executions against its caller."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTS[_caller()] += plans(args)
        return method(self, *args, **kwargs)

    return wrapper


def install() -> None:
    """Wrap the local engine's collect entry points (every in-memory and streaming plan goes through them)."""
    engine = polars_engine._LocalEngine
    engine.collect = _counted(engine.collect, lambda args: 1)  # type: ignore[method-assign]
    # collect_all runs several plans in one call: counted as one call (what it saves is the point).
    engine.collect_all = _counted(engine.collect_all, lambda args: 1)  # type: ignore[method-assign]


def summary(top: int) -> str:
    """The total and the busiest callers, grouped by module too."""
    by_module: collections.Counter[str] = collections.Counter()
    for caller, n in COUNTS.items():
        by_module[caller.split(":", 1)[0]] += n
    lines = [f"polars plans executed: {sum(COUNTS.values())}", "by module:"]
    lines += [f"  {n:>6}  {module}" for module, n in by_module.most_common(top)]
    lines.append("by function:")
    lines += [f"  {n:>6}  {caller}" for caller, n in COUNTS.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    """Run the immunostrat command line given after `--` with counting installed; print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--top", type=int, default=15, help="callers to list")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the immunostrat command line (after --)")
    args = parser.parse_args()
    command = [a for a in args.command if a != "--"] if args.command[:1] == ["--"] else args.command
    install()
    from immunostrat.cli.main import main as immunostrat_main

    sys.argv = ["immunostrat", *command]
    try:
        code = immunostrat_main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    print(summary(args.top), file=sys.stderr)
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
