"""``attnlab flow``: attention rollout or attention flow (Abnar & Zuidema, ACL 2020) of one text, as JSON and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from attnlab.cli import DTYPE_OPTION, MODEL_ARGUMENT, app, console, output_dir, read_text_file, run, write_folder
from attnlab.errors import AttnlabError


@app.command()
def flow(
    model: str = MODEL_ARGUMENT,
    text: Optional[str] = typer.Option(None, "--text", "-t", help="the text to analyse"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="a UTF-8 file holding the text"),
    method: str = typer.Option("rollout", help="rollout (every position) or maxflow (the --position tokens)"),
    exclude_sink: bool = typer.Option(False, help="remove the first token's column from every layer and renormalise "
                                      "(attnlab's option, not the paper's)"),
    residual: float = typer.Option(0.5, help="weight of the identity (residual connection) in each layer's map; "
                                   "0.5 in the paper"),
    position: list[int] = typer.Option([-1], "--position", "-p", help="output position to explain (repeatable; "
                                       "-1 is the last token)"),
    top: int = typer.Option(5, min=1, help="how many of the most relevant tokens to print"),
    max_tokens: Optional[int] = typer.Option(None, help="accept longer texts than the default limit (rollout 1024, "
                                             "maxflow 128 tokens)"),
    out: Optional[str] = typer.Option(None, help="output folder (default: attnlab-out/flow-<time>)"),
    overwrite: bool = typer.Option(False, help="replace files already in --out"),
    dtype: Optional[str] = DTYPE_OPTION,
    trust_remote_code: bool = typer.Option(False, help="run the model repo's own code (only for code you trust)"),
):
    """Attention rollout / attention flow (Abnar & Zuidema, ACL 2020): which input tokens each position draws on.

    Writes flow.json and flow.png (token-to-token heatmap) to --out and prints the top tokens for each --position.
    """
    def body():
        import attnlab

        if (text is None) == (file is None):
            raise AttnlabError("give the text with --text or with --file (one of them)")
        source = text if text is not None else read_text_file(file)
        names = ["flow.json", "flow.png"]
        target = output_dir(out, "flow", names, overwrite)
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model, dtype=dtype, trust_remote_code=trust_remote_code)
        with console.status(f"computing {method}"):
            result = attnlab.flow(m, tok, source, method=method, residual=residual, exclude_sink=exclude_sink,
                                  position=list(position), max_tokens=max_tokens)
        sink = ", first token excluded" if exclude_sink else ""
        console.print(f"{method} of {result.model}, {len(result.tokens)} tokens, residual {residual}{sink}")
        for p in position:
            where = p % len(result.tokens)
            console.print(f"position {where} ({result.tokens[where]!r}) draws on:")
            for j, token, value in result.top(p, top):
                console.print(f"  {value:7.4f}  #{j} {token!r}")
        write_folder(target)
        (target / "flow.json").write_text(result.to_json(), encoding="utf-8")
        result.plot(target / "flow.png")
        console.print(f"wrote {', '.join(str(target / n) for n in names)}")
    run(body)
