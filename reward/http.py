"""HTTP front of the reward service: a Ray Serve deployment with a FastAPI app.

    POST /score       {"items": [{"question", "solution"}], "mode"?, "k"?} -> {"results": [...]}
    POST /get_reward  OpenRLHF remote RM protocol -> {"rewards", "scores", "extra_logs"}
    GET  /health      replicas alive, queue depth
    GET  /metrics     requests, batch sizes, latency p50/p99, cache hits, failures

The deployment holds no model; it validates, then awaits the router actor. Client mistakes get a
4xx JSON `{"error": ...}`; a timed-out request 504; no live replica 503.
"""

from __future__ import annotations

import hmac

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from genrm_rl.config import from_dict
from genrm_rl.prompts import get_prompt_format
from reward.config import ServeConfig
from reward.protocol import parse_get_reward_request, parse_json_body, parse_score_request
from reward.router import ServiceError

app = FastAPI(title="genrm-rl reward service")


def _error(err: ServiceError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.status)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4096)
@serve.ingress(app)
class RewardHTTP:
    def __init__(self, serve_cfg: dict):
        self.cfg = from_dict(ServeConfig, serve_cfg)
        self.fmt = get_prompt_format(self.cfg.verifier.prompt_format)
        self.router = ray.get_actor(self.cfg.router_name, namespace=self.cfg.namespace)

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
        reply = await self.router.score.remote(items, mode, k)
        if "error" in reply:
            raise ServiceError(reply["status"], reply["error"])
        return reply["results"]

    @app.post("/score")
    async def score(self, request: Request):
        try:
            self._authorize(request)
            items, mode, k = parse_score_request(await self._body(request))
            return {"results": await self._score(items, mode, k)}
        except ServiceError as err:
            return _error(err)
        except ray.exceptions.RayError as err:
            return _error(ServiceError(503, f"reward service unavailable: {type(err).__name__}"))

    @app.post("/get_reward")
    async def get_reward(self, request: Request):
        try:
            self._authorize(request)
            pairs = parse_get_reward_request(await self._body(request), self.fmt, self.cfg.max_items)
            results = await self._score(pairs, None, None)
            scores = [r["score"] for r in results]
            return {"rewards": scores, "scores": scores,
                    "extra_logs": {"genrm_forced_verdicts": [r["num_forced"] for r in results]}}
        except ServiceError as err:
            return _error(err)
        except ray.exceptions.RayError as err:
            return _error(ServiceError(503, f"reward service unavailable: {type(err).__name__}"))

    @app.get("/health")
    async def health(self):
        try:
            info = await self.router.health.remote()
        except ray.exceptions.RayError as err:
            return _error(ServiceError(503, f"router unavailable: {type(err).__name__}"))
        return JSONResponse(info, status_code=200 if info["replicas_alive"] else 503)

    @app.get("/metrics")
    async def metrics(self, request: Request):
        try:
            self._authorize(request)
            return await self.router.get_metrics.remote()
        except ServiceError as err:
            return _error(err)


def start_http(cfg: ServeConfig, app_name: str = "genrm_reward") -> str:
    from genrm_rl.config import to_dict

    logging_config = {"enable_access_log": cfg.access_log}
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=logging_config)
    serve.run(RewardHTTP.bind(to_dict(cfg)), name=app_name, route_prefix="/", blocking=False,
              logging_config=logging_config)
    return f"http://{cfg.host}:{cfg.port}"
