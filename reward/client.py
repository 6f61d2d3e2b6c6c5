"""Clients of the reward service: HTTP (sync and async, timeouts, retries) and in-process (Ray).

All clients share one surface: `score(items, mode=None, k=None) -> [result dict]` and
`rewards(questions, solutions) -> [float]`. Retries cover transport failures, 502/503/504 (a
replica being replaced, an overloaded queue, a timed-out batch) and, for the Ray client, a router
that is restarting; a 503 with `Retry-After` is retried after that long. 4xx errors are the
caller's and are raised at once.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence

RETRY_STATUS = {502, 503, 504}


def retry_delay(attempt: int, backoff: float, retry_after=None) -> float:
    """Seconds before retry `attempt` (0-based): the server's Retry-After if it sent one, else
    exponential backoff, capped at 30 s."""
    try:
        if retry_after is not None:
            return min(30.0, max(0.0, float(retry_after)))
    except (TypeError, ValueError):
        pass
    return min(30.0, backoff * 2**attempt)


@functools.lru_cache(maxsize=1)
def _tls_context():
    """One TLS context for every https client in the process: building one loads the CA bundle
    (~30 ms of CPU), which a trainer opening a client per thread would pay per thread."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _verify_for(url: str):
    """httpx's `verify` for `url`: plain http needs no TLS context at all (httpx builds one per
    client otherwise, 30 ms each: measured as most of the benchmark clients' CPU at 32 threads)."""
    return False if url.startswith("http://") else _tls_context()


class RewardServiceError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"reward service error {status}: {message}")
        self.status = status
        self.message = message


def _items(questions: Sequence[str], solutions: Sequence[str]) -> list[dict]:
    if len(questions) != len(solutions):
        raise ValueError(f"{len(questions)} questions but {len(solutions)} solutions")
    return [{"question": q, "solution": s} for q, s in zip(questions, solutions, strict=True)]


def _check_reply(status: int, payload) -> dict:
    """HTTP replies carry the status in the response; router replies carry it in the payload."""
    if status >= 400 or not isinstance(payload, dict) or "error" in payload:
        message = payload.get("error") if isinstance(payload, dict) else str(payload)
        if status < 400:
            status = payload.get("status", 502) if isinstance(payload, dict) else 502
        raise RewardServiceError(status, str(message))
    return payload


class RewardClient:
    """Synchronous HTTP client."""

    def __init__(self, url: str, token: str = "", timeout: float = 300.0, retries: int = 3, backoff: float = 0.5):
        import httpx

        self.url = url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout, headers=headers, verify=_verify_for(self.url))

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                resp = self._http.post(self.url + path, json=body)
                if resp.status_code in RETRY_STATUS and attempt < self.retries:
                    time.sleep(retry_delay(attempt, self.backoff, resp.headers.get("retry-after")))
                    continue
                return _check_reply(resp.status_code, _json(resp))
            except httpx.TransportError as err:
                if attempt >= self.retries:
                    raise RewardServiceError(503, f"cannot reach {self.url}: {err}") from err
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def score(self, items: Sequence[dict], mode: str | None = None, k: int | None = None) -> list[dict]:
        body = {"items": list(items)}
        if mode:
            body["mode"] = mode
        if k:
            body["k"] = k
        return self._post("/score", body)["results"]

    def rewards(self, questions: Sequence[str], solutions: Sequence[str], **kw) -> list[float]:
        return [r["score"] for r in self.score(_items(questions, solutions), **kw)]

    def get_reward(self, queries: Sequence[str], prompts: Sequence[str], labels=None) -> dict:
        return self._post("/get_reward", {"query": list(queries), "prompts": list(prompts), "labels": labels})

    def health(self) -> dict:
        return _json(self._http.get(self.url + "/health"))

    def close(self) -> None:
        self._http.close()


