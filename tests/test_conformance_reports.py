"""Conformance reports: the JSON schema and its validator, JSON round trips, merging, and the
Markdown, HTML and terminal renderings, all from synthetic results (no implementation runs)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from html.parser import HTMLParser

import pytest

from attnspec.conformance import html as html_report
from attnspec.conformance import markdown, terminal
from attnspec.conformance.report import Report
from attnspec.conformance.results import CaseResult, ImplementationInfo, Outcome
from attnspec.conformance.schema import load_schema, validate

EVIL = '<script>alert("x")</script> | a&b ∞ µs — ünïcödé'
FINGERPRINT = {"mask_polarity": "keep", "causal_alignment": "upper_left",
               "fully_masked_row": "zeros", "low_precision_accumulation": "float32",
               "masked_value_leak": "none", "softcap_order": "before_mask"}


def result(case_id, impl, outcome, *, rules=("ATT-SCORE-1",), dtype="float32", params=None,
           max_error=1e-7, tolerance=1e-5, ratio=0.5, message="", backend="numpy",
           device="cpu"):
    return CaseResult(
        case_id=case_id, rules=list(rules), implementation=impl, backend=backend,
        device=device, dtype=dtype, op="attention", params=dict(params or {}),
        outcome=Outcome(outcome), seed=1234, max_error=max_error, tolerance=tolerance,
        ratio=ratio, message=message, seconds=0.01)


def make_report(device="cpu"):
    """Two implementations that ran, one unavailable; every outcome, non-finite errors and a
    message full of HTML and unicode."""
    impls = [
        ImplementationInfo("attnspec[numpy]", "numpy", device, "the reference",
                           {"numpy": "2.0"}, ["mask", "lse"], dict(FINGERPRINT)),
        ImplementationInfo("torch.sdpa", "torch", device, "torch", {"torch": "2.13"}, ["mask"],
                           {**FINGERPRINT, "fully_masked_row": "nan"}),
        ImplementationInfo("flash_attn", "torch", "cuda", unavailable="no CUDA <device>"),
    ]
    results = []
    for i, magnitude in enumerate((1.0, 10.0, 1e3, 1e4)):
        params = {"magnitude": magnitude, "window": [2, None]}
        for dtype in ("float32", "float16"):
            results.append(result(f"extreme/m{magnitude:g}/{dtype}", "attnspec[numpy]", "pass",
                                  rules=("ATT-PROP-4",), dtype=dtype, params=params,
                                  max_error=10.0 ** (-7 + i)))
    results += [
        result("score/d3/float32", "attnspec[numpy]", "pass", max_error=0.0),
        result("mask/dense/float32", "attnspec[numpy]", "not-applicable", rules=("ATT-MASK-1",),
               max_error=None, tolerance=None, ratio=None, message="no mask"),
        result("score/d3/float32", "torch.sdpa", "fail", max_error=3e-3, ratio=42.0,
               message=EVIL, backend="torch"),
        result("leak/nan/float32", "torch.sdpa", "fail", rules=("ATT-LEAK-1", "ATT-MASK-1"),
               max_error=math.nan, tolerance=1e-5, ratio=math.inf, message="NaN in out",
               backend="torch"),
        result("args/bad/float32", "torch.sdpa", "error", rules=("ATT-ARG-1",), max_error=None,
               tolerance=None, ratio=None, message="RuntimeError: boom", backend="torch"),
        result("big/k1025/float32", "torch.sdpa", "timeout", rules=("ATT-SHAPE-1",),
               max_error=None, tolerance=None, ratio=None, message="timed out after 60 s",
               backend="torch"),
        result("big/k2048/float32", "torch.sdpa", "crash", rules=("ATT-SHAPE-1",),
               max_error=None, tolerance=None, ratio=None, message="worker died (SIGSEGV)",
               backend="torch"),
        result("empty/all/float32", "torch.sdpa", "xfail", rules=("ATT-EMPTY-1",),
               max_error=math.inf, message="known: NaN rows", backend="torch"),
        result("empty/one/float32", "torch.sdpa", "xpass", rules=("ATT-EMPTY-1",),
               backend="torch"),
        result("mha/basic/float64", "torch.sdpa", "pass", rules=("MHA-1", "X-CUSTOM-1"),
               dtype="float64", params={"magnitude": 3.0}, backend="torch"),
    ]
    return Report(implementations=impls, results=results, options={"seed": 0},
                  stale_xfails=["old/case/*  # fixed <upstream>"])


@pytest.fixture
def report():
    return make_report()


# -- schema -------------------------------------------------------------------------------

def test_schema_accepts_reports(report):
    data = report.to_json()
    assert validate(data) == []
    # what a reader sees: strict JSON (no NaN), parsed back
    assert validate(json.loads(json.dumps(data, allow_nan=False))) == []
    assert validate(Report().to_json()) == []


def test_schema_describes_every_field():
    """The schema lists exactly the fields to_json writes, all required, so a new field in
    Report, CaseResult or ImplementationInfo fails here until the schema knows it."""
    schema = load_schema()
    top = set(make_report().to_json())
    assert set(schema["properties"]) == top == set(schema["required"])
    fields = {f.name for f in dataclasses.fields(CaseResult)}
    assert set(schema["$defs"]["result"]["properties"]) == fields
    assert set(schema["$defs"]["result"]["required"]) == fields
    fields = {f.name for f in dataclasses.fields(ImplementationInfo)}
    assert set(schema["$defs"]["implementation"]["properties"]) == fields
    assert set(schema["$defs"]["result"]["properties"]["outcome"]["enum"]) == {
        o.value for o in Outcome}


def test_schema_rejects_broken_documents(report):
    data = report.to_json()
    data["schema_version"] = "2.0"
    data["surprise"] = 1
    data["results"][0]["outcome"] = "passed"
    data["results"][1]["max_error"] = "1e-3"
    data["results"][2]["ratio"] = math.nan
    data["results"][3]["seed"] = -1
    del data["results"][4]["case_id"]
    data["implementations"][0]["unavailable"] = 3
    problems = validate(data)
    text = "\n".join(problems)
    assert "$.schema_version: '2.0' does not match the pattern '^1\\\\.'" in text
    assert "$: unexpected property 'surprise'" in text
    assert "$.results[0].outcome: 'passed' is not one of 'pass', 'fail'" in text
    assert "$.results[1].max_error: expected number or null, got string '1e-3'" in text
    assert "$.results[2].ratio: nan is not a finite number" in text
    assert "$.results[3].seed: -1 is less than the minimum 0" in text
    assert "$.results[4]: missing required property 'case_id'" in text
    assert "$.implementations[0].unavailable: expected string or null, got integer 3" in text
    assert len(problems) == 8
    assert validate([]) == ["$: expected object, got array []"]


def test_validator_refuses_unsupported_keywords():
    with pytest.raises(ValueError, match="unsupported keywords \\['oneOf'\\]"):
        validate({}, {"oneOf": [{"type": "object"}]})
    with pytest.raises(ValueError, match="only local references"):
        validate({}, {"$ref": "https://example.invalid/schema.json"})


# -- JSON round trip and merge ----------------------------------------------------------------

def test_json_round_trip(report, tmp_path):
    path = tmp_path / "report.json"
    report.save(path)
    loaded = Report.load(path)
    assert loaded.to_json() == report.to_json()
    assert validate(json.loads(path.read_text())) == []
    nan = next(r for r in loaded.results if r.case_id == "leak/nan/float32")
    assert nan.max_error is None
    assert nan.ratio is None  # non-finite becomes null
    assert loaded.exit_code == report.exit_code == 1
    assert loaded.counts() == report.counts()
    assert loaded.by_rule() == report.by_rule()


def test_merge_keeps_runs_apart():
    cpu, gpu = make_report("cpu"), make_report("cuda:0")
    merged = Report.merge([cpu, gpu])
    assert validate(merged.to_json()) == []
    assert len(merged.results) == len(cpu.results) + len(gpu.results)
    names = [i.name for i in merged.implementations]
    assert "attnspec[numpy] (numpy, cpu)" in names
    assert "attnspec[numpy] (numpy, cuda:0)" in names
    assert "flash_attn" in names  # same backend and device in both runs: one name
    counts = merged.counts()
    assert counts["torch.sdpa (torch, cuda:0)"] == cpu.counts()["torch.sdpa"]
    assert merged.stale_xfails == cpu.stale_xfails * 2
    assert merged.options["merged_from"] == [cpu.created, gpu.created]
    assert cpu.implementations[0].name == "attnspec[numpy]"  # inputs untouched
    assert "attnspec[numpy] (numpy, cpu)" in markdown.to_markdown(merged)


# -- Markdown -----------------------------------------------------------------------------

def test_markdown(report):
    text = markdown.to_markdown(report)
    # the xpass is a failure too (strict): the expected failure it contradicts is stale
    assert text.startswith("## attnspec conformance: ❌ FAILED: 6 of 17 applicable cases "
                           "failed, 1 of them expected failures that passed")
    # counts table row: pass fail error timeout crash n/a xfail xpass
    assert "| `torch.sdpa` | torch | cpu | 1 | 2 | 1 | 1 | 1 | 0 | 1 | 1 |" in text
    assert "| `flash_attn` | torch | cuda | unavailable: no CUDA &lt;device&gt; |" in text
    # matrix: worst outcome per rule, custom rule IDs kept
    assert "| rule | `attnspec[numpy]` | `torch.sdpa` |\n" in text  # flash_attn did not run
    assert "| **ATT-SCORE-1** s = (q @ k^T) * scale, default 1/sqrt(Dk) | ✅ | ❌ |" in text
    assert "| **ATT-MASK-1** bool mask, True = may attend | ➖ | ❌ |" in text
    assert "| **ATT-EMPTY-1** a fully masked row gives out 0, lse -inf, weights 0 |  | ⚠️ |" \
        in text
    assert "| **ATT-PROP-4** a constant added to a row's logits changes nothing | ✅ |  |" in text
    assert "**X-CUSTOM-1**" in text
    # failures: escaped message, numbers, non-finite shown as such
    assert "<script>" not in text
    assert ("| `score/d3/float32` | `torch.sdpa` | fail | &lt;script&gt;alert(\"x\")"
            "&lt;/script&gt; \\| a&amp;b ∞ µs — ünïcödé | 0.003 | 1e-05 | 42 |") in text
    assert "| `leak/nan/float32` | `torch.sdpa` | fail | NaN in out | nan | 1e-05 | inf |" in text
    assert "### Behaviour fingerprint" in text
    assert "| `torch.sdpa` | keep | upper_left | nan | float32 | none | before_mask |" in text
    # not a code span: it holds "<", which a code span would show as it is
    assert "- old/case/* # fixed &lt;upstream&gt;" in text
    assert "attnspec " in text.splitlines()[-1]
    assert "Python" in text.splitlines()[-1]


def test_markdown_caps_failures_and_passes():
    many = Report(results=[result(f"c/{i}/float32", "impl", "fail", message="m")
                           for i in range(markdown.MAX_FAILURES + 7)])
    text = markdown.to_markdown(many)
    assert "... and 7 more" in text
    clean = Report(results=[result("c/1/float32", "impl", "pass")])
    text = markdown.to_markdown(clean)
    assert text.startswith("## attnspec conformance: ✅ PASSED")
    assert "Failures" not in text
    # nothing graded is never green
    assert markdown.to_markdown(Report()).startswith(
        "## attnspec conformance: ⚠️ INSUFFICIENT COVERAGE")


# -- HTML ---------------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link"}


class _Checker(HTMLParser):
    """Records tags and fails on mis-nested ones (html.parser itself is lenient)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.text, self.attrs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag):
        assert self.stack[-1:] == [tag], f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text):
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.stack == []
    return checker


