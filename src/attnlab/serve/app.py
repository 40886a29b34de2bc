"""The viewer's web app: the page, its JSON API, and the guards around them.

:func:`create_app` serves one model. Heavy requests (analyze, map, steer, timeline, the model's head-role scores)
go through :class:`attnlab.serve.jobs.Jobs` (one at a time, a bounded queue, cancelled when their client
disconnects); results of analyze and map are kept in a small LRU so that hovering and re-clicking cost nothing, each
layer's pooled maps (every head) are kept so that clicking through a layer's heads costs no forward, and the
head-role scores are kept for the server's life. The timeline also streams, one JSON line per generated token.
Every error is one JSON line, ``{"error": "..."}`` with a 4xx status (503 when busy), never a stack trace.

Guards: requests whose ``Host`` header is not one of this server's names are refused (DNS rebinding), and so are
cross-site requests (an ``Origin`` of another host); request bodies over ``max_body_bytes`` are refused before
they are read, or, sent chunked without a length, as soon as they pass the limit; the only files served are the
three static files of the package, read at start.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Optional, Union
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from attnlab.errors import AttnlabError
from attnlab.serve import views
from attnlab.serve.export import standalone_html, static_files
from attnlab.serve.jobs import Busy, Cancelled, Jobs

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAP_CACHE_BYTES = 128 * 1024 ** 2       # pooled maps kept, per (text, layer), for clicking through heads
CONTENT_TYPES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
log = logging.getLogger("attnlab.serve")


class Body(BaseModel):
    """Every request body: unknown fields are refused, so a misspelt field never passes unnoticed."""

    model_config = ConfigDict(extra="forbid")


class AnalyzeRequest(Body):
    text: str
    span: Optional[list[int]] = None


class MapRequest(Body):
    text: str
    layer: int
    head: Optional[int] = None
    rows: Optional[list[int]] = None


class SteerRequest(Body):
    text: str
    method: str
    settings: dict[str, Union[str, float, int]] = {}
    span: Optional[list[int]] = None
    max_new_tokens: int = 24
    chat: Optional[bool] = None


class SinkCacheSettings(Body):
    sinks: int = 4
    window: int = 64


class TimelineRequest(Body):
    text: str
    max_new_tokens: int = 24
    chat: Optional[bool] = None
    sink_cache: Optional[SinkCacheSettings] = None


class ExportRequest(Body):
    state: dict


def error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    """The API's one error shape: ``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def host_name(value: str) -> str:
    """The host of a ``Host`` header (``127.0.0.1:8000``, ``[::1]:8000``, ``localhost``), lower-cased."""
    return (urlsplit(f"//{value}").hostname or "").lower()


class Guard:
    """ASGI middleware: refuse foreign ``Host`` headers, cross-site ``Origin`` headers and oversized bodies.

    A body with a ``Content-Length`` over the limit is refused before it is read; a body without one (sent with
    ``Transfer-Encoding: chunked``) is read here up to the limit and refused as soon as it passes it, then handed
    to the app as if it had just arrived.
    """

    def __init__(self, app, hosts: tuple[str, ...], max_body_bytes: int) -> None:
        self.app, self.hosts, self.max_body_bytes = app, {h.lower() for h in hosts}, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = self.refusal(headers)
            if refusal is None and "content-length" not in headers:
                body, complete = await self.read_body(receive)
                if not complete:
                    refusal = self.too_large()
                else:
                    receive = replay(body, receive)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: dict) -> JSONResponse | None:
        """The response refusing a request with these headers, or None to let it through."""
        host = host_name(headers.get("host", ""))
        if host not in self.hosts:
            return error(400, f"refused: the Host header {headers.get('host', '')!r} is not this server's name "
                              f"(a guard against DNS rebinding); open the URL attnlab serve printed")
        origin = headers.get("origin")
        if origin is not None and host_name(urlsplit(origin).netloc) not in self.hosts:
            return error(403, f"refused: a request from the page of another site ({origin})")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return self.too_large()
        return None

    def too_large(self) -> JSONResponse:
        """The 413 answer to a body over the limit."""
        return error(413, f"the request body is over this server's limit of {self.max_body_bytes:,} bytes")

    async def read_body(self, receive) -> tuple[bytes, bool]:
        """The body of a request without ``Content-Length``, and whether it ended within the limit (reading stops
        at the first chunk past it)."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", True                     # the client left: the app sees an empty body and ends
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await drain(receive, message)
                return b"", False
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts), True


DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 0.5


async def drain(receive, message) -> None:
    """Read and drop the rest of a refused body (at most ``DRAIN_BYTES`` more, waiting at most ``DRAIN_SECONDS`` for
    each part): closing a connection with unread bytes makes the kernel send a reset, which can destroy the 413
    answer before the client reads it. A body that never ends is left after the wait."""
    dropped = 0
    while message.get("more_body", False) and dropped < DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), DRAIN_SECONDS)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))


def replay(body: bytes, receive):
    """An ASGI ``receive`` that gives ``body`` (already read) once, then whatever the client sends next."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return again


