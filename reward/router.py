"""The router: one async Ray actor in front of the verifier replicas (and, with `http`, the HTTP
server: `reward.http` runs in this actor's event loop).

Why a router of our own rather than a serving framework's replica routing: GenRM-CoT is expensive and
batching matters (one prefill per prompt, K rationales decoded together), identical
(question, solution) pairs are common in RL (the same completion sampled twice, retries), and a
replica that dies mid-batch must not lose or double-answer a request. So the router
- queues items and forms batches per (mode, k) of up to `max_batch_size`, waiting for a batch to
  fill while requests keep arriving (at most `max_wait_ms`, and no longer than `batch_gap_ms`
  after the last arrival), and only when a replica has a free slot (so batches grow under load
  instead of piling up at a busy replica);
- de-duplicates identical items across concurrent requests (one computation, many waiters) and
  caches results (LRU, keyed by model revision, mode, K, sampling settings and the text);
- sends each batch to the least-loaded live replica; if that replica dies, marks it dead, starts
  a replacement and re-dispatches the same batch elsewhere; each item's future is resolved once;
- answers a request that is not done within its timeout with a clear error.
Requests return `{"results": [...]}` or `{"error": msg, "status": http_code}`: errors travel
across the Ray boundary as data, so every client sees the same message.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from genrm_rl.kinds import MODE_FAMILY
from genrm_rl.verifier import ItemError, check_items
from reward.metrics import ServiceMetrics

log = logging.getLogger("genrm_rl.reward")


@dataclasses.dataclass
class _Pending:
    key: str
    item: tuple[str, str]
    mode: str
    k: int
    future: asyncio.Future


@dataclasses.dataclass
class _Slot:
    index: int
    handle: object
    alive: bool = False
    inflight: int = 0
    generation: int = 0


class ServiceError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        """Seconds a client should wait before sending again (503 when the service is overloaded)."""


def model_revision(model: str) -> str:
    """Identify the weights for the cache key: a hash of config and weight-file sizes/mtimes."""
    path = Path(model)
    if not path.is_dir():
        return model
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class RewardRouter:
    """Created by `reward.service.start_service` as a named async actor."""

    def __init__(self, serve_cfg: dict):
        from genrm_rl.config import from_dict
        from reward.config import ServeConfig

        self.cfg = from_dict(ServeConfig, serve_cfg)
        self.vcfg = self.cfg.verifier
        self.revision = model_revision(self.vcfg.model)
        self.slots: list[_Slot] = []
        self.pending: collections.deque[_Pending] = collections.deque()
        self.inflight: dict[str, asyncio.Future] = {}
        self.cache: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.metrics = ServiceMetrics()
        self._work: asyncio.Event | None = None
        self._slot_free: asyncio.Event | None = None
        self._loop_task = None
        self._check_task = None
        self._starting: asyncio.Task | None = None
        self._http = None
        self.url: str | None = None
        # Start at once, as an actor call to ourselves (queued until __init__ returns, then run in
        # the actor's event loop): a router that Ray restarted after a crash has its replicas and,
        # above all, its HTTP server back without waiting for a call that HTTP clients cannot make.
        import warnings

        import ray

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray's own current_actor uses a deprecated property
            ray.get_runtime_context().current_actor.start.remote()

    # ---- replicas -----------------------------------------------------------------------------
    def _new_replica(self):
        import ray

        from genrm_rl.config import to_dict
        from reward.replica import VerifierReplica

        threads = max(1, int(self.cfg.replica_cpus)) if self.cfg.replica_gpus == 0 else 0
        self.metrics.inc("replicas_started")
        return ray.remote(concurrency_groups={"health": 1})(VerifierReplica).options(
            num_cpus=self.cfg.replica_cpus, num_gpus=self.cfg.replica_gpus, max_restarts=0,
        ).remote(to_dict(self.vcfg), threads)

    async def start(self) -> dict:
        """Serve HTTP if `cfg.http`, create the replicas and wait until every one has loaded its
        model. Safe to call from many
        requests at once (a restarted router receives all the retried calls together): the first
        call starts the replicas and the others wait for that same start."""
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._starting)
        return self.health()

    async def _start(self) -> None:
        self._work, self._slot_free = asyncio.Event(), asyncio.Event()
        if self.cfg.http:
            # HTTP first: a port in use fails the start before any replica exists, and a restarted
            # router accepts connections at once (requests wait in `score` for the replicas)
            import ray

            from reward.http import bind_when_free, start_http, url_for

            restarted = ray.get_runtime_context().was_current_actor_reconstructed
            sock = await bind_when_free(self.cfg.host, self.cfg.port, wait_s=30.0 if restarted else 0.0)
            self._http = await start_http(self, self.cfg, sock)
            self.url = url_for(self.cfg.host, self.cfg.port)
            log.info("reward service listening on %s", self.url)
        self.slots = [_Slot(i, self._new_replica()) for i in range(self.cfg.num_replicas)]
        await asyncio.gather(*(slot.handle.info.remote() for slot in self.slots))
        for slot in self.slots:
            slot.alive = True
        self._start_loop()

    def _start_loop(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop())
        self._loop_task.add_done_callback(self._loop_stopped)
        if self.cfg.replica_check_s > 0 and self._check_task is None:
            self._check_task = asyncio.get_running_loop().create_task(self._check_replicas())

    async def _check_replicas(self) -> None:
        """Every `replica_check_s`, ask each live replica for `info`; one that errs or does not answer
        within `replica_check_timeout_s` is marked dead and replaced (its queued batches retried)."""
        from ray.exceptions import RayError

        while True:
            await asyncio.sleep(self.cfg.replica_check_s)
            for slot in [s for s in self.slots if s.alive]:
                generation = slot.generation
                try:
                    await asyncio.wait_for(slot.handle.info.remote(), self.cfg.replica_check_timeout_s)
                except (RayError, TimeoutError) as err:
                    self.metrics.inc("failed_health_checks")
                    self._mark_dead(slot, generation, err)

    def _loop_stopped(self, task: asyncio.Task) -> None:
        """The batching loop must never die silently: log the error and start it again."""
        if task.cancelled():
            return
        log.error("reward router batching loop crashed (%r); restarting it", task.exception())
        self.metrics.inc("loop_restarts")
        self._start_loop()

    def _mark_dead(self, slot: _Slot, generation: int, err: Exception) -> None:
        if slot.generation != generation or not slot.alive:
            return  # already replaced
        slot.alive = False
        self.metrics.inc("replica_deaths")
        log.warning("replica %d died (%s); starting a replacement", slot.index, type(err).__name__)
        asyncio.get_running_loop().create_task(self._replace(slot))

    async def _replace(self, slot: _Slot) -> None:
        delay = 1.0
        while True:
            handle = self._new_replica()
            try:
                await handle.info.remote()
            except Exception as err:  # noqa: BLE001 - keep trying; requests time out meanwhile
                log.error("replacement for replica %d failed to start: %s", slot.index, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            slot.handle, slot.inflight, slot.alive = handle, 0, True
            slot.generation += 1
            self.metrics.inc("replica_restarts")
            self._slot_free.set()
            return

    async def _acquire(self) -> _Slot:
        while True:
            free = [s for s in self.slots if s.alive and s.inflight < self.cfg.max_inflight_per_replica]
            if free:
                slot = min(free, key=lambda s: s.inflight)
                slot.inflight += 1
                return slot
            self._slot_free.clear()
            await self._slot_free.wait()

    def _release(self, slot: _Slot, generation: int) -> None:
        if slot.generation == generation and slot.inflight > 0:
            slot.inflight -= 1
        self._slot_free.set()

    # ---- batching -----------------------------------------------------------------------------
    async def _next_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        while not self.pending:
            self._work.clear()
            await self._work.wait()
        head = self.pending[0]
        deadline = loop.time() + self.cfg.max_wait_ms / 1000

        def compatible() -> int:
            return sum(1 for p in self.pending if p.mode == head.mode and p.k == head.k)

        # a burst keeps arriving a few ms apart: wait while it does (up to max_wait_ms), but not for
        # a lone request, which is sent once no other has come for batch_gap_ms
        gap = self.cfg.batch_gap_ms / 1000
        while compatible() < self.cfg.max_batch_size and (remaining := deadline - loop.time()) > 0:
            self._work.clear()
            try:
                await asyncio.wait_for(self._work.wait(), min(remaining, gap))
            except TimeoutError:
                break
        batch, rest = [], []
        while self.pending and len(batch) < self.cfg.max_batch_size:
            p = self.pending.popleft()
            (batch if (p.mode, p.k) == (head.mode, head.k) else rest).append(p)
        self.pending.extendleft(reversed(rest))
        return batch

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            slot = await self._acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._release(slot, slot.generation)
                raise
            loop.create_task(self._dispatch(slot, batch))

    async def _dispatch(self, slot: _Slot, batch: list[_Pending]) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        items = [p.item for p in batch]
        mode, k = batch[0].mode, batch[0].k
        attempts = 0
        while True:
            generation = slot.generation
            t0 = time.monotonic()
            try:
                results = await slot.handle.score.remote(items, mode, k)
            except (RayActorError, ActorDiedError, ActorUnavailableError) as err:
                self._release(slot, generation)
                self._mark_dead(slot, generation, err)
                attempts += 1
                if attempts > self.cfg.max_retries:
                    self._fail(batch, ServiceError(503, f"verifier replicas died {attempts} times on this batch"))
                    return
                self.metrics.inc("retried_batches")
                slot = await self._acquire()
                continue
            except RayTaskError as err:  # the verifier raised (e.g. input too long for the model)
                self._release(slot, generation)
                self.metrics.inc("failed_batches")
                cause = err.cause if getattr(err, "cause", None) is not None else err
                status = 422 if isinstance(cause, ValueError) else 503
                self._fail(batch, ServiceError(status, f"verifier error: {cause}"))
                return
            self._release(slot, generation)
            self.metrics.observe_batch(len(batch), time.monotonic() - t0)
            for p, r in zip(batch, results, strict=True):
                self._resolve(p, r)
            return

    def _resolve(self, p: _Pending, result: dict) -> None:
        if "error" in result:  # this item alone was refused by the verifier (e.g. longer than its context)
            self._fail([p], ServiceError(result["status"], result["error"]))
            return
        if self.cfg.cache_size:
            self.cache[p.key] = result
            while len(self.cache) > self.cfg.cache_size:
                self.cache.popitem(last=False)
        self.inflight.pop(p.key, None)
        if not p.future.done():
            p.future.set_result(result)

    def _fail(self, batch: list[_Pending], err: Exception) -> None:
        for p in batch:
            self.inflight.pop(p.key, None)
            if not p.future.done():
                p.future.set_exception(err)

    # ---- requests -----------------------------------------------------------------------------
    def _key(self, mode: str, k: int, question: str, solution: str) -> str:
        v = self.vcfg
        raw = json.dumps([self.revision, mode, k, v.temperature, v.top_p, v.max_new_tokens, v.seed, v.prompt_format,
                          question, solution])
        return hashlib.sha256(raw.encode()).hexdigest()

    def _check(self, items) -> list[tuple[str, str]]:
        if isinstance(items, (list, tuple)) and not items:
            raise ServiceError(422, "'items' is empty")
        try:
            return check_items(items, self.cfg.max_text_chars, self.cfg.max_items, "max_text_chars")
        except ItemError as err:
            raise ServiceError(413 if err.limit else 422, str(err)) from None

    def _resolve_mode(self, mode: str | None, k: int | None) -> tuple[str, int]:
        mode = mode or self.vcfg.mode
        if mode not in MODE_FAMILY:
            raise ServiceError(422, f"'mode' must be one of {sorted(MODE_FAMILY)}, got {mode!r}")
        # modes of one family share a model (direct and cot); the ORM and the DPO baseline have their own
        if MODE_FAMILY[mode] != MODE_FAMILY[self.vcfg.mode]:
            raise ServiceError(422, f"this service hosts a {self.vcfg.mode!r} verifier; mode {mode!r} is not available")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 256):
            raise ServiceError(422, f"'k' must be an integer in 1..256, got {k!r}")
        return mode, (k or self.vcfg.k) if mode == "cot" else 1

    async def score(self, items, mode: str | None = None, k: int | None = None,
                    timeout: float | None = None) -> dict:
        """Score (question, solution) pairs: {"results": [dict]} or {"error", "status"}."""
        t0 = time.monotonic()
        self.metrics.inc("requests")
        try:
            if self._loop_task is None:
                await self.start()
            pairs = self._check(items)
            mode, k = self._resolve_mode(mode, k)
            keys = [self._key(mode, k, q, s) for q, s in pairs]
            new = len({key for key in keys if key not in self.cache and key not in self.inflight})
            if new and len(self.pending) + new > self.cfg.max_queued_items:
                self.metrics.inc("rejected_overload")
                raise ServiceError(503, f"overloaded: {len(self.pending)} items queued, {new} more would pass "
                                        f"max_queued_items={self.cfg.max_queued_items}; retry later",
                                   retry_after=self.cfg.overload_retry_after_s)
            futures = []
            loop = asyncio.get_running_loop()
            for (q, s), key in zip(pairs, keys, strict=True):
                if key in self.cache:
                    self.cache.move_to_end(key)
                    fut = loop.create_future()
                    fut.set_result(self.cache[key])
                    self.metrics.inc("cache_hits")
                elif key in self.inflight:
                    fut = self.inflight[key]
                    self.metrics.inc("dedup_hits")
                else:
                    fut = loop.create_future()
                    self.inflight[key] = fut
                    self.pending.append(_Pending(key, (q, s), mode, k, fut))
                futures.append(fut)
            self.metrics.inc("items", len(pairs))
            self._work.set()
            limit = timeout or self.cfg.request_timeout_s
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(f) for f in futures), return_exceptions=True), limit)
            except TimeoutError:
                raise ServiceError(504, f"reward request of {len(pairs)} item(s) not answered within {limit:.1f}s "
                                        f"(queued items: {len(self.pending)}, live replicas: "
                                        f"{sum(s.alive for s in self.slots)}/{len(self.slots)})") from None
            for i, r in enumerate(results):
                if isinstance(r, ServiceError):
                    raise ServiceError(r.status, f"items[{i}]: {r}") if r.status == 413 else r
                if isinstance(r, BaseException):
                    raise r
            self.metrics.observe_latency(time.monotonic() - t0)
            return {"results": [dict(r) for r in results]}
        except ServiceError as err:
            self.metrics.error(err.status)
            return {"error": str(err), "status": err.status, "retry_after": err.retry_after}

    # ---- introspection ------------------------------------------------------------------------
    def health(self) -> dict:
        alive = sum(s.alive for s in self.slots)
        return {"status": "ok" if alive else "degraded", "replicas_alive": alive, "replicas": len(self.slots),
                "queued": len(self.pending), "inflight": [s.inflight for s in self.slots], "mode": self.vcfg.mode, "k": self.vcfg.k, "model": self.vcfg.model,
                "revision": self.revision, "pid": os.getpid(), "url": self.url}

    def get_metrics(self) -> dict:
        return {**self.metrics.snapshot(), **self.health(), "cache_entries": len(self.cache)}

    def prometheus(self) -> str:
        """The metrics in Prometheus text format (GET /metrics)."""
        return self.metrics.prometheus({
            "queued_items": len(self.pending), "replicas_alive": sum(s.alive for s in self.slots),
            "replicas": len(self.slots), "inflight_batches": sum(s.inflight for s in self.slots),
            "cache_entries": len(self.cache)})

    def replica_handles(self) -> list:
        return [s.handle for s in self.slots if s.alive]

    async def shutdown(self) -> None:
        import ray

        if self._http is not None:
            await self._http.stop()
            self._http = None
        for s in self.slots:
            ray.kill(s.handle, no_restart=True)
        self.slots = []
