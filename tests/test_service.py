"""The reward service on a real local Ray cluster, over real HTTP on loopback."""

import collections
import concurrent.futures as cf
import json
import threading
import time

import httpx
import pytest

from genrm_rl.runtime import free_port

TOKEN = "test-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post(url, **kw):
    return httpx.post(url, headers={**AUTH, **kw.pop("headers", {})}, timeout=kw.pop("timeout", 120), **kw)


@pytest.fixture(scope="module")
def http_service(ray_session, tiny_model_dir):
    from genrm_rl.config import from_dict
    from reward.config import ServeConfig
    from reward.service import start_service

    cfg = from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "direct", "batch_size": 8},
        "num_replicas": 2, "replica_cpus": 0.25, "max_batch_size": 16, "max_wait_ms": 5,
        "port": free_port(), "router_name": "test_http_router", "max_items": 256, "max_body_bytes": 200_000,
        "auth_token": TOKEN,
    })
    service = start_service(cfg)
    yield service
    service.shutdown()


@pytest.fixture(scope="module")
def direct_verifier(tiny_model_dir):
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    return GenerativeVerifier(VerifierConfig(model=tiny_model_dir, mode="direct"))


def items(n, tag="x"):
    return [{"question": f"What is {tag} number {i}?", "solution": f"It is {i}. The answer is {i}."} for i in range(n)]


def test_score_endpoint_matches_direct_verifier(http_service, direct_verifier):
    batch = items(5)
    r = post(http_service.url + "/score", json={"items": batch})
    assert r.status_code == 200
    results = r.json()["results"]
    want = direct_verifier.score([(x["question"], x["solution"]) for x in batch])
    assert len(results) == 5
    assert [x["score"] for x in results] == pytest.approx([w.score for w in want], abs=1e-5)
    assert all(0 <= x["score"] <= 1 and x["mode"] == "direct" for x in results)


def test_second_http_service_on_a_taken_port_is_refused_clearly_and_another_port_works(
        http_service, tiny_model_dir):
    """Each service's HTTP server lives in its own router: a second service on a port in use is a
    ValueError naming the port (before it starts any replica, and leaving no router behind); on
    another port it serves beside the first, which keeps serving."""
    import dataclasses

    import ray

    from reward.service import start_service

    taken = dataclasses.replace(http_service.cfg, router_name="second_router")
    with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{http_service.cfg.port}"):
        start_service(taken)
    with pytest.raises(ValueError):
        ray.get_actor("second_router", namespace=taken.namespace)
    second = start_service(dataclasses.replace(taken, port=free_port(), num_replicas=1))
    try:
        assert second.url != http_service.url
        assert post(second.url + "/score", json={"items": items(1)}).status_code == 200
    finally:
        second.shutdown()
    assert post(http_service.url + "/score", json={"items": items(1)}).status_code == 200


def test_get_reward_openrlhf_protocol(http_service, direct_verifier):
    prompts = ["Q: What is 2+2?\nA: Let's think step by step.\n", "Q: Name a color.\nA: Let's think step by step.\n"]
    responses = ["2+2=4. The answer is 4.", "Blue. The answer is blue."]
    body = {"query": [p + r for p, r in zip(prompts, responses, strict=True)], "prompts": prompts, "labels": ["4", "blue"]}
    r = post(http_service.url + "/get_reward", json=body)
    assert r.status_code == 200
    out = r.json()
    want = direct_verifier.score([("What is 2+2?", responses[0]), ("Name a color.", responses[1])])
    assert out["rewards"] == pytest.approx([w.score for w in want], abs=1e-5)
    assert out["scores"] == out["rewards"] and "genrm_forced_verdicts" in out["extra_logs"]


def test_concurrent_clients_get_their_own_answers(http_service, direct_verifier):
    def client(i):
        batch = items(3, tag=f"client{i}")
        r = post(http_service.url + "/score", json={"items": batch})
        return batch, r.status_code, r.json()

    with cf.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(client, range(16)))
    for batch, status, body in replies:
        assert status == 200
        want = direct_verifier.score([(x["question"], x["solution"]) for x in batch])
        assert [x["score"] for x in body["results"]] == pytest.approx([w.score for w in want], abs=1e-5)
    metrics = httpx.get(http_service.url + "/stats", headers=AUTH, timeout=30).json()
    assert metrics["batches"] >= 1 and metrics["batch_size_max"] >= 2  # requests were batched together
    prom = httpx.get(http_service.url + "/metrics", headers=AUTH, timeout=30)
    assert prom.headers["content-type"].startswith("text/plain")
    text = prom.text
    assert "# TYPE genrm_requests_total counter" in text and "genrm_batch_size_bucket" in text
    assert "genrm_request_latency_seconds_count" in text and "genrm_replicas_alive 2.0" in text
    requests = next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("genrm_requests_total "))
    assert requests >= 16


