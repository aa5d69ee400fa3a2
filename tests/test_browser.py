"""The report page and the MLflow UI of a real finished search, in a real headless Chromium.

One small ``resnet1d`` search runs through the CLI (``launch.py``, then ``launch.py report``);
Debian's ``chromium`` (driven by Playwright, never mocked) then opens

* the report page, served from its folder by an HTTP server on 127.0.0.1, at 1280x800: every
  picture loaded, no console error, no failed request, no horizontal overflow, the sections
  and the objective on screen;
* the MLflow UI (``mlflow server`` on the search's SQLite store): the parent run lists its
  trials as nested child runs (MLflow 3 folds them under the parent: the ``+`` beside its
  name expands them), and a child run's ``val_top1`` chart draws the values MLflow holds.

Screenshots go to the test's tmp folder; with ``SCITUNE_SCREENSHOTS=DIR`` they are also copied
to ``DIR`` (``report.png``, ``mlflow_runs.png``, ``mlflow_chart.png``; the README shows them).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import free_port, run_cli, stop_tree

pytestmark = pytest.mark.slow

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[browser]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (bash deploy/system_packages.sh)",
                allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

#: No downloads, no sandbox (root), and quiet: without the background-networking flags an
#: offline Chromium floods refused connections.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1280, 800
EXPERIMENT = "browser"
#: section titles of the report page, in order (analysis/report.py)
SECTIONS = ["Best configuration", "Optimisation history", "Parameter importances",
            "Parallel coordinates", "Slice plots", "Learning curves", "Survivors of each rung",
            "Best trial's figures"]
#: The one error the MLflow UI itself provokes on a server without authentication: it asks
#: who is logged in (GET /ajax-api/2.0/mlflow/users/current) and the server answers 404; the
#: browser logs that as "Failed to load resource". Nothing else is forgiven (but requests the
#: UI cancels itself and the ResizeObserver notice below, see the test).
MLFLOW_AUTH_PROBE = "/ajax-api/2.0/mlflow/users/current"
#: A browser notice, not a fault: when a ResizeObserver callback changes layout again within
#: one frame, the browser defers the remaining notifications to the next frame and reports
#: this message as an error event (ResizeObserver spec, "deliver resize loop error"). The
#: MLflow UI's resizable chart grid provokes it on a loaded machine now and then.
RESIZE_OBSERVER_NOTICE = "ResizeObserver loop completed with undelivered notifications"


# -- helpers ---------------------------------------------------------------------------------
class Watch:
    """Console errors, uncaught exceptions and failed requests (network failure or HTTP >= 400)
    of a page, recorded as they happen."""

    def __init__(self, page: Page):
        self.errors: list[str] = []
        self.failed: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url[:200]}: {r.failure}"))
        page.on("response", lambda r: self.failed.append(f"{r.url[:200]}: HTTP {r.status}")
                if r.status >= 400 else None)

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.errors.append(f"{msg.text[:300]} ({msg.location.get('url', '')})")


def page_problems(page: Page, watch: Watch, width: int = WIDTH) -> list[str]:
    """What is wrong with the loaded page: broken or unloaded images, horizontal overflow,
    console errors, failed requests. Empty when the page is fine."""
    problems = []
    images = page.evaluate("""() => Array.from(document.images).map(img => ({
        alt: img.alt, src: img.currentSrc.slice(0, 60), complete: img.complete,
        natural: img.naturalWidth, right: img.getBoundingClientRect().right}))""")
    for img in images:
        if not img["complete"] or img["natural"] == 0:
            problems.append(f"broken image {img['alt']!r} ({img['src']})")
        elif img["right"] > width + 0.5:
            problems.append(f"image {img['alt']!r} reaches x={img['right']:.0f} > {width}")
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        problems.append(f"horizontal overflow: scrollWidth {scroll_width} > {width}")
    problems += [f"console error: {e}" for e in watch.errors]
    problems += [f"failed request: {f}" for f in watch.failed]
    return problems


@contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """Serve ``folder`` on 127.0.0.1 (a free port) for the duration; yields the base URL and
    the (path, status) of every request it answered. ``/favicon.ico`` is answered "204 No
    Content": Chromium asks for it by itself on any http:// page without an icon (the browser
    logs the 404 of a plain file server as a console error), and a page opened from disk or
    mail never asks."""
    log: list[tuple[str, int]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/favicon.ico":
                self.send_response(204)
                self.end_headers()
                return
            super().do_GET()

        def log_request(self, code="-", size="-"):
            log.append((self.path, int(code)))

        def log_message(self, format, *args):  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def publish(shot: Path, name: str) -> None:
    """Copy a screenshot to ``$SCITUNE_SCREENSHOTS/name`` when that is set."""
    target = os.environ.get("SCITUNE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(target) / name)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A small real search (4 trials, 3 epochs) and its report, both through the CLI."""
    root = tmp_path_factory.mktemp("browser-search")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = run_cli("--space", "resnet1d", "--trials", "4", "--max-epochs", "3", "--samples", "600",
                     "--experiment", EXPERIMENT, "--mlflow-uri", uri, "--storage", str(root / "ray"),
                     cwd=root, timeout=600)
    (root / "search.log").write_text(result.stdout + result.stderr)  # kept for a post-mortem
    assert result.returncode == 0, result.stderr[-3000:]
    report = run_cli("report", "--experiment", EXPERIMENT, "--storage", str(root / "ray"),
                     "--out", str(root / "report"), cwd=root, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    shots = root / "screenshots"
    shots.mkdir()
    return SimpleNamespace(root=root, uri=uri, report=root / "report", shots=shots)


@pytest.fixture(scope="module")
def mlflow_ui(search: SimpleNamespace) -> Iterator[str]:
    """``mlflow server`` on the search's store, on 127.0.0.1; stopped by pid afterwards."""
    port = free_port()
    log = open(search.root / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", search.uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=search.root, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start: "
                                   + (search.root / "mlflow-server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        stop_tree(proc)
        log.close()


# -- the checker notices defects -------------------------------------------------------------
def test_checker_notices_a_broken_page(page: Page, tmp_path: Path):
    """A missing picture, an undecodable one, a too-wide block and a console error are each
    reported; the same page without them is clean."""
    good = '<h1>fine</h1><img alt="ok" src="ok.svg">'
    (tmp_path / "ok.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    (tmp_path / "good.html").write_text(good)
    (tmp_path / "bad.html").write_text(
        good + '<img alt="missing" src="missing.png"><img alt="garbage" src="data:image/png;base64,AAAA">'
        '<div style="width:2000px">wide</div><script>console.error("boom")</script>')
    with serve(tmp_path) as (url, _):
        watch = Watch(page)
        page.goto(f"{url}/good.html", wait_until="networkidle")
        assert page_problems(page, watch) == []
        watch = Watch(page)
        page.goto(f"{url}/bad.html", wait_until="networkidle")
        problems = "\n".join(page_problems(page, watch))
    assert "broken image 'missing'" in problems, problems
    assert "broken image 'garbage'" in problems, problems
    assert "horizontal overflow: scrollWidth 20" in problems, problems
    assert "console error: boom" in problems, problems
    assert "missing.png: HTTP 404" in problems, problems


# -- (a) the report page ---------------------------------------------------------------------
def test_report_page_renders_cleanly_at_1280(search: SimpleNamespace, page: Page):
    with serve(search.report) as (url, requests):
        watch = Watch(page)
        page.goto(f"{url}/report.html", wait_until="networkidle")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        problems = page_problems(page, watch)
        full = search.shots / "report_full.png"
        page.screenshot(path=str(full), full_page=True)
        top = search.shots / "report.png"  # the summary, the best configuration, the history
        page.screenshot(path=str(top), full_page=True, clip={"x": 0, "y": 0, "width": WIDTH, "height": 1250})
    assert problems == [], problems
    # self-contained: the page is the only thing fetched (Chromium's own favicon probe aside)
    fetched = {path for path, _ in requests}
    assert "/report.html" in fetched and fetched <= {"/report.html", "/favicon.ico"}, requests

    assert page.locator("h1").inner_text() == f"scitune report: {EXPERIMENT}"
    assert page.locator("h2").all_inner_texts() == SECTIONS
    # the pictures: at least history, parallel, slices, curves, rungs and one best-trial figure
    assert page.locator("img").count() >= 6
    sizes = page.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.clientWidth])")
    assert all(natural >= 300 and shown >= 300 for natural, shown in sizes), sizes
    # the summary with the objective is on the first screen, readable
    objective = page.locator("tr", has=page.locator("th", has_text="objective")).locator("td")
    assert objective.inner_text() == "val_top1 (max)"
    assert objective.is_visible()
    box = objective.bounding_box()
    assert box and box["y"] + box["height"] <= HEIGHT and box["x"] + box["width"] <= WIDTH, box
    assert full.stat().st_size > 50_000
    publish(top, "report.png")


# -- (b) the MLflow UI -----------------------------------------------------------------------
def _close_assistant(page: Page) -> None:
    """MLflow 3.17 opens its "MLflow Assistant" side panel on a first visit; close it."""
    close = page.locator("button[aria-label=Close]")
    try:
        close.first.wait_for(timeout=5000)
    except Exception:  # no panel in this version
        return
    close.first.click()


def test_mlflow_ui_lists_nested_trials_and_draws_val_top1(search: SimpleNamespace, mlflow_ui: str,
                                                          page: Page):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(search.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and parent.info.run_name == f"{EXPERIMENT} (search)"
    # the chart to open: the best trial's, unless a trial that ran more epochs exists
    histories = {r.info.run_id: sorted(client.get_metric_history(r.info.run_id, "val_top1"),
                                       key=lambda m: m.step) for r in children}
    best = max(children, key=lambda r: (len(histories[r.info.run_id]),
                                        r.info.run_id == parent.data.tags.get("best_run_id")))
    best_id = best.info.run_id
    history = histories[best_id]
    assert len(history) == 3, "no trial ran all 3 epochs"

    watch = Watch(page)
    exp_url = f"{mlflow_ui}/#/experiments/{experiment.experiment_id}"
    page.goto(f"{exp_url}/runs?workflowType=machine_learning", wait_until="load")
    parent_link = page.locator(f"a[href$='/runs/{parent.info.run_id}']")
    parent_link.wait_for(timeout=30_000)
    assert parent_link.inner_text() == parent.info.run_name
    _close_assistant(page)
    assert page.get_by_text(f"{len(runs)} matching runs").is_visible()
    # MLflow 3 folds child runs under their parent: hidden until the parent's "+" is clicked
    child_links = {r.info.run_id: page.locator(f"a[href$='/runs/{r.info.run_id}']") for r in children}
    assert all(link.count() == 0 for link in child_links.values())
    parent_row = page.locator("[role=row]", has=parent_link)
    parent_row.locator("button[data-component-id*='runnamecellrenderer']").click()
    parent_x = parent_link.bounding_box()["x"]
    for run in children:
        link = child_links[run.info.run_id]
        link.wait_for(timeout=10_000)
        assert link.inner_text().rstrip(".…") in run.info.run_name
        assert link.bounding_box()["x"] > parent_x + 10, "child runs are not indented under the parent"
    runs_shot = search.shots / "mlflow_runs.png"
    page.screenshot(path=str(runs_shot))

    # a child run (the best trial) from its link, then its model metrics, narrowed to val_top1
    child_links[best_id].click()
    page.wait_for_url(f"**/runs/{best_id}*")
    page.get_by_text(best.info.run_name).first.wait_for()
    page.goto(f"{exp_url}/runs/{best_id}/model-metrics?workflowType=machine_learning", wait_until="load")
    page.get_by_placeholder("Search metric charts").fill("val_top1")
    plot = page.locator(".js-plotly-plot")
    page.wait_for_function("""() => { const p = document.querySelectorAll('.js-plotly-plot');
        return p.length === 1 && p[0].data && p[0].data.length > 0
            && p[0].querySelector('.scatterlayer path.js-line'); }""", timeout=30_000)
    card = page.locator("[data-testid=experiment-view-compare-runs-card]", has=plot)
    assert card.get_by_text("val_top1", exact=True).is_visible()
    drawn = plot.evaluate("""p => ({
        traces: p.data.map(d => ({x: Array.from(d.x), y: Array.from(d.y), name: d.name})),
        lines: Array.from(p.querySelectorAll('.scatterlayer path.js-line')).map(l => l.getAttribute('d')),
        points: p.querySelectorAll('.scatterlayer .point').length,
        width: p.getBoundingClientRect().width, height: p.getBoundingClientRect().height})""")
    assert drawn["width"] > 150 and drawn["height"] > 150, drawn
    trace = drawn["traces"][0]
    assert trace["name"] == best.info.run_name
    assert trace["x"] == [m.step for m in history]
    assert trace["y"] == pytest.approx([m.value for m in history])
    # the line itself is drawn: one vertex per epoch, and the markers
    assert drawn["lines"] and drawn["lines"][0].count("L") == len(history) - 1, drawn["lines"]
    assert drawn["points"] >= len(history)
    page.mouse.move(WIDTH - 300, HEIGHT - 150)  # off the chart: no hover toolbar in the picture
    page.wait_for_timeout(800)
    chart_shot = search.shots / "mlflow_chart.png"
    page.screenshot(path=str(chart_shot))

    errors = [e for e in watch.errors if MLFLOW_AUTH_PROBE not in e and RESIZE_OBSERVER_NOTICE not in e]
    # the UI cancels fetches it no longer needs (charts filtered away, page left): the
    # browser reports those as net::ERR_ABORTED, which is no failure
    failed = [f for f in watch.failed if not f.startswith(mlflow_ui + MLFLOW_AUTH_PROBE)
              and not f.endswith("net::ERR_ABORTED")]
    assert errors == [] and failed == [], (errors, failed)
    publish(runs_shot, "mlflow_runs.png")
    publish(chart_shot, "mlflow_chart.png")
