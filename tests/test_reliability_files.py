"""What the run writes survives what it is given to write and where (issue 14, items 2, 3
and 9): a lone surrogate in an implementation's message, a report path that is a symbolic
link, a FIFO or a process's own stdout, and a report path that cannot be written, found
before the first case instead of after the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from attnspec.conformance.atomic import check_writable, write_text

TESTS = Path(__file__).resolve().parent
TRIGGER = "score/b2.h4x2.q6.k9.d3/float32"  # hostile_impls misbehave on this case (D = 3)


def _attnspec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process with piped (strict UTF-8) stdout and stderr, as in CI."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONIOENCODING": "utf-8:strict"}
    return subprocess.run([sys.executable, "-m", "attnspec.conformance.cli", *args],
                          capture_output=True, text=True, encoding="utf-8",
                          errors="backslashreplace", cwd=cwd, env=env, timeout=300,
                          check=False)


def test_a_lone_surrogate_reaches_every_report_intact(tmp_path):
    """An exception message holding '\\udce9' (a non-UTF-8 file name) is an error outcome
    shown in the terminal, JSON, Markdown and HTML, and `attnspec report` re-reads it."""
    files = [tmp_path / n for n in ("r.json", "r.md", "r.html")]
    run = _attnspec("check", "hostile_impls:raises_surrogate", "--select", TRIGGER,
                    "--no-fingerprint", "--json", str(files[0]), "--markdown", str(files[1]),
                    "--html", str(files[2]), cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # the case errored; nothing crashed
    assert "Traceback" not in run.stderr
    assert "caf\\udce9.bin" in run.stdout
    for path in files:
        assert "caf\\udce9.bin" in path.read_text(encoding="utf-8"), path.name
    result = json.loads(files[0].read_text(encoding="utf-8"))["results"][0]
    assert result["outcome"] == "error"
    assert "caf\udce9.bin" in result["message"]  # JSON keeps the string as it was
    again = _attnspec("report", str(files[0]), "--markdown", str(tmp_path / "again.md"),
                      cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert "caf\\udce9.bin" in (tmp_path / "again.md").read_text(encoding="utf-8")


def test_a_symlink_is_followed_and_its_target_replaced(tmp_path):
    target = tmp_path / "reports" / "r.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    assert target.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "reports" / "created.json")
    write_text(dangling, "made")
    assert dangling.is_symlink()
    assert (tmp_path / "reports" / "created.json").read_text() == "made"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_streamed_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text(fifo, "streamed")
    reader.join(timeout=60)
    assert got == ["streamed"]
    assert fifo.is_fifo()
    assert not [p.name for p in tmp_path.iterdir() if p.name != "pipe"]  # no temporary left


@pytest.mark.skipif(not Path("/proc/self/fd/1").exists(), reason="no /proc on this platform")
def test_a_report_to_the_process_own_stdout(tmp_path):
    """`--json /proc/self/fd/1` (what `--json /dev/stdout` resolves to) streams the report
    into the pipe the caller reads."""
    run = _attnspec("check", "attnspec", "--select", TRIGGER, "--no-fingerprint",
                    "--json", "/proc/self/fd/1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    start = run.stdout.index('{\n "schema_version"')
    report = json.loads(run.stdout[start:])
    assert [r["outcome"] for r in report["results"]] == ["pass"]


@pytest.mark.parametrize(("option", "path", "words"), [
    ("--json", "missing-dir/r.json", "does not exist"),
    ("--markdown", ".", "is a directory"),
    ("--html", "missing-dir/deeper/r.html", "does not exist"),
])
def test_report_paths_are_checked_before_the_first_case(tmp_path, option, path, words):
    """A report path that cannot be written is a usage error (exit 2) naming the option,
    before any case runs (no progress, no summary)."""
    run = _attnspec("check", "attnspec", "--select", TRIGGER, option, path, cwd=tmp_path)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert option in run.stderr
    assert words in run.stderr
    assert "Traceback" not in run.stderr
    assert "PASSED" not in run.stdout
    assert "1/1" not in run.stdout + run.stderr


def test_check_writable_accepts_what_can_be_written(tmp_path):
    check_writable(tmp_path / "new.json", "--json")
    (tmp_path / "old.json").write_text("x")
    check_writable(tmp_path / "old.json", "--json")
    with pytest.raises(ValueError, match=r"--html: the directory .* does not exist"):
        check_writable(tmp_path / "no" / "r.html", "--html")
    with pytest.raises(ValueError, match=r"--json: .* is a directory"):
        check_writable(tmp_path, "--json")