def test_duplicates_are_computed_once_and_cached(http_service, direct_verifier):
    metrics = lambda: httpx.get(http_service.url + "/stats", headers=AUTH, timeout=30).json()  # noqa: E731
    before = metrics()
    pair = {"question": "What is dedup?", "solution": "It is once. The answer is once."}
    r = post(http_service.url + "/score", json={"items": [pair, pair, pair]})
    scores = [x["score"] for x in r.json()["results"]]
    assert len(set(scores)) == 1
    mid = metrics()
    assert mid["dedup_hits"] - before.get("dedup_hits", 0) == 2 and mid["items"] - before["items"] == 3
    again = post(http_service.url + "/score", json={"items": [pair]}).json()["results"][0]["score"]
    assert again == scores[0] and metrics()["cache_hits"] - mid.get("cache_hits", 0) == 1


BAD_BODIES = [
    (b"{not json", 400, "invalid JSON"),
    (b"", 400, "empty request body"),
    (b"[1, 2]", 422, "must be a JSON object"),
    (b'{"item": []}', 422, "unknown field"),
    (b'{"mode": "direct"}', 422, "missing field 'items'"),
    (b'{"items": "abc"}', 422, "'items' must be a list"),
    (b'{"items": []}', 422, "'items' is empty"),
    (b'{"items": [{"question": "q"}]}', 422, "items[0]: missing field(s) ['solution']"),
    (b'{"items": [{"question": 5, "solution": "s"}]}', 422, "items[0].question: expected a string"),
    (b'{"items": [{"question": "q", "solution": "   "}]}', 422, "items[0].solution: empty string"),
    (b'{"items": [{"question": "q", "solution": "s"}], "k": "many"}', 422, "'k' must be an integer"),
    (b'{"items": [{"question": "q", "solution": "s"}], "mode": "orm"}', 422, "mode 'orm' is not available"),
    (b'{"items": [{"question": "q", "solution": "s"}], "k": 0}', 422, "'k' must be an integer in 1..256"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_bad_input_gets_4xx_and_service_keeps_serving(http_service, body, status, message):
    r = post(http_service.url + "/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    ok = post(http_service.url + "/score", json={"items": items(1)})
    assert ok.status_code == 200


def test_oversized_inputs(http_service):
    huge_text = {"items": [{"question": "q", "solution": "x" * 30_000}]}
    r = post(http_service.url + "/score", json=huge_text)
    assert r.status_code == 413 and "max_text_chars" in r.json()["error"]
    many = {"items": items(2000)}
    r = post(http_service.url + "/score", json=many)
    assert r.status_code == 413 and ("max_items" in r.json()["error"] or "max_body_bytes" in r.json()["error"])
    r = post(http_service.url + "/score", json={"items": items(300)})
    assert r.status_code == 413 and "max_items=256" in r.json()["error"]
    body = json.dumps({"items": [{"question": "q" * 250_000, "solution": "s"}]}).encode()
    r = post(http_service.url + "/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]
    bad = post(http_service.url + "/get_reward", json={"query": ["abc"], "prompts": ["xyz"], "labels": "x"})
    assert bad.status_code == 422 and "'labels' must be a list" in bad.json()["error"]
    assert httpx.get(http_service.url + "/health", timeout=30).json()["replicas_alive"] == 2


def test_python_clients_and_adapters(http_service, direct_verifier, monkeypatch):
    from reward.client import AsyncRewardClient, RewardClient, RewardServiceError
    from reward.trl import AsyncGenRMReward, GenRMReward

    want = [w.score for w in direct_verifier.score([("What is 2+2?", "4. The answer is 4.")])]
    client = RewardClient(http_service.url, token=TOKEN)
    assert client.rewards(["What is 2+2?"], ["4. The answer is 4."]) == pytest.approx(want, abs=1e-5)
    with pytest.raises(RewardServiceError, match="422.*empty string"):
        client.score([{"question": "q", "solution": ""}])

    import asyncio

    async def run_async():
        c = AsyncRewardClient(http_service.url, token=TOKEN)
        out = await c.rewards(["What is 2+2?"], ["4. The answer is 4."])
        await c.aclose()
        return out

    assert asyncio.run(run_async()) == pytest.approx(want, abs=1e-5)
    prompts = ["Q: What is 2+2?\nA: Let's think step by step.\n"]
    for fn in (GenRMReward(url=http_service.url, token=TOKEN), GenRMReward(router=http_service.router)):
        assert fn(prompts, ["4. The answer is 4."]) == pytest.approx(want, abs=1e-5)
    assert asyncio.run(AsyncGenRMReward(router=http_service.router)(prompts, ["4. The answer is 4."])) == pytest.approx(want, abs=1e-5)
    # conversational prompts and an explicit question column
    conv = [[{"role": "user", "content": "Q: What is 2+2?\nA: Let's think step by step.\n"}]]
    assert GenRMReward(url=http_service.url, token=TOKEN)(conv, [[{"role": "assistant", "content": "4. The answer is 4."}]]) == pytest.approx(want, abs=1e-5)
    assert GenRMReward(url=http_service.url, token=TOKEN)(["anything"], ["4. The answer is 4."], question=["What is 2+2?"]) == pytest.approx(want, abs=1e-5)

    monkeypatch.setenv("GENRM_REWARD_URL", http_service.url)
    monkeypatch.setenv("GENRM_REWARD_TOKEN", TOKEN)
    import reward.openrlhf as openrlhf
    import reward.verl as verl

    verl._clients.clear()
    openrlhf._client = None
    got = asyncio.run(verl.compute_score("last_letter", "4. The answer is 4.", "4", {"question": "What is 2+2?"}))
    assert got["score"] == pytest.approx(want[0], abs=1e-5)
    got = verl.compute_score_sync("last_letter", "4. The answer is 4.", "4", {"question": "What is 2+2?"})
    assert got["score"] == pytest.approx(want[0], abs=1e-5)
    out = openrlhf.reward_func([prompts[0] + "4. The answer is 4."], prompts, ["4"])
    assert out["rewards"].tolist() == pytest.approx(want, abs=1e-5)


def test_auth_token_required(http_service):
    body = {"items": items(1)}
    assert httpx.post(http_service.url + "/score", json=body, timeout=30).status_code == 401
    r = httpx.post(http_service.url + "/score", json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert httpx.get(http_service.url + "/metrics", timeout=30).status_code == 401
    assert httpx.get(http_service.url + "/health", timeout=30).status_code == 200  # probes need no token
    assert post(http_service.url + "/score", json=body).status_code == 200


def test_unreachable_service_fails_clearly():
    from reward.client import RewardClient, RewardServiceError

    client = RewardClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RewardServiceError, match="cannot reach"):
        client.score([{"question": "q", "solution": "s"}])


def test_killed_replica_mid_load_loses_nothing(ray_session, tiny_model_dir, direct_verifier):
    """Kill one of two replicas while 24 requests are in flight: every request is answered exactly
    once with the right scores, the dead replica is replaced."""
    import ray

    from genrm_rl.config import from_dict
    from reward.config import ServeConfig
    from reward.service import start_service

    cfg = from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "cot", "k": 2, "max_new_tokens": 96, "batch_size": 4},
        "num_replicas": 2, "replica_cpus": 0.25, "max_batch_size": 4, "max_wait_ms": 1, "http": False,
        "router_name": "test_kill_router", "cache_size": 0,
    })
    service = start_service(cfg)
    client = service.client()
    try:
        requests = [items(2, tag=f"kill{i}") for i in range(24)]
        answers: dict[int, list] = {}
        errors = []

        def run(i):
            try:
                answers[i] = client.score(requests[i])
            except Exception as err:  # noqa: BLE001 - the assertion below reports it
                errors.append(err)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while ray.get(service.router.health.remote())["inflight"][0] == 0 and time.time() < deadline:
            time.sleep(0.01)  # kill replica 0 while it holds a batch, not before or after the load
        victim = ray.get(service.router.replica_handles.remote())[0]
        ray.kill(victim, no_restart=True)
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors
        assert sorted(answers) == list(range(24))
        for _i, res in answers.items():
            assert len(res) == 2 and all(0 <= r["score"] <= 1 and len(r["votes"]) == 2 for r in res)
        metrics = ray.get(service.router.get_metrics.remote())
        assert metrics["replica_deaths"] == 1
        deadline = time.time() + 120
        while ray.get(service.router.health.remote())["replicas_alive"] < 2 and time.time() < deadline:
            time.sleep(1)
        assert ray.get(service.router.health.remote())["replicas_alive"] == 2
        assert metrics["items"] == 48
    finally:
        service.shutdown()


def _kill_router_under_load(service, requests, client_for):
    """One thread per request list, each sending it 3 times through `client_for(i)`. Once half the
    threads have their first answer (the others' first requests still waiting in the router), the
    router is killed as a crash and Ray restarts it; the threads send their other requests once the
    restarted router answers, so those surely meet the new router, whatever the machine's speed (a
    fixed delay before the kill let a fast run finish all its requests in the old router, and the
    test's next call then met the dying one). Returns the answers and calls per thread, the errors,
    and the seconds from the kill to the last answer."""
    import ray

    answers: dict[int, list] = collections.defaultdict(list)
    calls, errors, go = collections.Counter(), [], threading.Event()
    first_answers, half, restarted = [0], threading.Event(), threading.Event()
    lock = threading.Lock()
    old_pid = ray.get(service.router.health.remote())["pid"]

    def run(i):
        client = client_for(i)
        go.wait()
        for n in range(3):
            if n == 1:
                restarted.wait(timeout=180)
            try:
                calls[i] += 1
                answers[i].append(client.score(requests[i]))
            except Exception as err:  # noqa: BLE001 - the caller's assertion reports it
                errors.append(err)
            if n == 0:
                with lock:
                    first_answers[0] += 1
                    if first_answers[0] >= len(requests) // 2:
                        half.set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    go.set()
    half.wait(timeout=120)
    t_kill = time.monotonic()
    ray.kill(service.router, no_restart=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ray retries this call on the restarted router
        if ray.get(service.router.health.remote(), timeout=120)["pid"] != old_pid:
            break
        time.sleep(0.1)
    restarted.set()
    for t in threads:
        t.join(timeout=240)
    return answers, calls, errors, time.monotonic() - t_kill


@pytest.mark.slow
def test_killed_router_under_load_recovers_and_answers_every_request_once(ray_session, tiny_model_dir, direct_verifier):
    """Kill the router itself while 32 clients are waiting: Ray restarts it (its replicas die with it
    and it starts new ones, once, however many retried calls arrive together) and every client gets
    exactly one answer, equal to the verifier's, after a transparent retry. Recovery time is printed."""
    import ray

    from genrm_rl.config import from_dict
    from reward.config import ServeConfig
    from reward.service import start_service

    cfg = from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "direct", "batch_size": 8}, "num_replicas": 1,
        "replica_cpus": 0.25, "max_batch_size": 8, "max_wait_ms": 1, "http": False,
        "router_name": "test_router_kill", "cache_size": 0,
    })
    from ray.util.state import list_actors

    def live_replicas():
        return len(list_actors(address=ray.get_runtime_context().gcs_address, limit=1000,
                               filters=[("class_name", "=", "VerifierReplica"), ("state", "=", "ALIVE")]))

    service = start_service(cfg)
    client = service.client()
    try:
        first_pid = ray.get(service.router.health.remote())["pid"]
        replicas_before = live_replicas()
        requests = [items(2, tag=f"rk{i}") for i in range(32)]
        answers, calls, errors, recovered = _kill_router_under_load(service, requests, lambda i: client)
        assert not errors, errors[:3]
        assert all(len(answers[i]) == calls[i] == 3 for i in range(32))
        health = ray.get(service.router.health.remote())
        assert health["pid"] != first_pid and health["replicas_alive"] == 1 and health["replicas"] == 1
        # the restarted router started one replica, not one per retried call (its old one died with it)
        assert ray.get(service.router.get_metrics.remote())["replicas_started"] == 1
        deadline = time.time() + 30
        while live_replicas() != replicas_before and time.time() < deadline:
            time.sleep(0.5)
        assert live_replicas() == replicas_before
        want = [r.score for r in direct_verifier.score([(x["question"], x["solution"]) for x in requests[0]])]
        for i in range(32):
            for got in answers[i]:
                assert len(got) == 2
        assert [r["score"] for r in answers[0][-1]] == pytest.approx(want, abs=1e-5)
        print(f"router killed under 32-client load: all 96 requests answered once; load finished "
              f"{recovered:.1f}s after the kill")
    finally:
        service.shutdown()


