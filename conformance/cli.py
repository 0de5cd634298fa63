"""The ``attnspec`` command: check, list, report, export.

Exit status: 0 when every applicable case passed (xfails allowed), 1 when any failed or
errored, 2 for a usage error (unknown target, bad option, unreadable file), 130 when the run
was interrupted (Ctrl-C; the reports asked for are written with the results gathered so far,
marked ``"status": "interrupted"``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnspec",
        description="Grade attention implementations against the attnspec spec.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser(
        "check", help="grade implementations (default: every built-in one available here)",
        description="Grade TARGETs against docs/spec.md. A TARGET is a built-in adapter "
                    "name (see `attnspec list --adapters`) or module:callable following "
                    "attnspec.scaled_dot_product_attention's signature.",
    )
    check.add_argument("targets", nargs="*", metavar="TARGET")
    check.add_argument("--backend", default="numpy",
                       help="backend whose arrays a module:callable takes (default: numpy)")
    check.add_argument("--device", default=None, help="device for the backend (e.g. cuda)")
    check.add_argument("--dtype", action="append", dest="dtypes", metavar="DTYPE",
                       choices=("float64", "float32", "float16", "bfloat16"),
                       help="only cases of this dtype (repeatable)")
    check.add_argument("--select", action="append", metavar="PATTERN",
                       help="only cases whose ID matches PATTERN (glob or substring; repeatable)")
    check.add_argument("--xfail-file", type=Path, help="expected failures (pattern  # reason)")
    check.add_argument("--capabilities", type=Path,
                       help="TOML declaring a module:callable's layout, mask and features")
    check.add_argument("--seed", type=int, default=0, help="mixed into every case's seed")
    check.add_argument("--timeout", type=float, default=60.0, help="seconds per case (60)")
    check.add_argument("--full", action="store_true", help="the whole catalog")
    check.add_argument("--json", type=Path, help="write the JSON report here")
    check.add_argument("--markdown", type=Path, help="write a Markdown summary here")
    check.add_argument("--html", type=Path, help="write a self-contained HTML report here")
    check.add_argument("--outputs", type=Path, metavar="DIR",
                       help="grade outputs computed elsewhere (see `attnspec export`)")
    check.add_argument("--explore", type=int, metavar="N", default=0,
                       help="also draw N random configurations (Hypothesis), shrink a "
                            "failure and print a reproducer script")
    check.add_argument("--no-fingerprint", action="store_true", help="skip the fingerprint")
    check.add_argument("--in-process", action="store_true",
                       help="run implementations in this process (faster; a crash ends the run)")
    check.add_argument("--memory-limit", default="auto", metavar="SIZE",
                       help="what a worker may allocate, e.g. 8G, 512M, or none (default "
                            "auto: half the physical memory, at least 2 GiB, for CPU "
                            "implementations; none for GPU ones)")
    check.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    lst = sub.add_parser("list", help="print rules, cases and adapters")
    lst.add_argument("--full", action="store_true", help="the whole catalog")
    lst.add_argument("--cases", action="store_true", help="list every case ID")
    lst.add_argument("--adapters", action="store_true", help="list built-in adapters")
    lst.add_argument("--select", action="append", metavar="PATTERN")

    report = sub.add_parser("report", help="merge JSON reports into one compliance matrix")
    report.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json")
    report.add_argument("--json", type=Path)
    report.add_argument("--markdown", type=Path)
    report.add_argument("--html", type=Path)

    export = sub.add_parser("export", help="write golden vectors (.npz + JSON) for "
                                           "implementations outside Python")
    export.add_argument("directory", type=Path)
    export.add_argument("--full", action="store_true")
    export.add_argument("--select", action="append", metavar="PATTERN")
    export.add_argument("--dtype", action="append", dest="dtypes", metavar="DTYPE",
                        choices=("float64", "float32", "float16", "bfloat16"))
    export.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("attnspec: the conformance suite needs NumPy (its golden references are NumPy "
              'float64): pip install "attnspec[numpy]"', file=sys.stderr)
        return USAGE_ERROR
    if args.command is None:
        parser.print_help()
        return USAGE_ERROR
    try:
        return {"check": _check, "list": _list, "report": _report, "export": _export}[
            args.command](args)
    except UsageError as exc:
        from .views import plain  # the message may quote an implementation's own words

        print(f"attnspec {args.command}: error: {plain(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"attnspec {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def _use_color(choice: str) -> bool:
    if choice == "auto":
        return sys.stdout.isatty()
    return choice == "always"


def _write_outputs(report, args: argparse.Namespace) -> None:
    """The reports asked for, each written atomically (``atomic.write_text``)."""
    from .atomic import write_text
    from .html import to_html
    from .markdown import to_markdown

    if args.json:
        report.save(args.json)
    if args.markdown:
        write_text(args.markdown, to_markdown(report))
    if args.html:
        write_text(args.html, to_html(report))


def _write_partial(report, args: argparse.Namespace) -> None:
    """The reports of an interrupted run; a second Ctrl-C waits until they are written (a
    fraction of a second) rather than leave the run with no report at all."""
    import signal

    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: no signal handling to change
        previous = None
    try:
        _write_outputs(report, args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _check(args: argparse.Namespace) -> int:
    from . import api
    from .terminal import Progress, matrix, summary

    if args.explore < 0:
        raise UsageError("--explore must be >= 0")
    if args.xfail_file and not args.xfail_file.is_file():
        raise UsageError(f"--xfail-file {args.xfail_file}: no such file")
    if args.outputs is not None:
        from .export import grade_outputs

        if not args.outputs.is_dir():
            raise UsageError(f"--outputs {args.outputs}: no such directory")
        report = grade_outputs(args.outputs, full=args.full, select=args.select,
                               dtypes=args.dtypes, seed=args.seed, xfail_file=args.xfail_file)
    else:
        progress = Progress(0)
        try:
            report = api.run(
                args.targets or None, backend=args.backend, device=args.device,
                dtypes=args.dtypes, select=args.select, xfail_file=args.xfail_file,
                seed=args.seed, timeout=args.timeout, full=args.full, progress=progress,
                isolate=not args.in_process, fingerprint=not args.no_fingerprint,
                capabilities=args.capabilities, memory_limit=args.memory_limit,
            )
        except api.RunInterrupted as exc:
            progress.close()
            report = exc.report
            _write_partial(report, args)
            print(summary(report))
            return INTERRUPTED
        except (ValueError, TypeError, ImportError) as exc:
            raise UsageError(str(exc)) from None
        finally:
            progress.close()
    color = _use_color(args.color)
    print(matrix(report, color=color))
    print(summary(report))
    status = report.exit_code
    if args.explore:
        from .explore import explore

        for target in args.targets or []:
            status = max(status, explore(target, examples=args.explore, backend=args.backend,
                                         device=args.device, dtypes=args.dtypes))
    _write_outputs(report, args)
    return status


def _list(args: argparse.Namespace) -> int:
    from .catalog import RULE_GROUPS, catalog, select
    from .rules import RULES

    cases = list(select(catalog(full=args.full), args.select))
    if args.adapters:
        from .adapters import builtin_adapters

        for adapter in builtin_adapters():
            reason = adapter.unavailable()
            state = "available" if reason is None else f"unavailable: {reason}"
            print(f"{adapter.name:<28} {state}")
        return 0
    if args.cases:
        for case in cases:
            print(f"{case.id}  [{', '.join(case.rules)}]")
        return 0
    per_rule: dict[str, int] = {}
    for case in cases:
        for rule in case.rules:
            per_rule[rule] = per_rule.get(rule, 0) + 1
    width = max(len(r) for r in RULES)
    print(f"{'rule':<{width}}  {'cases':>5}  groups  --  title")
    for rule, title in RULES.items():
        groups = ", ".join(RULE_GROUPS[rule])
        print(f"{rule:<{width}}  {per_rule.get(rule, 0):>5}  {groups}  --  {title}")
    print(f"{len(cases)} cases ({'full catalog' if args.full else 'default subset'}); "
          "`attnspec list --cases` lists them")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import Report
    from .terminal import matrix, summary

    reports = []
    for path in args.reports:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        try:
            reports.append(Report.load(path))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: {exc}") from None
    merged = Report.merge(reports)
    print(matrix(merged, color=_use_color("auto")))
    print(summary(merged))
    _write_outputs(merged, args)
    return merged.exit_code


def _export(args: argparse.Namespace) -> int:
    from .export import export

    count = export(args.directory, full=args.full, select=args.select, dtypes=args.dtypes,
                   seed=args.seed)
    print(f"wrote {count} cases to {args.directory} (manifest.json + cases/*.npz)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