def test_html(report):
    page = html_report.to_html(report)
    checker = parse(page)
    assert checker.tags.count("svg") == 2
    assert "script" not in checker.tags  # the message's <script> stays text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    text = "".join(checker.text)
    assert EVIL in text
    assert "no CUDA <device>" in text
    assert "fixed <upstream>" in text
    # self-contained: nothing to fetch
    assert not [v for k, v in checker.attrs if k in ("src", "href")]
    assert "@import" not in page
    assert "url(" not in page
    # the plot has a point per measured case, with its numbers in the tooltip
    assert "extreme/m10000/float16 · attnspec[numpy]" in text
    assert "rule matrix" in text.lower()
    assert "ATT-PROP-4 · attnspec[numpy]: pass 8" in text
    assert "logit magnitude" in text
    assert "non-finite" in text
    for key in ("mask_polarity", "softcap_order"):
        assert key in text


def test_html_edge_cases():
    checker = parse(html_report.to_html(Report()))
    assert checker.tags.count("svg") == 2
    only_errors = Report(results=[result("a/b/float32", "x", "error", max_error=None)])
    text = "".join(parse(html_report.to_html(only_errors)).text)
    assert "no measured errors" in text


# -- terminal -----------------------------------------------------------------------------

def test_terminal_matrix(report):
    plain = terminal.matrix(report, color=False, width=200)
    assert "\x1b[" not in plain
    lines = plain.splitlines()
    assert lines[0].split() == ["attnspec[numpy]", "torch.sdpa"]  # flash_attn did not run
    row = next(line for line in lines if line.startswith("ATT-SCORE-1"))
    assert row.split() == ["ATT-SCORE-1", "✓", "✗"]
    row = next(line for line in lines if line.startswith("ATT-SHAPE-1"))
    assert row.split() == ["ATT-SHAPE-1", "C"]
    assert "X-CUSTOM-1" in plain
    coloured = terminal.matrix(report, color=True, width=200)
    assert "\x1b[32m" in coloured
    assert "✓" in coloured
    assert "\x1b[31m" in coloured
    narrow = terminal.matrix(report, color=False, width=30, unicode=False)
    assert narrow.splitlines()[0].split() == ["1", "2"]
    assert "  2: torch.sdpa" in narrow
    assert "✓" not in narrow
    assert terminal.matrix(Report(), color=True) == "no results"


