"""The ``attnspec`` command: check, list, report, export.

Exit status: 0 when every applicable case passed (expected failures allowed) and every
implementation was graded on enough cases for every rule it claims; 1 when a case failed or
errored, or an expected failure passed; 2 for a usage error (unknown target, bad option,
unreadable file); 3 when nothing failed but the coverage is insufficient for a verdict
(``attnspec.conformance.coverage``); 130 when the run was interrupted (Ctrl-C; the reports
asked for are written with the results gathered so far, marked ``"status": "interrupted"``),
143 when it was stopped by SIGTERM (the same partial reports).
``attnspec repro`` exits 1 when the case it reproduces fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line imports what a command needs, when it runs
    from .report import Report

__all__ = ["main"]

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
TERMINATED = 143  # 128 + SIGTERM: stopped by `timeout`, a CI cancel, `docker stop`
BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away (`| head`)


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
    check.add_argument("--backend", default=None,
                       help="backend whose arrays a module:callable takes (default: numpy; "
                            "built-in adapters run on their own)")
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
    check.add_argument("--no-jax-x64", action="store_true",
                       help="leave jax_enable_x64 off in the workers of JAX implementations "
                            "(their float64 cases are then not applicable)")
    check.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    lst = sub.add_parser("list", help="print rules, cases and adapters")
    lst.add_argument("--full", action="store_true", help="the whole catalog")
    lst.add_argument("--cases", action="store_true", help="list every case ID")
    lst.add_argument("--adapters", action="store_true", help="list built-in adapters")
    lst.add_argument("--features", action="store_true",
                     help="list the features a capabilities declaration may name")
    lst.add_argument("--select", action="append", metavar="PATTERN")

    repro = sub.add_parser(
        "repro", help="print a standalone script that reproduces one case",
        description="Print a Python script that rebuilds CASE_ID's inputs from its seed, "
                    "calls TARGET as the suite does, and shows what was expected and what "
                    "came back (exit 1 when it fails). --run runs it here instead.")
    repro.add_argument("case_id", metavar="CASE_ID")
    repro.add_argument("target", metavar="TARGET")
    repro.add_argument("--backend", default=None)
    repro.add_argument("--device", default=None)
    repro.add_argument("--capabilities", type=Path)
    repro.add_argument("--seed", type=int, default=0)
    repro.add_argument("--op", default=None, help="with --params: the case's operation")
    repro.add_argument("--params", default=None, metavar="JSON",
                       help="the parameters of a case outside the catalog (--explore)")
    repro.add_argument("--run", action="store_true", help="run the case here and print the "
                                                          "evidence instead of the script")
    repro.add_argument("-o", "--output", type=Path, help="write the script here")

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
    for stream in (sys.stdout, sys.stderr):
        # A lone surrogate in an implementation's message prints as \udcff instead of
        # raising UnicodeEncodeError halfway through the summary.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
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
        return {"check": _check, "list": _list, "report": _report, "export": _export,
                "repro": _repro}[args.command](args)
    except UsageError as exc:
        from .views import plain  # the message may quote an implementation's own words

        print(f"attnspec {args.command}: error: {plain(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"attnspec {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`attnspec list | head`): stop quietly, as a shell tool does,
        # instead of a traceback; stdout goes to devnull so the exit's flush cannot raise.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE


def _use_color(choice: str) -> bool:
    if choice == "auto":
        return sys.stdout.isatty()
    return choice == "always"


def _check_output_paths(args: argparse.Namespace, *options: str) -> None:
    """Every report path asked for must be writable before the first case runs: a typo
    fails at once with a usage error, not after the run with a traceback."""
    from .atomic import check_writable

    for option in options:
        path = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if path is not None:
            try:
                check_writable(path, option)
            except ValueError as exc:
                raise UsageError(str(exc)) from None


def _write_outputs(report: Report, args: argparse.Namespace) -> None:
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


def _write_partial(report: Report, args: argparse.Namespace) -> None:
    """The reports of an interrupted run; a second Ctrl-C or SIGTERM waits until they are
    written (a fraction of a second) rather than leave the run with no report at all."""
    import signal

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: nothing to change
            previous[signum] = signal.signal(signum, signal.SIG_IGN)
    try:
        _write_outputs(report, args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check(args: argparse.Namespace) -> int:
    from . import api
    from .signals import Terminated
    from .terminal import Progress, matrix, summary

    if args.explore < 0:
        raise UsageError("--explore must be >= 0")
    _check_output_paths(args, "--json", "--markdown", "--html")
    if args.xfail_file and not args.xfail_file.is_file():
        raise UsageError(f"--xfail-file {args.xfail_file}: no such file")
    if args.outputs is not None:
        from .export import grade_outputs

        if not args.outputs.is_dir():
            raise UsageError(f"--outputs {args.outputs}: no such directory")
        try:
            report = grade_outputs(args.outputs, full=args.full, select=args.select,
                                   dtypes=args.dtypes, seed=args.seed,
                                   xfail_file=args.xfail_file)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
    else:
        progress = Progress(0)
        try:
            report = api.run(
                args.targets or None, backend=args.backend, device=args.device,
                dtypes=args.dtypes, select=args.select, xfail_file=args.xfail_file,
                seed=args.seed, timeout=args.timeout, full=args.full, progress=progress,
                isolate=not args.in_process, fingerprint=not args.no_fingerprint,
                capabilities=args.capabilities, memory_limit=args.memory_limit,
                jax_x64=not args.no_jax_x64,
            )
            # Unavailable implementations' cases were never run: the last line counts
            # what the report holds (e.g. 370/370, not 370/740).
            progress.total = len(report.results)
        except api.RunInterrupted as exc:
            progress.close()
            report = exc.report
            _write_partial(report, args)
            print(summary(report))
            return TERMINATED if isinstance(exc.__cause__, Terminated) else INTERRUPTED
        except (ValueError, TypeError, ImportError) as exc:
            raise UsageError(str(exc)) from None
        finally:
            progress.close()
    if args.explore:
        from .report import INTERRUPTED as STOPPED
        from .signals import terminate_as_interrupt

        try:
            with terminate_as_interrupt():
                _explore(report, args)
        except KeyboardInterrupt as exc:  # the catalog's results stand: write them
            report.status = STOPPED
            report.options.setdefault("notes", []).append("interrupted during --explore")
            _write_partial(report, args)
            print(summary(report))
            return TERMINATED if isinstance(exc, Terminated) else INTERRUPTED
    color = _use_color(args.color)
    print(matrix(report, color=color))
    print(summary(report))
    _write_outputs(report, args)
    return report.exit_code


def _explore(report: Report, args: argparse.Namespace) -> None:
    """Run ``--explore`` on each target, in a worker as the catalog's cases ran (in-process
    with ``--in-process``); a failure it found -- a crash or a timeout too -- joins the
    report's results, and the reports are written after it as for any run."""
    from .explore import explore

    notes = report.options.setdefault("notes", [])
    for target in args.targets or []:
        try:
            found = explore(target, examples=args.explore, backend=args.backend,
                            device=args.device, dtypes=args.dtypes,
                            capabilities=args.capabilities, seed=args.seed,
                            timeout=args.timeout, isolate=not args.in_process,
                            memory_limit=args.memory_limit, jax_x64=not args.no_jax_x64)
        except (ValueError, TypeError, ImportError) as exc:
            raise UsageError(str(exc)) from None
        if found.note:
            notes.append(f"{target}: {found.note}")
        if found.result is not None:
            found.result.implementation = next(
                (i.name for i in report.implementations if i.name == target), target)
            report.results.append(found.result)
            notes.append(f"{target}: --explore found a failing configuration in "
                         f"{found.examples} tries: {found.result.case_id}")
        else:
            notes.append(f"{target}: --explore found no failure in {found.examples} random "
                         "configurations")