def test_request_timeout_is_a_clear_error(ray_session, tiny_model_dir):
    from genrm_rl.config import from_dict
    from reward.client import RayRewardClient, RewardServiceError
    from reward.config import ServeConfig
    from reward.service import start_service

    cfg = from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "cot", "k": 8, "max_new_tokens": 400},
        "num_replicas": 1, "replica_cpus": 0.25, "http": False, "router_name": "test_timeout_router",
        "request_timeout_s": 0.2,
    })
    service = start_service(cfg)
    try:
        with pytest.raises(RewardServiceError, match=r"504.*not answered within 0.2s"):
            RayRewardClient(service.router, retries=0).score(items(4))
        # the router keeps working on a timed-out request, so the default client's retries of the 504
        # pick up the same items (in flight or cached) instead of starting them again
        got = RayRewardClient(service.router, retries=50, backoff=0.2).score(items(4))
        assert len(got) == 4 and all(0 <= r["score"] <= 1 for r in got)
    finally:
        service.shutdown()


def test_batch_window_waits_for_a_burst_but_not_for_a_lone_request(ray_session, tiny_model_dir):
    """max_wait_ms is long (20 s): a burst of single-item requests still leaves as one batch once
    arrivals stop for batch_gap_ms, and a lone request is sent after the gap, not the whole wait."""
    import ray

    from genrm_rl.config import from_dict
    from reward.config import ServeConfig
    from reward.service import start_service

    with pytest.raises(ValueError, match="batch_gap_ms > 0"):
        from_dict(ServeConfig, {"verifier": {"model": tiny_model_dir}, "batch_gap_ms": 0})
    cfg = from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "direct", "batch_size": 8}, "num_replicas": 1,
        "replica_cpus": 0.25, "max_batch_size": 8, "max_wait_ms": 20_000, "batch_gap_ms": 1_000,
        "max_inflight_per_replica": 1, "http": False, "router_name": "test_window_router", "cache_size": 0,
    })
    service = start_service(cfg)
    client = service.client()
    try:
        t0 = time.monotonic()
        assert len(client.score(items(1, tag="lone"))) == 1
        assert time.monotonic() - t0 < 10, "a lone request waited for max_wait_ms"
        before = ray.get(service.router.get_metrics.remote())
        burst = items(6, tag="burst")
        with cf.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda item: client.score([item]), burst))
        after = ray.get(service.router.get_metrics.remote())
        assert all(len(a) == 1 for a in answers)
        assert after["batches"] - before["batches"] == 1 and after["batch_size_max"] == 6
    finally:
        service.shutdown()