def test_terminal_summary(report):
    text = terminal.summary(report, max_failures=2)
    assert "\x1b[" not in text
    assert "torch.sdpa" in text
    assert "unavailable: no CUDA <device>" in text
    assert "... and 4 more" in text
    assert "fail score/d3/float32 (torch.sdpa) [error 0.003 / tolerance 1e-05, ratio 42]" in text
    assert "old/case/*" in text
    assert "  torch.sdpa: mask_polarity=keep" in text
    assert text.splitlines()[-1].startswith("FAILED: 6 of")
    assert "\x1b[1m\x1b[31mFAILED" in terminal.summary(report, color=True)
    with pytest.raises(ValueError, match="max_failures"):
        terminal.summary(report, max_failures=-1)


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def test_progress_on_a_tty(report, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    stream = _Stream(tty=True)
    with terminal.Progress(len(report.results), stream=stream) as progress:
        for r in report.results:
            progress.update(r)
            assert r.case_id in stream.getvalue().rsplit("\r", 1)[-1]
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert out.endswith("\n")
    assert out.count("\r") == len(report.results) + 1
    last = out.rsplit("\r", 1)[-1]
    assert last.startswith("[########################] 18/18 pass 10 fail 2 error 1")
    progress.close()  # twice is fine
    assert stream.getvalue() == out
    # a narrow terminal cuts the line rather than wrapping it onto a new one
    monkeypatch.setenv("COLUMNS", "30")
    stream = _Stream(tty=True)
    progress = terminal.Progress(2, stream=stream)
    progress.update(report.results[0])
    assert len(stream.getvalue()) == 1 + 29


def test_progress_piped():
    stream = _Stream(tty=False)
    progress = terminal.Progress(100, stream=stream)
    for i in range(100):
        # the runner's callback form: progress(done, total, result)
        progress(i + 1, 100, result(f"c/{i}/float32", "impl", "pass" if i % 10 else "fail"))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 10
    assert lines[0] == "10/100 pass 9 fail 1"
    assert lines[-1] == "100/100 pass 90 fail 10"
    stream = _Stream(tty=False)
    terminal.Progress(0, stream=stream).close()
    assert stream.getvalue() == "0/0\n"
    with pytest.raises(ValueError, match="total must be"):
        terminal.Progress(-1)


# -- hostile strings: escaping in every format ------------------------------------------------

#: Strings an implementation controls (its name, exception texts, fingerprint notes, case
#: parameters) made to break a report: HTML and attribute injection, Markdown tables, code
#: spans, links and images, terminal escapes (colours, clear screen, window title, OSC 8
#: hyperlinks), newlines, bidirectional overrides.
HOSTILE = [
    "<script>alert(1)</script>",
    "a|b",
    "line\nbreak",
    "`code`",
    "[x](javascript:alert(1))",
    "![pixel](http://tracker.invalid/p.png)",
    '<img src=x onerror="alert(1)">',
    "\" onmouseover=\"alert(1)' x='",
    "back\\|slash\\",
    "<!-- comment",
    "\x1b[31mred\x1b[0m\x1b[2J\x1b]0;title\x07",
    "\x1b]8;;http://evil.invalid\x07link\x1b]8;;\x07",
    "\u202eevil\u202c \x00nul \x7fdel\rcarriage",
    "&lt;already&gt; &amp;",
]
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span",
                "table", "tr", "th", "td", "code", "svg", "text", "g", "rect", "circle",
                "polygon", "line", "ul", "li", "br", "strong"}
