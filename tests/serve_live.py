"""A real uvicorn server of ``attnlab serve``'s app in a thread, on a free loopback port, for the serve tests."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager


@contextmanager
def live_server(app):
    """Serve ``app`` on 127.0.0.1 (a free port) while the block runs; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
