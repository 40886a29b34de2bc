"""One self-contained HTML file of a view: the viewer's page with its style, script and data inlined.

The file opens without a server and without the network: ``app.js`` finds the data in the page and shows it
read-only. The same file is what ``attnlab serve``'s Share button downloads, what ``attnlab profile --html``
writes, and what a :class:`Snapshot` shows in Jupyter (``_repr_html_``, in an iframe so that the notebook's own
styles and scripts cannot touch it).
"""
from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

STATIC_FILES = ("index.html", "app.js", "style.css")
STYLE_TAG = '<link rel="stylesheet" href="static/style.css">'
SCRIPT_TAG = '<script src="static/app.js"></script>'


def static_files() -> dict[str, str]:
    """The viewer's three files, read once from the package (the only files the server ever serves)."""
    folder = resources.files("attnlab").joinpath("serve/static")
    return {name: folder.joinpath(name).read_text(encoding="utf-8") for name in STATIC_FILES}


def standalone_html(state: dict, files: dict[str, str] | None = None) -> str:
    """The page with ``state`` (the views' data, as the page keeps it) and its style and script inlined."""
    files = files or static_files()
    page = files["index.html"]
    if STYLE_TAG not in page or SCRIPT_TAG not in page:
        raise RuntimeError("index.html lost its style or script tag: the export cannot inline them")
    data = json.dumps(state).replace("<", "\\u003c")              # no "</script>" can end the data early
    script = files["app.js"].replace("</script", "<\\/script")
    return (page.replace(STYLE_TAG, f"<style>\n{files['style.css']}\n</style>")
            .replace(SCRIPT_TAG, f'<script id="attnlab-data" type="application/json">{data}</script>\n'
                                 f"<script>\n{script}\n</script>"))


class Snapshot:
    """A view's data that saves as one HTML file (:meth:`save`) and displays itself in Jupyter."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def html(self) -> str:
        """The self-contained HTML document."""
        return standalone_html(self.state)

    def save(self, path) -> Path:
        """Write the HTML document to ``path`` (UTF-8) and return the path."""
        path = Path(path)
        path.write_text(self.html(), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the page in a sandboxed iframe (the notebook's styles and scripts stay out)."""
        return (f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" style="width:100%;height:720px;border:0" '
                'sandbox="allow-scripts allow-downloads"></iframe>')


def profile_snapshot(report) -> Snapshot:
    """A profile report (:class:`attnlab.report.schema.Report`) as the viewer's head grid, read-only."""
    s = report.summary
    metrics = {"first_token_mass": s.first_token_mass, "entropy": s.entropy}
    metrics.update({f"span_mass:{name}": values for name, values in s.span_mass.items()})
    first = report.texts[0]
    return Snapshot({
        "model": {"name": report.model.name, "layers": report.model.n_layers, "heads": report.model.n_heads},
        "title": f"profile of {len(report.texts)} text(s), Sink ratio {s.sink_ratio:.0f}%",
        "text": first.preview,
        "analysis": {"tokens": [], "n_tokens": first.n_tokens, "layers": report.model.n_layers,
                     "heads": report.model.n_heads, "span": None, "metrics": metrics,
                     "metric_help": {"first_token_mass": "mean attention on the first token, mean over texts",
                                     "entropy": "mean attention entropy (nats), mean over texts"}},
    })
