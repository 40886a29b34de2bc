"""``attnlab serve``: the local web viewer of one model, on 127.0.0.1 unless ``--host`` says otherwise."""
from __future__ import annotations

import threading
import time
from typing import Optional

import typer

from attnlab.cli import DTYPE_OPTION, MODEL_ARGUMENT, app, console, err_console, run
from attnlab.errors import AttnlabError

INSTALL_HINT = "attnlab serve needs FastAPI and uvicorn: pip install 'attnlab[serve]'"


@app.command()
def serve(
    model: str = MODEL_ARGUMENT,
    port: int = typer.Option(8765, help="TCP port (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to bind; anything but 127.0.0.1 / localhost exposes the "
                             "model to your network (a warning is printed)"),
    max_tokens: int = typer.Option(8192, help="most tokens in one text (the model's positions if fewer)"),
    max_text_bytes: int = typer.Option(200_000, help="most bytes in one text"),
    max_new_tokens: int = typer.Option(64, help="most tokens one steering or timeline request may generate"),
    map_side: int = typer.Option(256, help="attention maps of longer texts are pooled into this many bins a side"),
    grid_rows: int = typer.Option(512, help="the head grid of a longer text is measured over its last this many "
                                  "queries (all keys still count), to stay quick"),
    queue: int = typer.Option(4, help="requests that may wait while one runs; more are told the server is busy"),
    dtype: Optional[str] = DTYPE_OPTION,
    trust_remote_code: bool = typer.Option(False, help="run the model repo's own code (only for code you trust)"),
):
    """Serve a local web viewer: head grid, attention maps, steering side by side, generation timeline, share."""
    def body():
        try:
            import uvicorn

            from attnlab.serve.app import LOCAL_HOSTS, create_app
        except ImportError:
            raise AttnlabError(INSTALL_HINT) from None
        import attnlab
        from attnlab.serve.views import Limits

        for name, value, least in (("--max-tokens", max_tokens, 1), ("--max-text-bytes", max_text_bytes, 1),
                                   ("--max-new-tokens", max_new_tokens, 1), ("--map-side", map_side, 2),
                                   ("--grid-rows", grid_rows, 1),
                                   ("--queue", queue, 0)):
            if value < least:
                raise AttnlabError(f"{name} must be >= {least}, got {value}")
        if not 0 <= port <= 65535:
            raise AttnlabError(f"--port must be in 0-65535, got {port}")
        limits = Limits(max_text_bytes=max_text_bytes, max_tokens=max_tokens, map_side=map_side,
                        grid_rows=grid_rows, max_new_tokens=max_new_tokens, max_waiting=queue)
        hosts = LOCAL_HOSTS if host in LOCAL_HOSTS else LOCAL_HOSTS + (host,)
        if host not in LOCAL_HOSTS:
            err_console.print(f"[yellow]warning:[/yellow] binding {host}: anyone who can reach it can run the model; "
                              "the viewer has no login. Use the default 127.0.0.1 unless you mean it.")
        with console.status(f"loading {model}"):
            m, tok = attnlab.load(model, dtype=dtype, trust_remote_code=trust_remote_code)
        web = create_app(m, tok, name=model, limits=limits, hosts=hosts)
        server = uvicorn.Server(uvicorn.Config(web, host=host, port=port, log_level="warning"))
        threading.Thread(target=announce_when_listening, args=(server, host, model), daemon=True).start()
        server.run()
        if not server.started:
            raise AttnlabError(f"the server could not listen on {host}:{port} (in use? try another --port, or 0)")
    run(body)


def announce_when_listening(server, host: str, model: str) -> None:
    """Print the viewer's URL once uvicorn listens, with the port it really got (``--port 0`` picks one)."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    console.print(f"attnlab serve: {model} at http://{shown}:{port}/  (Ctrl-C stops)", soft_wrap=True)