ALLOWED_ATTRIBUTES = {"lang", "charset", "class", "xmlns", "role", "width", "height",
                      "viewbox", "x", "y", "transform", "text-anchor", "fill", "stroke", "rx",
                      "cx", "cy", "r", "points", "stroke-width", "x1", "x2", "y1", "y2",
                      "colspan"}


def hostile_report():
    """Every string of HOSTILE in every place a report shows an implementation's words."""
    impls, results = [], []
    for i, text in enumerate(HOSTILE):
        name = f"impl{i} {text}"
        impls.append(ImplementationInfo(name, f"backend {text}", f"dev {text}", text,
                                        {text: text}, [text], {f"note {text}": text,
                                                               "mask_polarity": text}))
        params = {"magnitude": 10.0 ** (i % 4), "note": text, text: [text]}
        impls[-1].deviations = [{"reason": text, "selection": text, "fingerprint": text,
                                 "issue": text}]
        impls[-1].ops = ["attention"]
        results += [
            result(f"case/{text}/float32", name, "fail", rules=("ATT-SCORE-1", f"R-{text}"),
                   params=params, message=f"ValueError: {text}"),
            result("score/d3/float32", name, "error", max_error=None, message=text),
            result(f"mask/{i}/float16", name, "pass", rules=("ATT-MASK-1",), dtype="float16",
                   params=params),
            result(f"lse/{i}/float16", name, "xfail", rules=("ATT-LSE-1",),
                   message=f"declared deviation: {text}"),
            result(f"na/{i}/float16", name, "not-applicable", rules=("ATT-LSE-1",),
                   message=text),
        ]
        results[-5].repro = text
        results[-3].not_graded = {"ATT-MASK-1": text}
        results[-1].missing = [text]
    impls.append(ImplementationInfo("gone " + HOSTILE[0], "torch", "cuda",
                                    unavailable=" ".join(HOSTILE)))
    return Report(implementations=impls, results=results,
                  options={"notes": HOSTILE, "select": HOSTILE}, stale_xfails=HOSTILE)