class AsyncRewardClient:
    """asyncio HTTP client (what the async TRL reward function uses)."""

    def __init__(self, url: str, token: str = "", timeout: float = 300.0, retries: int = 3, backoff: float = 0.5,
                 max_connections: int = 64):
        self.url = url.rstrip("/")
        self.token, self.timeout, self.retries, self.backoff = token, timeout, retries, backoff
        self.max_connections = max_connections
        self._http = None
        self._loop = None

    def _client(self):
        import httpx

        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:  # one pool per event loop
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._http = httpx.AsyncClient(timeout=self.timeout, headers=headers, verify=_verify_for(self.url),
                                           limits=httpx.Limits(max_connections=self.max_connections))
            self._loop = loop
        return self._http

    async def _post(self, path: str, body: dict) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                resp = await self._client().post(self.url + path, json=body)
                if resp.status_code in RETRY_STATUS and attempt < self.retries:
                    await asyncio.sleep(retry_delay(attempt, self.backoff, resp.headers.get("retry-after")))
                    continue
                return _check_reply(resp.status_code, _json(resp))
            except httpx.TransportError as err:
                if attempt >= self.retries:
                    raise RewardServiceError(503, f"cannot reach {self.url}: {err}") from err
                await asyncio.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def score(self, items: Sequence[dict], mode: str | None = None, k: int | None = None) -> list[dict]:
        body = {"items": list(items)}
        if mode:
            body["mode"] = mode
        if k:
            body["k"] = k
        return (await self._post("/score", body))["results"]

    async def rewards(self, questions: Sequence[str], solutions: Sequence[str], **kw) -> list[float]:
        return [r["score"] for r in await self.score(_items(questions, solutions), **kw)]

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


class RayRewardClient:
    """In-process client: calls the router actor through its Ray handle (no HTTP hop). Overload
    (503) is retried after the router's Retry-After, and a router that died and is being restarted
    by Ray is waited for, `retries` times."""

    def __init__(self, router, timeout: float | None = None, retries: int = 5, backoff: float = 0.5):
        self.router = router
        self.timeout = timeout
        self.retries, self.backoff = retries, backoff

    def _reply(self, reply, attempt: int) -> tuple[list[dict] | None, float]:
        """(results, 0) when done; (None, delay) to retry; raises when it must not or cannot."""
        if isinstance(reply, dict) and reply.get("status") in RETRY_STATUS and attempt < self.retries:
            return None, retry_delay(attempt, self.backoff, reply.get("retry_after"))
        return _check_reply(200, reply)["results"], 0.0

    def _attempt(self, call, attempt: int) -> tuple[list[dict] | None, float]:
        """One try: `call()` returns the router's reply (or raises because the router died)."""
        import ray

        try:
            return self._reply(call(), attempt)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
            if attempt >= self.retries:
                raise RewardServiceError(503, f"reward router unavailable: {type(err).__name__}") from err
            return None, retry_delay(attempt, self.backoff)

    def score(self, items: Sequence[dict], mode: str | None = None, k: int | None = None) -> list[dict]:
        import ray

        for attempt in range(self.retries + 1):
            results, delay = self._attempt(
                lambda: ray.get(self.router.score.remote(list(items), mode, k, self.timeout)), attempt)
            if results is not None:
                return results
            time.sleep(delay)
        raise AssertionError("unreachable")

    async def ascore(self, items: Sequence[dict], mode: str | None = None, k: int | None = None) -> list[dict]:
        import ray

        for attempt in range(self.retries + 1):
            try:
                reply = await self.router.score.remote(list(items), mode, k, self.timeout)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
                reply = err  # judged by _attempt below, like the sync path
            results, delay = self._attempt(lambda r=reply: _raise_or_return(r), attempt)
            if results is not None:
                return results
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def rewards(self, questions: Sequence[str], solutions: Sequence[str], **kw) -> list[float]:
        return [r["score"] for r in self.score(_items(questions, solutions), **kw)]

    async def arewards(self, questions: Sequence[str], solutions: Sequence[str], **kw) -> list[float]:
        return [r["score"] for r in await self.ascore(_items(questions, solutions), **kw)]

    def health(self) -> dict:
        import ray

        return ray.get(self.router.health.remote())


def _raise_or_return(reply):
    if isinstance(reply, BaseException):
        raise reply
    return reply


def client_from_env() -> RewardClient:
    """HTTP client configured by GENRM_REWARD_URL / GENRM_REWARD_TOKEN (for framework adapters that
    load a reward file by path and cannot pass arguments)."""
    import os

    url = os.environ.get("GENRM_REWARD_URL")
    if not url:
        raise RuntimeError("set GENRM_REWARD_URL to the GenRM reward service, e.g. http://127.0.0.1:8000")
    return RewardClient(url, os.environ.get("GENRM_REWARD_TOKEN", ""))


def _json(resp):
    try:
        return resp.json()
    except ValueError:
        return {"error": f"non-JSON reply ({resp.status_code}): {resp.text[:200]}"}
