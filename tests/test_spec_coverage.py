"""Every rule of docs/spec.md is cited by at least one test, and every cited ID exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULE_ROW = re.compile(r"^\|\s*((?:ATT|SMX|MHA)-(?:[A-Z]+-)?\d+)\s*\|", re.MULTILINE)
CITATION = re.compile(r"\b((?:ATT|SMX|MHA)-(?:[A-Z]+-)?\d+)\b")


def spec_rules() -> list[str]:
    return RULE_ROW.findall((ROOT / "docs" / "spec.md").read_text())


def cited_ids() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        for rule in CITATION.findall(path.read_text()):
            cited.setdefault(rule, set()).add(path.name)
    return cited


def test_spec_has_rules_with_unique_ids():
    rules = spec_rules()
    assert len(rules) >= 20, rules
    assert len(rules) == len(set(rules)), "duplicate rule IDs in docs/spec.md"


def test_every_rule_is_cited_by_a_test():
    cited = cited_ids()
    missing = [rule for rule in spec_rules() if rule not in cited]
    assert not missing, f"spec rules no test cites: {missing}"


def test_every_cited_rule_exists():
    rules = set(spec_rules())
    unknown = {rule: files for rule, files in cited_ids().items() if rule not in rules}
    assert not unknown, f"tests cite rule IDs that docs/spec.md does not define: {unknown}"