def test_html_escapes_hostile_strings():
    page = html_report.to_html(hostile_report())
    checker = parse(page)  # well nested: no tag of a string closed or opened one
    assert set(checker.tags) <= ALLOWED_TAGS, set(checker.tags) - ALLOWED_TAGS
    names = {name for name, _ in checker.attrs}
    assert names <= ALLOWED_ATTRIBUTES, names - ALLOWED_ATTRIBUTES  # no on*= handler
    assert not [v for _, v in checker.attrs if v and "javascript" in v]
    lowered = page.lower()
    for raw in ("<script", "<img", "<!--", "\x1b", "\x07", "\x00", "\u202e"):
        assert raw not in lowered, repr(raw)
    text = "".join(checker.text)
    # what was said is shown as text (less its control characters)
    for shown in ("<script>alert(1)</script>", '<img src=x onerror="alert(1)">',
                  "[x](javascript:alert(1))", "a|b", "`code`", "back\\|slash\\",
                  "&lt;already&gt; &amp;", "red", "evil nul delcarriage"):
        assert shown in text.replace("\n", ""), shown


def _cells_strict(line):
    """A GFM table row's cells: a backslash escapes the next character."""
    cells, current, escaped = [], "", False
    for ch in line.strip()[1:-1]:
        if escaped:
            current, escaped = current + ch, False
        elif ch == "\\":
            current, escaped = current + ch, True
        elif ch == "|":
            cells.append(current)
            current = ""
        else:
            current += ch
    return [*cells, current]


