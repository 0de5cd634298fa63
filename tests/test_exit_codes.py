"""The exit status table of docs/conformance.md, row by row (issue 14).

0, 1, 2 and 3 are produced here by real runs (in-process, one case each); 130 and 143 need a
signal to a running process: tests/test_conformance_hostile.py
(``test_sigint_leaves_a_valid_partial_json_report``) and tests/test_reliability_signals.py
(``test_sigterm_writes_the_partial_report_and_exits_143``) produce them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attnspec.conformance import cli
from attnspec.conformance.coverage import INSUFFICIENT

DOC = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"
CASE = "dtype/b2.h4x4.q9.k9.d16/float32"


def _table() -> dict[int, str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("| status | verdict | when |")
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", text[start:].split("\n\n")[0], re.M)
    return {int(status): verdict.strip() for status, verdict in rows}


def test_the_table_names_every_status_the_cli_returns():
    assert _table() == {0: "PASSED", 1: "FAILED", 2: "usage error",
                        INSUFFICIENT: "INSUFFICIENT COVERAGE", cli.INTERRUPTED: "INTERRUPTED",
                        cli.TERMINATED: "INTERRUPTED", cli.BROKEN_PIPE: "broken pipe"}
    assert (cli.USAGE_ERROR, cli.INTERRUPTED, cli.TERMINATED, INSUFFICIENT) == (2, 130, 143, 3)


@pytest.mark.parametrize(("argv", "status"), [
    (["check", "broken_impls:correct", "--select", CASE], 0),
    (["check", "broken_impls:wrong_scale", "--select", CASE], 1),
    (["check", "no_such_module_here:fn"], 2),
    (["check", "attnspec", "--json", "/no/such/dir/r.json", "--select", CASE], 2),
    (["check", "broken_impls:correct", "--select", "no-such-case*"], INSUFFICIENT),
], ids=["pass", "fail", "unknown-target", "unwritable-report", "no-evidence"])
def test_each_status_from_a_real_run(argv, status, capsys):
    assert cli.main([*argv, "--in-process", "--no-fingerprint"]) == status
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    verdict = _table()[status]
    if status == 2:
        assert "error:" in err
    else:
        assert verdict in out


def test_a_reader_that_goes_away_stops_the_output_quietly():
    """``attnspec list --cases | head -1``: the listing stops with status 141 and no
    traceback when the reader has closed the pipe (here before the first line, so that the
    listing cannot fit in the pipe's buffer first)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "attnspec", "list", "--cases"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == cli.BROKEN_PIPE
    assert "Traceback" not in err
