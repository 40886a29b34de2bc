"""attnlab serve in a real browser (Debian's chromium driven by Playwright), on ``tiny``, used as a person would:
type or pick a text, run, hover and click the head grid, colour it by the model's head roles, hover tokens, select
a span and steer, generate (drawn token by token as the stream arrives), share, and get bad input answered on the
page. Screenshots of each view go to a pytest tmp folder, and also to $ATTNLAB_SCREENSHOTS when set; the README's
pictures are taken on smollm2 by scripts/serve_screenshots.py."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); CI installs it", allow_module_level=True)
pytest.importorskip("fastapi", reason="attnlab serve needs the serve extra: pip install 'attnlab[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the test extra)")

from attnlab.serve.app import create_app  # noqa: E402
from serve_live import live_server  # noqa: E402

TEXT = "Answer in one word. Context: The capital of France is Paris. Question: What is the capital of France?"


@pytest.fixture(scope="module")
def server(tiny):
    with live_server(create_app(*tiny, name="tiny")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("ATTNLAB_SCREENSHOTS"):
        folders.append(Path(os.environ["ATTNLAB_SCREENSHOTS"]))
        folders[-1].mkdir(parents=True, exist_ok=True)

    def shoot(locator, name: str) -> None:
        for folder in folders:
            locator.screenshot(path=str(folder / f"{name}.png"))
    return shoot


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.on("console", lambda msg: page.js_errors.append(msg.text) if msg.type == "error" else None)
    page.goto(server + "/")
    page.wait_for_selector("#status:has-text('ready')")
    yield page
    context.close()


def idle(page) -> None:
    page.wait_for_selector("body[data-busy='0']")


def painted(page, canvas_id: str) -> int:
    """How many distinct colours the canvas holds (a blank canvas has one)."""
    return page.evaluate("""(id) => {
        const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 16) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        return seen.size; }""", canvas_id)


def grid_point(page, layer: int, head: int) -> dict:
    """Page coordinates of the centre of cell (layer, head) of the head grid."""
    return page.evaluate("""([l, h]) => {
        const g = gridGeometry(), r = document.getElementById('grid').getBoundingClientRect();
        return {x: r.left + GRID.left + (h + 0.5) * g.cw, y: r.top + GRID.top + (l + 0.5) * g.ch}; }""", [layer, head])


def run_text(page, text: str) -> None:
    page.fill("#text", text)
    page.click("#run")
    idle(page)


def test_grid_map_and_token_hover(page, server, shots):
    import httpx

    page.select_option("#sample", "lighthouse story")
    assert page.input_value("#text").startswith("The old lighthouse keeper")
    run_text(page, TEXT)
    assert page.locator("#message").is_hidden()
    assert painted(page, "grid") > 10
    api = httpx.post(server + "/api/analyze", json={"text": TEXT}).json()
    point = grid_point(page, 2, 5)
    page.mouse.move(point["x"], point["y"])
    assert page.text_content("#grid-info") == f"L2H5 first_token_mass = {api['metrics']['first_token_mass'][2][5]:.4f}"
    page.select_option("#metric", "entropy")
    page.mouse.move(point["x"] + 1, point["y"])
    assert page.text_content("#grid-info") == f"L2H5 entropy = {api['metrics']['entropy'][2][5]:.4f}"
    page.mouse.click(point["x"], point["y"])
    idle(page)
    assert "L2H5" in page.text_content("#map-title") and painted(page, "map") > 10
    row = httpx.post(server + "/api/map", json={"text": TEXT, "layer": 2, "head": 5}).json()["values"][7]
    page.hover("#tokens .tok[data-i='7']")
    page.wait_for_selector("#token-info:has-text('attends most to')")
    best = max(range(len(row)), key=row.__getitem__)
    assert f"{best} " in page.text_content("#token-info") and f"{row[best]:.4f}" in page.text_content("#token-info")
    assert page.locator("#tokens .tok.query").get_attribute("data-i") == "7"
    shots(page.locator("#grid-view"), "head-grid")
    shots(page.locator("#map-view"), "attention-map")
    shots(page.locator("#input-view"), "text-hover")
    page.check("#layer-mean")
    idle(page)
    assert "L2 mean" in page.text_content("#map-title")
    assert page.js_errors == []


def test_head_role_metrics_on_the_grid(page, server, shots):
    import httpx

    run_text(page, TEXT)
    page.select_option("#metric", "heads:induction")
    idle(page)
    assert "computed once" in page.text_content("#grid-help") and "not on your text" in page.text_content("#grid-help")
    roles = httpx.get(server + "/api/heads", timeout=120).json()
    point = grid_point(page, 1, 6)
    page.mouse.move(point["x"], point["y"])
    assert page.text_content("#grid-info") == f"L1H6 heads:induction = {roles['metrics']['heads:induction'][1][6]:.4f}"
    assert painted(page, "grid") > 5
    page.select_option("#metric", "heads:retrieval")                     # tiny copies no needle: said, not drawn
    assert "not measured" in page.text_content("#grid-help")
    page.select_option("#metric", "first_token_mass")
    run_text(page, TEXT + " Again.")                                      # another text: the model's scores stay
    page.select_option("#metric", "heads:previous_token")
    page.mouse.move(point["x"], point["y"] + 1)
    assert page.text_content("#grid-info").endswith(f"{roles['metrics']['heads:previous_token'][1][6]:.4f}")
    assert page.js_errors == []


def test_select_span_and_steer(page, server, shots):
    import httpx

    run_text(page, TEXT)
    first, last = page.locator("#tokens .tok[data-i='8']"), page.locator("#tokens .tok[data-i='14']")
    a, z = first.bounding_box(), last.bounding_box()
    page.mouse.move(a["x"] + 1, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(z["x"] + z["width"] - 1, z["y"] + z["height"] / 2, steps=5)
    page.mouse.up()
    idle(page)
    span_text = page.text_content("#span-info")
    assert "span [" in span_text and "France" in span_text
    span = [int(x) for x in span_text.split("[")[1].split(")")[0].split(",")]
    assert page.input_value("#metric") == "span_mass" and painted(page, "grid") > 10
    page.select_option("#method", "pasta")
    page.fill("#method-form input[name='alpha']", "0.05")
    page.fill("#steer-tokens", "6")
    page.click("#steer")
    idle(page)
    api = httpx.post(server + "/api/steer", json={"text": TEXT, "method": "pasta", "settings": {"alpha": "0.05"},
                                                  "span": span, "max_new_tokens": 6, "chat": False}).json()
    assert page.text_content("#steered") == api["steered"] and page.text_content("#unsteered") == api["unsteered"]
    assert painted(page, "steer-chart") > 2
    page.locator("#steer-chart").hover(position={"x": 45, "y": 100})
    rows = api["attention_by_layer"]
    assert page.text_content("#steer-info").startswith(f"layer 0: unsteered {rows[0]['unsteered']:.4f}")
    shots(page.locator("#steer-view"), "steering")
    assert page.js_errors == []


def test_generation_timeline_streams_with_sink_cache(page, server, shots):
    import httpx

    run_text(page, TEXT)
    page.evaluate("""() => { window.drawnSteps = []; const draw = window.drawTimeline;
        window.drawTimeline = () => { window.drawnSteps.push(state.timeline.steps.length); draw(); }; }""")
    page.fill("#gen-tokens", "10")
    page.check("#use-sink")
    page.fill("#sinks", "2")
    page.fill("#window", "8")
    page.click("#generate")
    idle(page)
    assert page.evaluate("window.drawnSteps") == list(range(1, 11))     # drawn as each token arrived
    assert painted(page, "timeline") > 5
    assert page.locator("#generated .tok.generated").count() == 10
    plain = httpx.post(server + "/api/timeline", json={"text": TEXT, "max_new_tokens": 10, "chat": False,
                                                         "sink_cache": {"sinks": 2, "window": 8}}, timeout=60).json()
    assert page.evaluate("state.timeline.steps") == plain["steps"]
    assert page.locator("#generated .tok.evicted").count() > 0
    page.locator("#timeline").hover(position={"x": 40, "y": 20})
    assert page.text_content("#timeline-info").startswith("step 0 ")
    shots(page.locator("#timeline-view"), "timeline")
    assert page.js_errors == []


def test_share_opens_without_a_server(page, browser, tmp_path, shots):
    run_text(page, TEXT)
    point = grid_point(page, 1, 3)
    page.mouse.click(point["x"], point["y"])
    idle(page)
    page.mouse.move(point["x"], point["y"] + 1)
    shown = page.text_content("#grid-info")
    with page.expect_download() as download:
        page.click("#share")
    path = tmp_path / "view.html"
    download.value.save_as(path)
    html = path.read_text(encoding="utf-8")
    assert "attnlab-data" in html and 'src="static/' not in html
    offline = browser.new_context(offline=True)
    errors = []
    view = offline.new_page()
    view.on("pageerror", lambda exc: errors.append(str(exc)))
    view.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    view.goto(path.as_uri())
    view.wait_for_selector("#status:has-text('snapshot')")
    assert view.locator("#run").is_hidden() and view.locator("#snapshot-note").is_visible()
    assert painted(view, "grid") > 10 and painted(view, "map") > 10
    p = grid_point(view, 1, 3)
    view.mouse.move(p["x"], p["y"] + 1)
    assert view.text_content("#grid-info") == shown
    shots(view.locator("body"), "shared-snapshot")
    offline.close()
    assert errors == [] and page.js_errors == []


def test_bad_input_is_a_message_on_the_page(page, server):
    import httpx

    run_text(page, "")
    assert "empty" in page.text_content("#message")
    run_text(page, "word " * 600)
    assert "tokens" in page.text_content("#message")
    run_text(page, TEXT)
    assert page.locator("#message").is_hidden()
    page.select_option("#method", "pasta")
    page.click("#steer")                                    # no span selected
    idle(page)
    assert "select the text" in page.text_content("#message")
    page.fill("#method-form input[name='alpha']", "abc")
    page.evaluate("state.span = [0, 6]")
    page.click("#steer")
    idle(page)
    assert "alpha must be" in page.text_content("#message")
    assert httpx.get(server + "/api/status").status_code == 200
    assert not [e for e in page.js_errors if "Failed to load resource" not in e]   # 4xx answers, no script error


def test_profile_html_opens_offline(browser, tiny, tmp_path, shots):
    import attnlab
    from attnlab.serve.export import profile_snapshot

    report = attnlab.profile(tiny[0], [TEXT], tokenizer=tiny[1])
    path = profile_snapshot(report).save(tmp_path / "profile.html")
    context = browser.new_context(offline=True)
    view = context.new_page()
    errors = []
    view.on("pageerror", lambda exc: errors.append(str(exc)))
    view.goto(path.as_uri())
    view.wait_for_selector("#status:has-text('snapshot')")
    assert painted(view, "grid") > 10 and view.locator("#map-view").is_hidden()
    p = grid_point(view, 3, 1)
    view.mouse.move(p["x"], p["y"])
    assert view.text_content("#grid-info") == f"L3H1 first_token_mass = {report.summary.first_token_mass[3][1]:.4f}"
    shots(view.locator("body"), "profile-html")
    context.close()
    assert errors == []
