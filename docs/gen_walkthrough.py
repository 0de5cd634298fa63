"""Regenerate the console output in docs/walkthrough.md from real runs.

The walk-through shows what `attnspec check` prints for ``examples/buggy_kernel.py`` and
``examples/fixed_kernel.py``, and what `attnspec repro` prints for one failure. Each block
sits between ``<!-- walkthrough: NAME -->`` and ``<!-- end walkthrough -->``; this script
runs its command from the repository root and writes the output in. ``tests/
test_examples_worked.py`` runs the same commands and compares (numbers aside, which the
machine's BLAS may round differently in the last digit), so the page cannot drift from
what the suite says.

    python docs/gen_walkthrough.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "walkthrough.md"
BUGGY = "examples.buggy_kernel:attention"
FIXED = "examples.fixed_kernel:attention"
#: The failure the walk-through reproduces: the bug nobody planted.
REPRO_CASE = "extreme/b2.h4x4.q9.k9.d64.logits=near_max/float16"

#: block name -> (the command as the page shows it, the arguments run, keep the matrix)
BLOCKS: dict[str, tuple[str, list[str], bool]] = {
    "buggy": (f"PYTHONPATH=. attnspec check {BUGGY}", ["check", BUGGY], True),
    "repro": (f"PYTHONPATH=. attnspec repro '{REPRO_CASE}' {BUGGY} --run",
              ["repro", REPRO_CASE, BUGGY, "--run"], True),
    "fixed": (f"PYTHONPATH=. attnspec check {FIXED}", ["check", FIXED], False),
}
_BLOCK = re.compile(r"(<!-- walkthrough: (\w+) -->\n)(.*?)(<!-- end walkthrough -->)", re.S)
_NUMBER = re.compile(r"-?\d+\.\d+(?:e[+-]?\d+)?|\d+e[+-]?\d+")


def run(name: str) -> str:
    """The console block of ``name``: the command and what it printed (stdout)."""
    shown, args, whole = BLOCKS[name]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", "NO_COLOR": "1"}
    if args[0] == "check":
        args = [*args, "--color", "never"]
    proc = subprocess.run([sys.executable, "-m", "attnspec.conformance.cli", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    out = proc.stdout.rstrip("\n")
    if not whole:
        out = "...\n" + out[out.index("\nimplementation ") + 1:]
    return f"```console\n$ {shown}\n{out}\n```\n\nExit status {proc.returncode}.\n"


def blocks(text: str) -> dict[str, str]:
    """name -> block as the page has it."""
    return {m.group(2): m.group(3) for m in _BLOCK.finditer(text)}


def without_numbers(text: str) -> str:
    """``text`` with every decimal number replaced by ``#`` (for comparisons that must not
    depend on the last digit of a BLAS)."""
    return _NUMBER.sub("#", text)


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    missing = set(BLOCKS) - set(blocks(text))
    if missing:
        print(f"{PAGE}: no block for {sorted(missing)}", file=sys.stderr)
        return 2
    new = _BLOCK.sub(lambda m: m.group(1) + run(m.group(2)) + m.group(4), text)
    PAGE.write_text(new, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
