"""Backpressure over real HTTP: ten times what the service can serve, for 30 s.

Its own module: it saturates the machine for 30 s, which the other service tests should not share."""

import concurrent.futures as cf
import threading
import time

import httpx
import pytest

from genrm_rl.runtime import free_port

LOAD_S = 30.0
ITEMS_PER_REQUEST = 4


def _items(tag: str) -> list[dict]:
    return [{"question": f"What is {tag} number {i}?", "solution": f"It is {i}. The answer is {i}."}
            for i in range(ITEMS_PER_REQUEST)]


@pytest.mark.slow
def test_ten_times_capacity_for_30s_is_refused_fast_and_memory_stays_bounded(ray_session, tiny_model_dir):
    """Offered load 10x the measured capacity, open loop: requests beyond what the service may hold get
    503 with Retry-After at once (refused by the router in the HTTP server's own loop), the router's queue never
    passes `max_queued_items`, its memory stays flat, and every accepted request is answered in full."""
    import psutil
    import ray

    from genrm_rl.config import from_dict
    from reward.config import ServeConfig
    from reward.service import start_service

    queue_bound = 16
    cfg = from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "cot", "k": 2, "max_new_tokens": 24, "batch_size": 8},
        "num_replicas": 1, "replica_cpus": 0.25, "max_batch_size": 8, "max_wait_ms": 2, "cache_size": 0,
        "max_queued_items": queue_bound, "overload_retry_after_s": 1.0, "port": free_port(),
        "router_name": "test_overload_router",
    })
    service = start_service(cfg)
    url = service.url + "/score"
    try:
        router = psutil.Process(ray.get(service.router.health.remote())["pid"])
        # capacity: two closed-loop clients (the queue never fills) for 4 s, after a warm-up request
        httpx.post(url, json={"items": _items("warm")}, timeout=60).raise_for_status()
        done, stop = [0], time.monotonic() + 4.0

        def closed_loop(c):
            n = 0
            while time.monotonic() < stop:
                httpx.post(url, json={"items": _items(f"cap{c}-{n}")}, timeout=60).raise_for_status()
                n += 1
                done[0] += 1

        threads = [threading.Thread(target=closed_loop, args=(c,)) for c in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        capacity = done[0] / 4.0
        rate = 10 * capacity
        rss_start = router.memory_info().rss
        records, queued, rss = [], [], []

        local = threading.local()

        def send(i):
            if not hasattr(local, "client"):  # keep-alive, as an RL trainer's client would
                local.client = httpx.Client(timeout=120)
            t0 = time.monotonic()
            try:
                r = local.client.post(url, json={"items": _items(f"load{i}")})
                body = r.json()
                records.append((r.status_code, time.monotonic() - t0, r.headers.get("retry-after"),
                                len(body.get("results", [])), [x["score"] for x in body.get("results", [])]))
            except Exception as err:  # noqa: BLE001 - reported by the assertion below
                records.append((type(err).__name__, time.monotonic() - t0, None, 0, []))

        start = time.monotonic()
        with cf.ThreadPoolExecutor(max_workers=64) as pool:
            futures, i = [], 0
            while (now := time.monotonic()) - start < LOAD_S:
                while i < (now - start) * rate:
                    futures.append(pool.submit(send, i))
                    i += 1
                if len(rss) < (now - start):  # about once a second
                    rss.append(router.memory_info().rss)
                    queued.append(ray.get(service.router.health.remote())["queued"])
                time.sleep(0.005)
            cf.wait(futures, timeout=300)
        statuses = [r[0] for r in records]
        accepted = [r for r in records if r[0] == 200]
        refused = [r for r in records if r[0] == 503]
        assert len(records) == i and set(statuses) <= {200, 503}, sorted(set(map(str, statuses)))
        assert all(r[3] == ITEMS_PER_REQUEST and all(0 <= s <= 1 for s in r[4]) for r in accepted)
        assert len(refused) > len(accepted), (len(refused), len(accepted))  # most of a 10x load is refused
        assert all(r[2] == "1" for r in refused)
        refused_p95 = sorted(r[1] for r in refused)[int(0.95 * len(refused))]
        assert refused_p95 < 1.0, (refused_p95, len(refused), len(accepted))
        assert max(queued) <= queue_bound, queued
        growth_mb = (max(rss) - rss_start) / 2**20
        assert growth_mb < 64, growth_mb
        served = len(accepted) / LOAD_S
        print(f"overload: capacity {capacity:.1f} req/s, offered {rate:.1f} req/s for {LOAD_S:.0f} s: "
              f"{len(accepted)} answered ({served:.1f} req/s), {len(refused)} refused with 503 "
              f"(p95 {1000 * refused_p95:.0f} ms), queue max {max(queued)}/{queue_bound}, router RSS "
              f"{rss_start / 2**20:.0f} -> {max(rss) / 2**20:.0f} MB")
    finally:
        service.shutdown()
