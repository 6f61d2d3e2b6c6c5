"""Config of the reward service (`genrm-rl serve`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from genrm_rl.config import option
from genrm_rl.verifier import VerifierConfig


@dataclasses.dataclass
class ServeConfig:
    verifier: VerifierConfig = option(VerifierConfig, help="the verifier every replica loads")
    num_replicas: int = option(1, help="verifier replicas (one per GPU on GPU nodes)")
    replica_cpus: float = option(1.0, help="CPUs reserved per replica")
    replica_gpus: float = option(0.0, help="GPUs per replica (1 on GPU nodes)")
    max_batch_size: int = option(32, help="most (question, solution) pairs per replica call")
    max_wait_ms: float = option(10.0, help="longest a partial batch waits for more requests")
    batch_gap_ms: float = option(5.0, help="a partial batch is sent once no request has arrived for this long "
                                           "(a lone request does not wait the whole max_wait_ms)")
    max_inflight_per_replica: int = option(2, help="batches queued at one replica (2 overlaps transfer and compute)")
    cache_size: int = option(100_000, help="cached scores (LRU; 0 disables the cache)")
    max_queued_items: int = option(8192, help="items waiting for a batch beyond which new requests are refused at "
                                              "once with 503 + Retry-After (backpressure instead of unbounded memory "
                                              "and latency)")
    overload_retry_after_s: float = option(1.0, help="Retry-After sent with an overload 503")
    replica_check_s: float = option(10.0, help="how often replicas are health-checked (a replica that does not "
                                               "answer within replica_check_timeout_s is replaced); 0 = never")
    replica_check_timeout_s: float = option(60.0, help="a replica busier than this on a health check counts as dead")
    request_timeout_s: float = option(600.0, help="a request not answered by then fails with a timeout error")
    max_retries: int = option(3, help="re-dispatches of a batch whose replica died")
    router_name: str = option("genrm_reward_router", help="named Ray actor of the router")
    namespace: str = option("genrm_rl", help="Ray namespace")
    ray_address: str = option("", help="Ray cluster address ('' = RAY_ADDRESS or a local cluster)")
    http: bool = option(True, help="serve HTTP (uvicorn, in the router actor)")
    host: str = option("127.0.0.1", help="HTTP bind address (loopback unless told otherwise)")
    port: int = option(8000, help="HTTP port")
    access_log: bool = option(False, help="log every HTTP request (uvicorn's access log); off by default because at "
                                            "RL request rates the log lines cost CPU the verifier needs")
    auth_token: str = option("", help="if set, requests need 'Authorization: Bearer <token>'")
    max_body_bytes: int = option(8 * 1024 * 1024, help="largest request body")
    max_items: int = option(1024, help="most items in one request")
    max_text_chars: int = option(20_000, help="longest question+solution (or query) in characters")
    get_reward_question: Literal["prompt", "label"] = option(
        "prompt", help="/get_reward: parse the question out of the prompt, or take it from 'labels' (OpenRLHF "
                       "--label_key question)")

    def __post_init__(self):
        for name in ("num_replicas", "max_batch_size", "max_items", "max_body_bytes", "max_text_chars",
                     "max_inflight_per_replica", "max_queued_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.batch_gap_ms <= 0 or self.request_timeout_s <= 0:
            raise ValueError(f"need max_wait_ms >= 0, batch_gap_ms > 0 and request_timeout_s > 0, got "
                             f"{self.max_wait_ms}, {self.batch_gap_ms} and {self.request_timeout_s}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.http and not self.verifier.model:
            raise ValueError("verifier.model is required")