def _list(args: argparse.Namespace) -> int:
    from .catalog import RULE_GROUPS, catalog, select
    from .rules import RULES

    if args.features:
        from .features import BEHAVIOURS, FEATURES, OPT_IN

        for name, text in FEATURES.items():
            kind = ("behaviour (always graded)" if name in BEHAVIOURS
                    else "opt-in" if name in OPT_IN else "capability")
            print(f"{name:<20} {kind:<26} {text}")
        return 0
    cases = list(select(catalog(full=args.full), args.select))
    if args.adapters:
        from .adapters import ON_REQUEST, builtin_adapters

        for adapter in builtin_adapters(on_request=True):
            reason = adapter.unavailable()
            state = "available" if reason is None else f"unavailable: {reason}"
            if adapter.name in ON_REQUEST:
                state += " (graded when named)"
            print(f"{adapter.name:<30} {state}")
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

    _check_output_paths(args, "--json", "--markdown", "--html")
    reports = []
    for path in args.reports:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        try:
            reports.append(Report.load(path))  # validated: a bad field is a ValueError here,
        except (ValueError, KeyError, TypeError) as exc:  # not a traceback once printing began
            message = str(exc)
            raise UsageError(message if message.startswith(str(path)) else f"{path}: {message}"
                             ) from None
    merged = Report.merge(reports)
    print(matrix(merged, color=_use_color("auto")))
    print(summary(merged))
    _write_outputs(merged, args)
    return merged.exit_code


def _repro(args: argparse.Namespace) -> int:
    import json

    from .repro import find_case, reproducer, run_case

    _check_output_paths(args, "--output")
    params = None
    if args.params is not None:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--params: not JSON ({exc})") from None
        if not isinstance(params, dict):
            raise UsageError(f"--params: expected a JSON object, got {args.params!r}")
    try:
        case = find_case(args.case_id, seed=args.seed, op=args.op, params=params)
        if args.run:
            return run_case(case, args.target, backend=args.backend, device=args.device,
                            capabilities=args.capabilities)
    except (ValueError, TypeError, ImportError) as exc:
        raise UsageError(str(exc)) from None
    script = reproducer(case, args.target, backend=args.backend, device=args.device,
                        capabilities=args.capabilities)
    if args.output is not None:
        from .atomic import write_text

        write_text(args.output, script)
        print(f"wrote {args.output}")
    else:
        print(script, end="")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export

    count = export(args.directory, full=args.full, select=args.select, dtypes=args.dtypes,
                   seed=args.seed)
    print(f"wrote {count} cases to {args.directory} (manifest.json + cases/*.npz)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
