"""HTTP front of the reward service: one Ray Serve deployment that reads Starlette requests directly.

    POST /score       {"items": [{"question", "solution"}], "mode"?, "k"?} -> {"results": [...]}
    POST /get_reward  OpenRLHF remote RM protocol -> {"rewards", "scores", "extra_logs"}
    GET  /health      replicas alive, queue depth
    GET  /metrics     Prometheus text: requests, items, batch sizes, latency, cache hits, failures
    GET  /stats       the same numbers as JSON

Why no FastAPI routing: a FastAPI ingress on a class resolves each handler's `request: Request`
annotation, and how it does that changed between releases (fastapi 0.165 reads it as a query
parameter and answers every POST with 422). Ray Serve hands a plain deployment the Starlette
`Request` itself, so the routing here is a dictionary and depends on no annotation at all.

The deployment holds no model; it parses (`reward.protocol`), then awaits the router actor.
Client mistakes get a 4xx JSON `{"error": ...}`; a timed-out request 504; no live replica 503.
"""

from __future__ import annotations

import hmac

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from genrm_rl.config import from_dict
from reward.config import ServeConfig
from reward.protocol import GetRewardParser, parse_json_body, parse_score_request
from reward.router import ServiceError


def _error(err: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(err.retry_after)))} if err.retry_after else None
    return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4096)
class RewardHTTP:
    def __init__(self, serve_cfg: dict):
        self.cfg = from_dict(ServeConfig, serve_cfg)
        self.router = ray.get_actor(self.cfg.router_name, namespace=self.cfg.namespace)
        self.get_reward_parser = GetRewardParser.for_service(self.cfg)
        # Backpressure at the edge: items this ingress has sent to the router and not yet answered. Past
        # what the router may queue plus what its replicas may hold, a request is refused here, before
        # an actor call, so an overloaded service still answers 503 in milliseconds.
        self.inflight_items = 0
        self.inflight_limit = (self.cfg.max_queued_items
                               + self.cfg.num_replicas * self.cfg.max_inflight_per_replica * self.cfg.max_batch_size)
        self.routes = {("POST", "/score"): self.score, ("POST", "/get_reward"): self.get_reward,
                       ("GET", "/health"): self.health, ("GET", "/metrics"): self.metrics, ("GET", "/stats"): self.stats}

    async def __call__(self, request: Request) -> Response:
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
        except ray.exceptions.RayError as err:
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
        if self.inflight_items + len(items) > self.inflight_limit:
            self.router.count_rejected.remote()  # fire and forget: the metric, not the answer, needs the router
            raise ServiceError(503, f"overloaded: {self.inflight_items} items in flight, {len(items)} more would pass "
                                    f"{self.inflight_limit} (max_queued_items + what the replicas hold); retry later",
                               retry_after=self.cfg.overload_retry_after_s)
        self.inflight_items += len(items)
        try:
            reply = await self.router.score.remote(items, mode, k)
        finally:
            self.inflight_items -= len(items)
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
        try:
            info = await self.router.health.remote()
        except ray.exceptions.RayError as err:
            raise ServiceError(503, f"router unavailable: {type(err).__name__}") from None
        return JSONResponse(info, status_code=200 if info["replicas_alive"] else 503)

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await self.router.prometheus.remote(), media_type=CONTENT_TYPE_LATEST)

    async def stats(self, request: Request) -> Response:
        return JSONResponse(await self.router.get_metrics.remote())


def start_http(cfg: ServeConfig) -> str:
    """Deploy the HTTP front as a Serve app named after the service's router (so two services on one
    cluster never replace each other) and return its URL.

    A Ray cluster has one Serve HTTP proxy, bound to the port it was first started with; a second
    HTTP service on that cluster must use the same port and cannot take "/" while another app has it.
    Both are refused here with what to change, rather than answering on a port nobody listens on."""
    from ray import serve

    from genrm_rl.config import to_dict

    running = _running_http()
    if running is not None:
        port, apps = running
        if port != cfg.port:
            raise ValueError(f"Ray Serve on this cluster already listens on port {port} (apps: {', '.join(apps) or 'none'}); "
                             f"its HTTP proxy keeps that port: start this service with port={port}, or stop the other "
                             "service first")
        if apps and cfg.router_name not in apps:
            raise ValueError(f"Serve app(s) {', '.join(apps)} already serve '/' on port {port}: one HTTP reward "
                             "service per cluster; stop it, or run this one without http (Ray handle clients)")
    logging_config = {"enable_access_log": cfg.access_log}
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=logging_config)
    serve.run(RewardHTTP.bind(to_dict(cfg)), name=cfg.router_name, route_prefix="/", blocking=False,
              logging_config=logging_config)
    return f"http://{cfg.host}:{cfg.port}"


def _running_http() -> tuple[int, list[str]] | None:
    """(port, app names) of this cluster's running Serve instance, or None when Serve is not running."""
    from ray.serve.context import _connect

    try:
        client = _connect(raise_if_no_controller_running=False)
    except Exception:  # noqa: BLE001 - no controller reachable: Serve is not running
        return None
    if client is None:
        return None
    port = ray.get(client._controller.get_http_config.remote()).port
    return port, sorted(serve.status().applications)