def test_killed_router_under_http_load_comes_back_on_its_port_and_answers_every_request(
        ray_session, tiny_model_dir, direct_verifier):
    """The HTTP server lives in the router: kill the router while 16 HTTP clients are sending, and
    Ray's restart brings the server back on the same port; the project's `RewardClient` retries the
    refused or reset connections, so every request gets its answer, equal to the verifier's."""
    import ray

    from genrm_rl.config import from_dict
    from reward.client import RewardClient
    from reward.config import ServeConfig
    from reward.service import start_service

    cfg = from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "direct", "batch_size": 8}, "num_replicas": 1,
        "replica_cpus": 0.25, "max_batch_size": 8, "max_wait_ms": 1, "port": free_port(),
        "router_name": "test_http_router_kill", "cache_size": 0,
    })
    service = start_service(cfg)
    try:
        first_pid = ray.get(service.router.health.remote())["pid"]
        requests = [items(2, tag=f"hk{i}") for i in range(16)]
        answers, _, errors, recovered = _kill_router_under_load(
            service, requests, lambda i: RewardClient(service.url, timeout=120))
        assert not errors, errors[:3]
        assert all(len(answers[i]) == 3 for i in range(16))
        health = httpx.get(service.url + "/health", timeout=30).json()
        assert health["pid"] != first_pid and health["replicas_alive"] == 1 and health["url"] == service.url
        want = [r.score for r in direct_verifier.score([(x["question"], x["solution"]) for x in requests[5]])]
        assert [r["score"] for r in answers[5][-1]] == pytest.approx(want, abs=1e-5)
        print(f"router killed under 16 HTTP clients: all 48 requests answered; load finished "
              f"{recovered:.1f}s after the kill")
    finally:
        service.shutdown()


def test_a_taken_port_is_a_clear_error_or_waited_for():
    """`bind` names the taken port; `bind_when_free` (what a restarted router uses) gets the port
    once the process that held it lets go."""
    import asyncio
    import socket

    from reward.http import bind, bind_when_free

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}"):
        bind("127.0.0.1", port)

    async def release_then_bind():
        asyncio.get_running_loop().call_later(0.5, holder.close)
        return await bind_when_free("127.0.0.1", port, wait_s=10)

    sock = asyncio.run(release_then_bind())
    assert sock.getsockname()[1] == port
    sock.close()
    held = bind("127.0.0.1", port)  # without a wait, a taken port fails at once
    try:
        with pytest.raises(ValueError):
            asyncio.run(bind_when_free("127.0.0.1", port, wait_s=0))
    finally:
        held.close()