def _cells_gfm(line):
    """As cmark-gfm splits a row: a pipe right after a backslash is part of the cell."""
    return re.split(r"(?<!\\)\|", line.strip()[1:-1])


def test_markdown_escapes_hostile_strings():
    text = markdown.to_markdown(hostile_report())
    lowered = text.lower()
    for raw in ("<script", "<img", "<!--", "\x1b", "\x07", "\x00", "\u202e", "\r"):
        assert raw not in lowered, repr(raw)
    lines = text.splitlines()
    assert not [ln for ln in lines if ln.startswith("break")]  # newlines never split a row
    tables = 0
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            tables += 1
            width = len(_cells_strict(line))
            assert lines[i + 1].count("|") == width + 1  # the |---|---| line
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                assert len(_cells_strict(lines[j])) == width, lines[j]
                assert len(_cells_gfm(lines[j])) == width, lines[j]
                j += 1
    assert tables == 6  # outcomes, rules, coverage, deviations, failures, fingerprints
    # outside code spans: no link or image syntax, no stray backtick
    prose = re.sub(r"(?<!\\)`[^`]*`", "", text)
    assert not re.search(r"(?<!\\)\]\(", prose)
    assert not re.search(r"(?<!\\)`", prose)
    assert "\\[x\\](javascript:alert(1))" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_terminal_strips_escapes_from_hostile_strings():
    report = hostile_report()
    plain = terminal.summary(report, max_failures=100) + terminal.matrix(report, color=False)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", plain)
    assert not [ln for ln in plain.splitlines() if ln.startswith("break")]
    assert "impl10 red" in plain
    assert "impl0 <script>alert(1)</script>" in plain  # a terminal shows text as it is
    coloured = terminal.summary(report, color=True) + terminal.matrix(report, color=True)
    # the only escape sequences left are the report's own colours
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured).count("\x1b") == 0


def test_progress_line_strips_escapes():
    stream = _Stream(tty=True)
    progress = terminal.Progress(1, stream=stream)
    progress.update(result("c/\x1b[2J\x1b]0;x\x07/float32", "impl", "pass"))
    assert "\x1b" not in stream.getvalue()


def test_status_of_partial_and_old_reports(report, tmp_path):
    """An interrupted report says so in every format and never passes; merging one with a
    complete report gives an interrupted one; a schema 1.0 report (no status) is complete."""
    partial = dataclasses.replace(report, status="interrupted",
                                  results=[r for r in report.results if r.outcome.ok])
    assert partial.interrupted
    assert partial.exit_code == 1
    assert validate(partial.to_json()) == []
    assert markdown.to_markdown(partial).startswith("## attnspec conformance: ❌ INTERRUPTED")
    assert "INTERRUPTED: partial report" in html_report.to_html(partial)
    assert terminal.summary(partial).splitlines()[-1].startswith("INTERRUPTED")
    assert Report.merge([report, partial]).status == "interrupted"
    assert Report.merge([report, report]).status == "complete"
    old = report.to_json()
    old["schema_version"] = "1.0"
    del old["status"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert Report.load(path).status == "complete"
    bad = report.to_json()
    bad["status"] = "half-done"
    assert validate(bad) == ["$.status: 'half-done' is not one of 'complete', 'interrupted'"]
    path.write_text('{"schema_version": "1.1", "results": [')  # half of a report
    with pytest.raises(ValueError, match="not a JSON report"):
        Report.load(path)
