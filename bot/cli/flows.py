"""`hotline flows check|test|graph`: the administrator's tools for the flows directory.

- `check [PATH...]` lints each flows directory (a flow file stands for its directory): one line
  per problem as `file:line: CODE message`; exit status 1 if any is an error.
- `test [PATH...]` runs the dialog tables in `<dir>/tests/*.test.yaml` and prints the
  transition and step coverage of every flow; exit status 1 on a failed test or a flow under
  `--min-coverage` percent of its transitions.
- `graph FLOW` prints the flow as a Mermaid state diagram.
- `import`, `export`, `versions`, `rollback`: the published versions (`bot/cli/flow_versions.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backend.core.errors import FlowError
from backend.core.settings import Settings
from backend.flows.diagram import mermaid
from backend.flows.dialogs import run_directory
from backend.flows.registry import load_bundle
from bot.cli import flow_versions

DEFAULT_MIN_COVERAGE = 90.0


def _directories(settings: Settings, paths: list[str]) -> list[Path]:
    if not paths:
        return [settings.flows_dir]
    found = []
    for raw in paths:
        path = Path(raw)
        found.append(path.parent if path.is_file() else path)
    return found


def _check(settings: Settings, args: argparse.Namespace) -> int:
    status = 0
    for directory in _directories(settings, args.paths):
        if not directory.is_dir():
            print(f"{directory}:1: F000 not a flows directory", file=sys.stderr)
            status = 1
            continue
        bundle, problems = load_bundle(directory)
        for problem in problems:
            print(problem)
        errors = sum(p.is_error for p in problems)
        warnings = len(problems) - errors
        if bundle is None:
            status = 1
            print(f"{directory}: {errors} error(s), {warnings} warning(s)", file=sys.stderr)
        else:
            flows = len(bundle.flows)
            print(f"{directory}: {flows} flows OK, version {bundle.version}, {warnings} warning(s)")
    return status


def _test(settings: Settings, args: argparse.Namespace) -> int:
    status = 0
    for directory in _directories(settings, args.paths):
        bundle, problems = load_bundle(directory)
        if bundle is None:
            for problem in problems:
                if problem.is_error:
                    print(problem)
            return 1
        try:
            report, coverage = run_directory(bundle, directory)
        except FlowError as exc:
            print(f"F000 {exc}")
            return 1
        for failure in report.failures:
            print(f"FAIL {failure}")
        print(f"{directory}: {report.passed} passed, {len(report.failures)} failed")
        print(f"{'flow':<12} {'transitions':>11} {'steps':>7}")
        for name in sorted(bundle.flows):
            transitions = coverage.transitions(name)
            print(f"{name:<12} {transitions:>10.1f}% {coverage.states(name):>6.1f}%")
            if transitions < args.min_coverage:
                status = 1
                missing = ", ".join(f"{a}->{b}" for a, b in coverage.missing(name))
                print(f"  under {args.min_coverage:.0f}%; not taken: {missing}")
        if report.failures:
            status = 1
    return status


def _graph(settings: Settings, args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else settings.flows_dir
    bundle, problems = load_bundle(directory)
    if bundle is None:
        for problem in problems:
            if problem.is_error:
                print(problem, file=sys.stderr)
        return 1
    flow = bundle.flows.get(args.flow)
    if flow is None:
        print(f"hotline: no flow {args.flow!r}; there are {sorted(bundle.flows)}", file=sys.stderr)
        return 1
    print(mermaid(flow.spec), end="")
    return 0


def register(commands: Any) -> None:  # argparse's subparsers action has no public type
    flows = commands.add_parser(
        "flows",
        help="check, test and draw the conversation flows",
        description="Tools for the YAML flows under HOTLINE_FLOWS_DIR (default the shipped "
        "flows/): check, test and graph touch neither Redis nor the database; import, export, "
        "versions and rollback work on the published versions in the database.",
    )
    sub = flows.add_subparsers(dest="flows_command", required=True, metavar="SUBCOMMAND")
    check = sub.add_parser(
        "check",
        help="lint flows: error codes with file and line; exit status 1 on any error",
        description="Lint each flows directory (default HOTLINE_FLOWS_DIR). Prints "
        "`file:line: CODE message` per problem; codes F000-F010 are errors, W100 warnings.",
    )
    check.add_argument("paths", nargs="*", metavar="PATH", help="a flows directory or flow file")
    check.set_defaults(handler=_check)
    test = sub.add_parser(
        "test",
        help="run the dialog tables in <dir>/tests and report coverage",
        description="Run every `tests/*.test.yaml` dialog table against the flows and print "
        "the transition and step coverage per flow.",
    )
    test.add_argument("paths", nargs="*", metavar="PATH", help="a flows directory")
    test.add_argument(
        "--min-coverage",
        type=float,
        default=DEFAULT_MIN_COVERAGE,
        help="fail when a flow's transition coverage is under this percentage "
        f"(default {DEFAULT_MIN_COVERAGE:.0f})",
    )
    test.set_defaults(handler=_test)
    graph = sub.add_parser(
        "graph",
        help="print a flow as a Mermaid diagram",
        description="Print FLOW as a Mermaid state diagram (stateDiagram-v2) on standard output.",
    )
    graph.add_argument("flow", metavar="FLOW", help="the flow name, e.g. report")
    graph.add_argument("--dir", help="the flows directory (default HOTLINE_FLOWS_DIR)")
    graph.set_defaults(handler=_graph)
    flow_versions.add_parsers(sub)
