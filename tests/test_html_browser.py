"""The HTML report in a real browser: headless Chromium, driven over the DevTools protocol.

A report from a real run (attnspec's NumPy backend, a wrongly scaled kernel and one that
returns NaN for empty rows) and a crowded one (26 implementations with long names) are
opened in headless Chromium, which is told what to do over ``--remote-debugging-pipe``
(JSON messages on file descriptors 3 and 4: the standard library is enough). The test asks
the page, after it loaded and laid itself out, whether it raised a script error or fetched
anything, whether the matrix, the figure and the failure list are there, whether each
implementation has one colour and marker of its own, whether names are whole and whether the
plots and tables fit the window; then it takes a full-page screenshot, written to
``$ATTNSPEC_SCREENSHOT_DIR`` (CI keeps it as an artifact) or to the test's temporary
directory. Skipped where no Chromium or Chrome is installed (``apt install chromium``); the
last tests check the same page without a browser.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import math
import os
import re
import select
import shutil
import signal
import time
from itertools import pairwise
from pathlib import Path

import pytest

from attnspec.conformance import run, views
from attnspec.conformance.html import to_html
from attnspec.conformance.html_measure import Measures
from attnspec.conformance.html_series import style
from attnspec.conformance.report import Report
from attnspec.conformance.results import CaseResult, ImplementationInfo, Outcome

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _browser() -> str | None:
    """``$ATTNSPEC_CHROMIUM``, else the first Chromium or Chrome on the PATH."""
    named = os.environ.get("ATTNSPEC_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


BROWSER = _browser()


def needs_browser(test):
    """Skipped, with the reason, where there is no browser to drive."""
    test = pytest.mark.skipif(not hasattr(os, "posix_spawn"),
                              reason="the DevTools pipe needs POSIX file descriptors 3 "
                                     "and 4")(test)
    return pytest.mark.skipif(BROWSER is None,
                              reason="chromium: not installed (apt install chromium)")(test)


class Chromium:
    """Headless Chromium and a DevTools protocol session on one page (flat sessions over
    ``--remote-debugging-pipe``: requests on fd 3, answers and events on fd 4, each message
    JSON ended by a NUL byte)."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._log = profile / "chromium.log"
        commands_r, self._commands = _high_pipe()
        self._answers, answers_w = _high_pipe()
        args = [binary, "--headless", "--disable-gpu", "--no-sandbox",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", "--mute-audio", "about:blank"]
        # Chromium reads the protocol on fd 3 and writes on fd 4 (dup2 leaves them open
        # across exec; every other descriptor of this process is close-on-exec).
        self._pid = os.posix_spawn(binary, args, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, str(self._log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             0o644),
            (os.POSIX_SPAWN_DUP2, commands_r, 3),
            (os.POSIX_SPAWN_DUP2, answers_w, 4),
        ])
        os.close(commands_r)
        os.close(answers_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"}, page=False)
        self._session = self.send("Target.attachToTarget", {
            "targetId": target["targetId"], "flatten": True}, page=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                log = self._log.read_text(errors="replace") if self._log.exists() else ""
                raise RuntimeError(f"Chromium closed the DevTools pipe: {log[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, *, page: bool = True) -> dict:
        self._next_id += 1
        request: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            request["sessionId"] = self._session
        os.write(self._commands, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            found = [e for e in self.events if e.get("method") == event]
            if found:
                self.events.remove(found[0])
                return found[0]
            self.events.append(self._read(deadline))

    def open(self, url: str, width: int = 1280) -> None:
        self.resize(width)
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def resize(self, width: int, height: int = 900) -> None:
        self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def evaluate(self, expression: str) -> object:
        answer = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True})
        if "exceptionDetails" in answer:
            raise RuntimeError(f"evaluating the probe failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def problems(self) -> list[str]:
        """Script errors, console errors and error log entries since the page was opened."""
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description")
                             or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                                 "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", "")))
                                      for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", ""))
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, width: int = 1280) -> bytes:
        """The whole page, as tall as it is, as a PNG."""
        self.resize(width)
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        height = min(math.ceil(size["height"]), 16000)
        self.resize(width, height)
        data = base64.b64decode(self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close", page=False)
        deadline = time.monotonic() + 10
        while not os.waitpid(self._pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
                break
            time.sleep(0.05)
        for fd in (self._commands, self._answers):
            os.close(fd)


def _high_pipe() -> tuple[int, int]:
    """A pipe on descriptors above 4 (close-on-exec), so that putting its ends on 3 and 4
    in the child cannot overwrite one with the other."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


#: What the page is asked once it has loaded (an object, returned by value).
PROBE = r"""
(() => {
  const colourOf = el => {
    const s = getComputedStyle(el);
    return s.fill !== 'rgb(255, 255, 255)' ? s.fill : s.stroke;
  };
  const shapeOf = el => {
    if (el.tagName === 'circle') return 'circle';
    const b = el.getBBox();
    const at = v => String(Math.round(v * 10) / 10);  // -0 reads as 0
    return Array.from(el.points).map(p => at((p.x - b.x - b.width / 2) / b.width) + ',' +
                                          at((p.y - b.y - b.height / 2) / b.height)).join(' ');
  };
  const series = el => Array.from(el.classList).find(c => /^s\d+$/.test(c));
  const figure = document.querySelector('svg.figure');
  const marks = {};
  for (const g of (figure ? figure.querySelectorAll('g.pt') : [])) {
    const mk = g.querySelector('.mk');
    (marks[series(g)] = marks[series(g)] || new Set()).add(colourOf(mk) + ' | ' + shapeOf(mk));
  }
  const key = Array.from(document.querySelectorAll('ul.key li')).map(li => {
    const code = li.querySelector('code'), sw = li.querySelector('.sw');
    const box = li.getBoundingClientRect();
    return {series: series(li), name: code.textContent,
            whole: code.scrollWidth <= code.clientWidth + 1 && box.right <= innerWidth,
            colour: getComputedStyle(sw).backgroundColor,
            clip: getComputedStyle(sw).clipPath, width: sw.getBoundingClientRect().width};
  });
  const right = el => el ? el.getBoundingClientRect().right : 0;
  const fingerprint = document.querySelector('table.fingerprint');
  const failures = document.querySelector('table.failures');
  const ticks = figure ? Array.from(figure.querySelectorAll('text.tick'))
    .map(t => t.textContent).filter(t => /^[0-9.e+-]+$/.test(t)).map(Number) : [];
  return {
    headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
    svgs: document.querySelectorAll('svg').length,
    scripts: document.querySelectorAll('script').length,
    matrixCells: document.querySelectorAll('svg.matrix rect').length,
    matrixTitle: (document.querySelector('svg.matrix > title') || {}).textContent,
    matrixRight: right(document.querySelector('svg.matrix')),
    figureRight: right(figure), figureWidth: figure ? figure.getBoundingClientRect().width : 0,
    figureText: figure ? figure.textContent : '',
    marks: Object.fromEntries(Object.entries(marks).map(([k, v]) => [k, Array.from(v)])),
    limitLine: !!(figure && figure.querySelector('line.limit')),
    key,
    failureRows: failures ? failures.querySelectorAll('tr').length - 1 : 0,
    nonfinite: failures ? Array.from(failures.querySelectorAll('tr'))
      .map(tr => tr.querySelector('td.nonfinite')).filter(td => td)
      .map(td => [td.textContent, td.nextElementSibling.textContent,
                  td.nextElementSibling.nextElementSibling.textContent]) : [],
    fingerprintRight: right(fingerprint),
    fingerprintScrolls: fingerprint ? fingerprint.scrollWidth > fingerprint.clientWidth + 1
                                    : null,
    smallestTick: ticks.length ? Math.min(...ticks.filter(t => t > 0)) : null,
    pageWidth: document.documentElement.scrollWidth,
    viewWidth: innerWidth,
  };
})()
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(BROWSER, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    named = os.environ.get("ATTNSPEC_SCREENSHOT_DIR")
    if named:
        path = Path(named).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


def _show(browser: Chromium, page: str, path: Path) -> dict:
    path.write_text(page, encoding="utf-8")
    browser.open(path.as_uri())
    facts = browser.evaluate(PROBE)
    assert isinstance(facts, dict)
    assert browser.problems() == []
    assert browser.requests() == [path.as_uri()]  # self-contained: nothing else fetched
    return facts


def _distinct_marks(facts: dict, count: int) -> None:
    """Each implementation drawn in one colour and one shape of its own, listed whole in the
    key in that colour."""
    marks = facts["marks"]
    assert len(marks) == count, sorted(marks)
    assert all(len(looks) == 1 for looks in marks.values()), marks  # one look per series
    assert len({looks[0] for looks in marks.values()}) == count  # no two alike
    key = {entry["series"]: entry for entry in facts["key"]}
    assert len(key) == count
    for s, looks in marks.items():
        assert looks[0].split(" | ")[0] == key[s]["colour"], (s, looks, key[s])
        assert key[s]["whole"], key[s]
        assert key[s]["width"] > 8
    assert len({(e["colour"], e["clip"]) for e in facts["key"]}) == count


@needs_browser
def test_real_report_in_the_browser(browser, out_dir):
    report = run(["attnspec[numpy]", "broken_impls:wrong_scale",
                  "broken_impls:nan_for_empty_rows"],
                 select=["score/b2.h4x2.q6.k9.d3/", "score/b2.h4x4.q9.k9.d64/",
                         "empty-rows/b2.h4x2.q6.k9.d16.mask=empty_rows/"],
                 fingerprint=True, isolate=False)
    assert {r.outcome for r in report.results} >= {Outcome.PASS, Outcome.FAIL}
    facts = _show(browser, to_html(report), out_dir / "html-report.html")
    assert facts["scripts"] == 0
    assert facts["svgs"] == 2
    assert {"Outcomes", "Rules", "Errors", "Behaviour fingerprint"} <= set(facts["headings"])
    assert any(h.startswith("Failures (") for h in facts["headings"])
    # the matrix: a cell per (rule, implementation) at least
    assert facts["matrixTitle"].startswith("Rule matrix")
    assert facts["matrixCells"] == 3 * len(views.rules(report)) >= 6
    # the figure: both panels, three implementations told apart
    assert "Error against logit magnitude" in facts["figureText"]
    assert "Error / tolerance per rule" in facts["figureText"]
    assert facts["limitLine"]
    _distinct_marks(facts, 3)
    # attnspec[numpy]'s float64 errors are exactly 0: the axis stops at float64's resolution
    assert facts["smallestTick"] >= 1e-16
    # the failure list, NaN failures shown as NaN with the tolerance they failed
    assert facts["failureRows"] == len(report.failed) > 0
    assert facts["nonfinite"], "no NaN failure in the list"
    for error, tolerance, fraction in facts["nonfinite"]:
        assert (error, fraction) == ("NaN", "NaN")
        assert float(tolerance) > 0
    # sized to the window
    assert facts["pageWidth"] <= facts["viewWidth"]
    assert facts["figureRight"] <= facts["viewWidth"]
    png = browser.screenshot(out_dir / "html-report.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000


def _crowded_report(count: int = 26) -> Report:
    """``count`` implementations with long names (one of them hostile), float64 errors of 0,
    a NaN failure each, and the fingerprint of today's eleven probes."""
    fingerprint = {
        "mask_polarity": "keep", "causal_alignment": "lower_right",
        "fully_masked_row": "zeros", "low_precision_accumulation": "float32",
        "masked_value_leak": "none", "kv_padding_leak": "none",
        "softcap_order": "before_bias_and_mask", "gqa_mapping": "contiguous",
        "segment_positions": "per_segment", "segment_padding_leak": "none",
        "alibi_alignment": "upper_left",
    }
    impls, results = [], []
    for i in range(count):
        name = (f"vendor_{i}.models.attention.scaled_dot_product_attention_with_a_long_name"
                if i != 5 else '<b onclick="alert(1)">bold</b>')
        impls.append(ImplementationInfo(name, "numpy", "cpu", fingerprint={
            **fingerprint, "fully_masked_row": ("zeros", "nan", "mean_v")[i % 3]}))
        for j, (dtype, error, tolerance) in enumerate([
                ("float64", 0.0, 1e-15), ("float32", 1e-7 * (1 + i / 10), 1e-6),
                ("float16", 3e-4, 5e-3)]):
            results.append(CaseResult(
                f"score/d{j}/{dtype}", ["ATT-SCORE-1"], name, "numpy", "cpu", dtype,
                "attention", {"magnitude": 10.0 ** j}, Outcome.PASS, 0, error, tolerance,
                0.5, errors={"out": {"error": error, "tolerance": tolerance, "ratio": 0.5}}))
        results.append(CaseResult(
            "empty-rows/e/float32", ["ATT-EMPTY-1"], name, "numpy", "cpu", "float32",
            "attention", {}, Outcome.FAIL, 0, None, 0.0, None,
            message="out[0, 0, 0, 0]: expected np.float64(0.0), got np.float64(nan) "
                    "(4 non-finite mismatches)"))
    results.append(CaseResult(
        "empty-rows/e/float32", ["ATT-EMPTY-1"], "reference", "numpy", "cpu", "float32",
        "attention", {}, Outcome.PASS, 0, 1e-7, 2e-6, 0.5,
        errors={"out": {"error": 1e-7, "tolerance": 2e-6, "ratio": 0.5}}))
    impls.append(ImplementationInfo("reference", "numpy", "cpu"))
    return Report(implementations=impls, results=results)


@needs_browser
@pytest.mark.parametrize("width", [1280, 760])
def test_crowded_report_fits_and_tells_implementations_apart(browser, out_dir, width):
    report = _crowded_report()
    path = out_dir / "html-report-crowded.html"
    path.write_text(to_html(report), encoding="utf-8")
    browser.open(path.as_uri(), width=width)
    facts = browser.evaluate(PROBE)
    assert isinstance(facts, dict)
    assert browser.problems() == []
    assert facts["scripts"] == 0
    _distinct_marks(facts, 27)
    names = {entry["name"] for entry in facts["key"]}
    assert '<b onclick="alert(1)">bold</b>' in names  # shown as text, whole
    assert all(len(n) > 60 for n in names if n.startswith("vendor_"))  # never cut
    assert facts["smallestTick"] >= 1e-16
    # nothing runs off the page: the plots shrink to it, the tables wrap (a 13-column
    # fingerprint on a narrow window scrolls in its own box)
    assert facts["pageWidth"] <= facts["viewWidth"]
    assert facts["figureRight"] <= facts["viewWidth"]
    assert facts["matrixRight"] <= facts["viewWidth"]
    assert facts["fingerprintRight"] <= facts["viewWidth"]
    assert facts["figureWidth"] > 0.8 * min(width, 1200) - 40
    if width == 1280:
        assert not facts["fingerprintScrolls"]  # wrapped at its underscores, all in view
        browser.screenshot(out_dir / "html-report-crowded.png")


@needs_browser
def test_the_probe_sees_script_errors(browser, tmp_path):
    """The check above is not vacuous: a page whose script throws is caught."""
    path = tmp_path / "broken.html"
    path.write_text("<!DOCTYPE html><title>x</title><script>notDefined()</script>")
    browser.open(path.as_uri())
    assert any("notDefined" in p for p in browser.problems())


# -- the same, without a browser ------------------------------------------------------------

def test_implementations_differ_in_colour_and_marker():
    looks = [style(i) for i in range(80)]
    assert len({(s.colour, s.shape) for s in looks}) == 80
    # neighbours differ in both, so the shape alone tells them apart
    assert all(a.colour != b.colour and a.shape != b.shape for a, b in pairwise(looks))
    assert len({s.shape for s in looks[:8]}) == 8


def test_the_page_shows_nan_with_its_tolerance_and_floors_the_error_axis():
    report = _crowded_report(6)
    page = to_html(report)
    assert page.count("<svg") == 2
    assert "<script" not in page.lower()
    assert "&lt;b onclick=&quot;alert(1)&quot;&gt;bold&lt;/b&gt;" in page
    # a float64 error of 0 is drawn at float64's resolution, not at 1e-300
    ticks = [float(t) for t in re.findall(r'class="tick"[^>]*>([0-9.e+-]+)<', page)]
    assert min(ticks) == 1e-16
    # the NaN failure: "NaN", with the tolerance the case's finite values are held to
    row = re.search(r"empty-rows/.*?</tr>", page.split("<h2>Failures")[1], re.S).group(0)
    cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row)
    assert cells == ["NaN", "2e-06", "NaN", "–"]
    measure = Measures(report)(report.results[3])
    assert (measure.nonfinite, measure.tolerance) == ("NaN", 2e-06)
    assert math.isnan(measure.fraction)
