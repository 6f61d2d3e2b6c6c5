"""HTTP front of the reward service: an ASGI app served by uvicorn inside the router actor.

    POST /score       {"items": [{"question", "solution"}], "mode"?, "k"?} -> {"results": [...]}
    POST /get_reward  OpenRLHF remote RM protocol -> {"rewards", "scores", "extra_logs"}
    GET  /health      replicas alive, queue depth
    GET  /metrics     Prometheus text: requests, items, batch sizes, latency, cache hits, failures
    GET  /stats       the same numbers as JSON

Why in the router's own process and event loop (not a Ray Serve app): every request the router
batches used to cross a Serve HTTP proxy actor, a Serve ingress replica and an actor call into the
router, ~9 ms of CPU per request in processes that share the machine with the verifier (measured:
the proxy and the ingress took more CPU than the router itself; on a 2-core node the HTTP service
then scored 72-83% of what the verifier scores called directly). Here a request is parsed
(`reward.protocol`) and awaited on the router's `score` coroutine in the same loop: no hop, no
serialization. It is what OpenRLHF's and verl's reward servers are too: one uvicorn app.
Because the server lives in the router, Ray's restart of a crashed router restarts it on the same
port (clients retry connection errors).

Why no FastAPI routing: a FastAPI app resolves each handler's `request: Request` annotation, and how
it does that changed between releases (fastapi 0.165 read it as a query parameter and answered every
POST with 422); here the routing is a dictionary over Starlette requests.
Client mistakes get a 4xx JSON `{"error": ...}`; a timed-out request 504; no live replica 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket

from ray.exceptions import RayError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reward.config import ServeConfig
from reward.protocol import GetRewardParser, parse_json_body, parse_score_request
from reward.router import ServiceError


def _error(err: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(err.retry_after)))} if err.retry_after else None
    return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)


class RewardHTTP:
    """The ASGI app. `router` is the `RewardRouter` object whose event loop serves the app (its
    `score`, `health`, `prometheus` and `get_metrics` are called in-process)."""

    def __init__(self, router, cfg: ServeConfig):
        self.router, self.cfg = router, cfg
        self.get_reward_parser = GetRewardParser.for_service(cfg)
        self.routes = {("POST", "/score"): self.score, ("POST", "/get_reward"): self.get_reward,
                       ("GET", "/health"): self.health, ("GET", "/metrics"): self.metrics, ("GET", "/stats"): self.stats}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # uvicorn runs with lifespan="off"; websockets are not served
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        handler = self.routes.get((request.method, path))
        try:
            if handler is None:
                allowed = sorted(m for m, p in self.routes if p == path)
                raise ServiceError(405 if allowed else 404,
                                   f"{request.method} {path}: " + (f"use {', '.join(allowed)}" if allowed else
                                                                   f"no such endpoint; try {sorted({p for _, p in self.routes})}"))
            if path != "/health":
                self._authorize(request)
            return await handler(request)
        except ServiceError as err:
            return _error(err)
        except RayError as err:  # a Ray failure under the router (e.g. a replica that cannot start)
            return _error(ServiceError(503, f"reward service unavailable: {type(err).__name__}"))

    def _authorize(self, request: Request) -> None:
        if not self.cfg.auth_token:
            return
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {self.cfg.auth_token}".encode()):
            raise ServiceError(401, "missing or wrong bearer token")

    async def _body(self, request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.cfg.max_body_bytes:
            raise ServiceError(413, f"request body of {declared} bytes > max_body_bytes={self.cfg.max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.cfg.max_body_bytes:
                raise ServiceError(413, f"request body > max_body_bytes={self.cfg.max_body_bytes}")
        return parse_json_body(bytes(body), self.cfg.max_body_bytes)

    async def _score(self, items, mode, k) -> list[dict]:
        reply = await self.router.score(items, mode, k)
        if "error" in reply:
            raise ServiceError(reply["status"], reply["error"], reply.get("retry_after"))
        return reply["results"]

    async def score(self, request: Request) -> Response:
        items, mode, k = parse_score_request(await self._body(request))
        return JSONResponse({"results": await self._score(items, mode, k)})

    async def get_reward(self, request: Request) -> Response:
        pairs = self.get_reward_parser.parse(await self._body(request))
        results = await self._score(pairs, None, None)
        scores = [r["score"] for r in results]
        return JSONResponse({"rewards": scores, "scores": scores,
                             "extra_logs": {"genrm_forced_verdicts": [r["num_forced"] for r in results]}})

    async def health(self, request: Request) -> Response:
        info = self.router.health()
        return JSONResponse(info, status_code=200 if info["replicas_alive"] else 503)

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.router.prometheus(), media_type=CONTENT_TYPE_LATEST)

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.router.get_metrics())


def url_for(host: str, port: int) -> str:
    """The URL a client on another machine uses for a server bound to `host`:`port`."""
    if host in ("0.0.0.0", "::", ""):
        import ray

        host = ray.util.get_node_ip_address()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts, so a port in use is a ValueError
    that names it (uvicorn would log the error and exit the process: here, the router actor)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # a restarted router takes its port back while the old connections sit in TIME_WAIT
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ValueError(f"the reward service cannot listen on {host}:{port} ({err.strerror}): another process "
                         f"(or another reward service on this node) has that port; start this one with another "
                         f"port=") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def bind_when_free(host: str, port: int, wait_s: float) -> socket.socket:
    """`bind`, retried for up to `wait_s` while the port is taken: a restarted router whose previous
    process is not yet gone (Ray restarts it as soon as it is declared dead) gets its port back."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return bind(host, port)
        except ValueError:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.25)


class _Server:
    """uvicorn in the caller's running event loop, on an already bound socket."""

    def __init__(self, app, sock: socket.socket, access_log: bool):
        import uvicorn

        class Server(uvicorn.Server):
            # the router actor's signals belong to Ray, not to this server
            def install_signal_handlers(self) -> None:
                pass

            @contextlib.contextmanager
            def capture_signals(self):
                yield

        self.sock = sock
        self.server = Server(uvicorn.Config(app, lifespan="off", access_log=access_log,
                                            log_level="info" if access_log else "warning",
                                            timeout_keep_alive=75))
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():  # it failed before serving: surface why
                self.task.result()
                raise RuntimeError("the HTTP server stopped before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
        self.sock.close()


async def start_http(router, cfg: ServeConfig, sock: socket.socket) -> _Server:
    """Serve `RewardHTTP(router, cfg)` on `sock` in the running loop (the router actor's)."""
    server = _Server(RewardHTTP(router, cfg), sock, cfg.access_log)
    await server.start()
    return server
