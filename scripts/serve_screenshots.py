"""Re-take the README's pictures of ``attnlab serve`` (docs/serve/*.png) on a real model, smollm2 by default.

Starts the viewer in this process on a free loopback port, drives Debian's chromium through Playwright the way a
person would (pick the sample text, run, hover a sink head, open its map, hover a token, select a span and steer,
generate with a sink cache, share, open ``attnlab profile --html``'s page) and screenshots each view. The tests
take the same flows on ``tiny`` (tests/test_serve_browser.py); this script only makes pictures.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/serve_screenshots.py [--model smollm2] [--out docs/serve]
        [--head-roles]

``--head-roles`` also shoots the grid coloured by the model's induction score (the viewer computes every head-role
score once on first use: several minutes of CPU on smollm2). Needs the serve extra, playwright and chromium.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

SPAN_WORDS = "lighthouse"          # the first occurrence is the span steered towards


@contextmanager
def serving(app):
    """Serve ``app`` on 127.0.0.1 (a free port) while the block runs; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the viewer did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def idle(page, timeout_s: float = 900) -> None:
    """Wait until the page has no request in flight."""
    page.wait_for_selector("body[data-busy='0']", timeout=timeout_s * 1000)


def grid_point(page, layer: int, head: int) -> dict:
    """Page coordinates of the centre of cell (layer, head) of the head grid."""
    return page.evaluate("""([l, h]) => {
        const g = gridGeometry(), r = document.getElementById('grid').getBoundingClientRect();
        return {x: r.left + GRID.left + (h + 0.5) * g.cw, y: r.top + GRID.top + (l + 0.5) * g.ch}; }""", [layer, head])


def strongest_sink(page) -> tuple[int, int]:
    """The (layer, head) with the most first-token mass past layer 0: the sink the map shows."""
    return tuple(page.evaluate("""() => { const m = state.analysis.metrics.first_token_mass; let best = [1, 0];
        m.forEach((row, l) => row.forEach((v, h) => { if (l > 0 && v > m[best[0]][best[1]]) best = [l, h]; }));
        return best; }"""))


def select_words(page, words: str) -> None:
    """Drag the mouse over the first tokens that spell ``words`` (the span)."""
    tokens = page.locator("#tokens .tok")
    labels = [tokens.nth(i).text_content() for i in range(tokens.count())]
    first = next(i for i, label in enumerate(labels) if words.startswith(label.strip()) and label.strip())
    last = first
    while "".join(labels[first:last + 1]).strip() != words and last + 1 < len(labels) and last - first < 8:
        last += 1
    a, z = tokens.nth(first).bounding_box(), tokens.nth(last).bounding_box()
    page.mouse.move(a["x"] + 1, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(z["x"] + z["width"] - 1, z["y"] + z["height"] / 2, steps=5)
    page.mouse.up()


def shoot(model_name: str, out: Path, head_roles: bool) -> None:
    """Take every picture of ``model_name``'s viewer into ``out``."""
    from playwright.sync_api import sync_playwright

    import attnlab
    from attnlab.serve.app import create_app
    from attnlab.serve.export import profile_snapshot

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install -y chromium)")
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = attnlab.load(model_name)
    with serving(create_app(model, tokenizer, name=model_name)) as url, sync_playwright() as p, \
            tempfile.TemporaryDirectory() as scratch:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1200, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(900_000)
        page.goto(url + "/")
        page.wait_for_selector("#status:has-text('ready')")
        page.select_option("#sample", "lighthouse story")
        page.click("#run")
        idle(page)
        layer, head = strongest_sink(page)
        point = grid_point(page, layer, head)
        page.mouse.click(point["x"], point["y"])
        idle(page)
        page.mouse.move(point["x"], point["y"] + 1)
        page.hover("#tokens .tok[data-i='12']")
        page.wait_for_selector("#token-info:has-text('attends most to')")
        page.locator("#grid-view").screenshot(path=str(out / "head-grid.png"))
        page.locator("#map-view").screenshot(path=str(out / "attention-map.png"))
        page.locator("#input-view").screenshot(path=str(out / "text-hover.png"))
        if head_roles:
            page.select_option("#metric", "heads:induction")
            idle(page)
            page.locator("#grid-view").screenshot(path=str(out / "head-roles.png"))
            page.select_option("#metric", "first_token_mass")
        select_words(page, SPAN_WORDS)
        idle(page)
        page.select_option("#method", "pasta")
        page.fill("#steer-tokens", "16")
        page.click("#steer")
        idle(page)
        page.locator("#steer-chart").hover(position={"x": 200, "y": 100})
        page.locator("#steer-view").screenshot(path=str(out / "steering.png"))
        page.fill("#gen-tokens", "24")
        page.check("#use-sink")
        page.fill("#sinks", "4")
        page.fill("#window", "32")
        page.click("#generate")
        idle(page)
        page.locator("#timeline").hover(position={"x": 300, "y": 60})
        page.locator("#timeline-view").screenshot(path=str(out / "timeline.png"))
        with page.expect_download() as download:
            page.click("#share")
        shared = Path(scratch) / "view.html"
        download.value.save_as(shared)
        report = attnlab.profile(model, [page.input_value("#text")], tokenizer=tokenizer)
        profile_page = profile_snapshot(report).save(Path(scratch) / "profile.html")
        offline = browser.new_context(offline=True, viewport={"width": 1200, "height": 1000})
        for path, name in ((shared, "shared-snapshot"), (profile_page, "profile-html")):
            view = offline.new_page()
            view.goto(path.as_uri())
            view.wait_for_selector("#status:has-text('snapshot')")
            view.locator("body").screenshot(path=str(out / f"{name}.png"))
        browser.close()
    print(f"pictures of {model_name} in {out}: " + ", ".join(sorted(p.name for p in out.glob("*.png"))))


def main() -> None:
    """Parse the command line and take the pictures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="model to serve (default: smollm2)")
    parser.add_argument("--out", type=Path, default=Path("docs/serve"), help="folder of the pictures")
    parser.add_argument("--head-roles", action="store_true", help="also shoot the grid by induction score (slow)")
    args = parser.parse_args()
    shoot(args.model, args.out, args.head_roles)


if __name__ == "__main__":
    main()