class ResultCache:
    """The last ``size`` results of analyze and map, by request: hovering and re-clicking cost no forward."""

    def __init__(self, size: int = 16) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    @staticmethod
    def key(kind: str, body: BaseModel) -> str:
        """A digest of the request (its kind and every field)."""
        return hashlib.sha256((kind + body.model_dump_json()).encode("utf-8")).hexdigest()

    def get(self, key: str):
        """The result stored under ``key`` (now the most recent), or None."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
            return self.items.get(key)

    def put(self, key: str, value) -> None:
        """Store ``value``, dropping the least recently used result past ``size``."""
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def json_line(data: dict) -> bytes:
    """One line of newline-delimited JSON."""
    return (json.dumps(data, separators=(",", ":")) + "\n").encode("utf-8")


def layer_key(text: str, layer) -> str:
    """A digest of a text and a layer: the key of that layer's pooled maps."""
    return hashlib.sha256(f"{layer}\n{text}".encode("utf-8")).hexdigest()


def validation_message(exc: RequestValidationError) -> str:
    """The first problem of a request body in one line: ``layer: Input should be a valid integer``."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON: send a JSON object"
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request body"
    return f"bad request: {where}: {first.get('msg', 'cannot read it')}"


def create_app(model, tokenizer, *, name: str | None = None, limits: views.Limits = views.Limits(),
               hosts: tuple[str, ...] = LOCAL_HOSTS, max_body_bytes: int = 16 * 1024 ** 2) -> FastAPI:
    """The viewer for ``model`` (loaded, with its ``tokenizer``): page + JSON API, guarded as the module says.

    ``hosts`` are the names the ``Host`` header may carry (add the ``--host`` given); ``limits`` bound each request.
    """
    from attnlab.models.config import ModelShape
    from attnlab.spans import has_chat_template
    from attnlab.steer import registry

    files = static_files()
    jobs = Jobs(model, max_waiting=limits.max_waiting)
    cache = ResultCache()
    shape = ModelShape.of(model)
    map_bytes = 4 * shape.n_heads * limits.map_side ** 2
    layer_maps = ResultCache(size=max(2, MAP_CACHE_BYTES // map_bytes))    # (text, layer) -> H x side^2 numbers
    layer_calls = ResultCache(size=1)        # the last (text, layer) opened, with its input: exact rows re-run it
    info = {"model": {"name": name or getattr(model, "attnlab_source", type(model).__name__),
                      "architecture": type(model).__name__, "layers": shape.n_layers, "heads": shape.n_heads,
                      "can_generate": bool(model.can_generate()), "chat_template": has_chat_template(tokenizer)},
            "limits": {"max_text_bytes": limits.max_text_bytes, "max_tokens": views.token_limit(model, limits),
                       "map_side": limits.map_side, "max_new_tokens": limits.max_new_tokens,
                       "max_rows": views.MAX_ROWS},
            "metrics": views.METRICS, "model_metrics": views.head_role_names(model),
            "methods": [registry.describe(m) for m in registry.METHODS], "samples": views.samples()}

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.shutdown()

    app = FastAPI(title="attnlab serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.jobs = jobs
    app.add_middleware(Guard, hosts=hosts, max_body_bytes=max_body_bytes)

    @app.exception_handler(AttnlabError)
    async def bad_input(request: Request, exc: AttnlabError):
        if isinstance(exc, Busy):
            return error(503, str(exc), {"Retry-After": "2"})
        return error(413 if isinstance(exc, views.TooLarge) else 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError):
        return error(422, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, "not found" if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        log.exception("attnlab serve: %s failed", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server goes on: see its log")

    async def run_job(request: Request, kind: str, body: BaseModel | None, fn, cached: bool = False):
        """Run ``fn`` as a job; cancel it if the client disconnects while it waits or runs."""
        key = ResultCache.key(kind, body) if cached else None
        if key is not None and (hit := cache.get(key)) is not None:
            return hit
        job = jobs.submit(fn)
        future = asyncio.wrap_future(job.future)
        while not future.done():
            await asyncio.wait({future}, timeout=0.1)
            if not future.done() and await request.is_disconnected():
                job.cancel()
                try:
                    await future
                except Cancelled:
                    pass
                return Response(status_code=499)
        try:
            result = future.result()
        except Cancelled:
            return error(503, "the job was cancelled")
        if key is not None:
            cache.put(key, result)
        return result

    def page() -> HTMLResponse:
        return HTMLResponse(files["index.html"], headers={"Content-Security-Policy": CSP})

    @app.get("/", include_in_schema=False)
    async def index():
        """The viewer's page."""
        return page()

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        """One of the page's files; nothing else on disk is reachable."""
        if name not in CONTENT_TYPES:
            return error(404, "not found")
        return Response(files[name], media_type=CONTENT_TYPES[name])

    @app.get("/api/info")
    async def api_info():
        """The model, the limits, the metrics, the steering methods (from the registry) and the samples."""
        return info

    @app.get("/api/status")
    async def api_status():
        """Jobs running, waiting and done; the process's resident memory."""
        return {**jobs.status(), "rss_bytes": resident_bytes()}

    @app.post("/api/analyze")
    async def api_analyze(body: AnalyzeRequest, request: Request):
        """The head grid of a text: every metric per layer and head, and its tokens."""
        return await run_job(request, "analyze", body,
                             lambda: views.analyze(model, tokenizer, body.text, body.span, limits), cached=True)

    roles: dict = {}

    @app.get("/api/heads")
    async def api_heads(request: Request):
        """The model's head-role scores (:mod:`attnlab.heads`) as grid metrics: computed on the first request (a
        job like any other), then kept for the life of the server."""
        def head_roles():
            if "result" not in roles:           # jobs run one at a time: a second request finds the first's result
                roles["result"] = views.head_roles(model, tokenizer)
            return roles["result"]
        if "result" in roles:
            return roles["result"]
        return await run_job(request, "heads", None, head_roles)

    @app.post("/api/map")
    async def api_map(body: MapRequest, request: Request):
        """One head's (or a layer's mean) attention map, pooled past ``map_side`` tokens, and exact rows.

        The first request on a layer of a text pools every head of that layer in one forward that stops after it,
        and the server keeps them (up to ``MAP_CACHE_BYTES``): clicking through that layer's heads costs no
        forward. It also keeps that layer's input (for the layer last opened only), so that exact rows of a pooled
        map re-run one layer, not the model."""
        def attention_map():
            key = layer_key(body.text, body.layer)
            maps = layer_calls.get(key) or layer_maps.get(key)
            if maps is None or body.rows is not None and maps.call is None and not maps.exact:
                maps = views.layer_maps(model, tokenizer, body.text, body.layer, limits, keep_call=True)
                layer_maps.put(key, dataclasses.replace(maps, call=None))
                layer_calls.put(key, maps)                 # one layer's input is kept: the one last opened
            return views.attention_map(model, tokenizer, body.text, body.layer, body.head, body.rows, limits, maps)
        return await run_job(request, "map", body, attention_map, cached=True)

    @app.post("/api/steer")
    async def api_steer(body: SteerRequest, request: Request):
        """Unsteered vs steered generations and the attention on the span per layer."""
        return await run_job(request, "steer", body, lambda: views.steer_side_by_side(
            model, tokenizer, body.text, body.method, body.settings, body.span, body.max_new_tokens, body.chat,
            limits))

    @app.post("/api/timeline")
    async def api_timeline(body: TimelineRequest, request: Request):
        """Each generated token's attention on the prompt, the generated text and the sink, per layer."""
        sink = body.sink_cache.model_dump() if body.sink_cache is not None else None
        return await run_job(request, "timeline", body, lambda: views.timeline(
            model, tokenizer, body.text, body.max_new_tokens, body.chat, sink, limits))

    @app.post("/api/timeline/stream")
    async def api_timeline_stream(body: TimelineRequest, request: Request):
        """The timeline as it is generated: newline-delimited JSON, a ``start`` line (the header), one ``step``
        line per generated token as soon as it is computed, then ``end`` (or ``error``). Bad input is answered
        before the stream, as a 4xx JSON error; a client that leaves cancels the generation."""
        sink = body.sink_cache.model_dump() if body.sink_cache is not None else None
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def generate():
            for event in views.timeline_events(model, tokenizer, body.text, body.max_new_tokens, body.chat, sink,
                                               limits):
                loop.call_soon_threadsafe(events.put_nowait, event)

        job = jobs.submit(generate)
        job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, None))

        async def next_event():
            """The job's next event (None once it ended), or Cancelled when the client left while waiting."""
            while True:
                try:
                    return await asyncio.wait_for(events.get(), timeout=0.1)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        job.cancel()
                        raise Cancelled from None

        try:
            header = await next_event()
        except Cancelled:
            return Response(status_code=499)
        if header is None:                      # the job ended before its header: bad input (or cancelled)
            exc = job.future.exception()
            if isinstance(exc, Cancelled):
                return error(503, "the job was cancelled")
            raise exc

        async def lines():
            try:
                yield json_line({"type": "start", **header})
                while (event := await next_event()) is not None:
                    yield json_line({"type": "step", **event})
                exc = job.future.exception()
                if exc is None:
                    yield json_line({"type": "end"})
                else:
                    if not isinstance(exc, (AttnlabError, Cancelled)):
                        log.error("attnlab serve: the timeline stream failed", exc_info=exc)
                    yield json_line({"type": "error", "error": str(exc) if isinstance(exc, AttnlabError) else
                                     f"internal error ({type(exc).__name__}); the server goes on: see its log"})
            except Cancelled:
                pass
            finally:
                job.cancel()                    # the client left mid-stream: stop at the next layer
        return StreamingResponse(lines(), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post("/api/export")
    async def api_export(body: ExportRequest):
        """The current view as one self-contained HTML file."""
        return HTMLResponse(standalone_html(body.state, files),
                            headers={"Content-Disposition": 'attachment; filename="attnlab-view.html"'})

    return app


def resident_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
