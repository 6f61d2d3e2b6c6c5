"""Start and stop the reward service (router + replicas, optional HTTP), in-process or as a job."""

from __future__ import annotations

import dataclasses
import logging
import time

from genrm_rl.config import to_dict
from reward.config import ServeConfig

log = logging.getLogger("genrm_rl.reward")


@dataclasses.dataclass
class RewardService:
    cfg: ServeConfig
    router: object
    url: str | None

    def client(self):
        """An in-process client (Ray handle) for this service."""
        from reward.client import RayRewardClient

        return RayRewardClient(self.router)

    def shutdown(self) -> None:
        import ray

        ray.get(self.router.shutdown.remote())  # stops the HTTP server (frees the port) and the replicas
        kill_router(self.router, self.cfg.router_name, self.cfg.namespace)


def kill_router(router, name: str, namespace: str, timeout_s: float = 30.0) -> None:
    """Kill the router and return once its name no longer resolves. Why wait: right after `ray.kill`,
    `ray.get_actor` can still return the dead actor (ray-project/ray#20129, #44083), so a caller that
    looks the name up or starts a router of the same name right after (a refused start retried on
    another port, a restart after `shutdown`) would meet it now and then; the service tests caught it
    once in a full-suite run."""
    import ray

    ray.kill(router, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:  # no actor of that name: released
            return
        time.sleep(0.05)
    log.warning("router %r is still registered %.0f s after it was killed", name, timeout_s)


def start_service(cfg: ServeConfig) -> RewardService:
    """Create the router actor (named, so other processes on the cluster find it), start and load
    every replica, and its HTTP server if `cfg.http`. A port in use is a ValueError naming it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from genrm_rl.runtime import ensure_ray
    from reward.router import RewardRouter

    ensure_ray(cfg.ray_address, namespace=cfg.namespace)
    # Ray restarts a router that dies (the replicas it owned die with it and the new one starts its
    # own, and its HTTP server on the same port); a call in flight when it died is retried on the
    # restarted router. It runs on this node (soft: elsewhere if this node is gone), so the HTTP
    # address is the one the caller started it on.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    router = ray.remote(RewardRouter).options(
        name=cfg.router_name, namespace=cfg.namespace, num_cpus=0, max_concurrency=100_000, get_if_exists=False,
        max_restarts=-1, max_task_retries=3, scheduling_strategy=here,
    ).remote(to_dict(cfg))
    try:
        health = ray.get(router.start.remote())
    except ray.exceptions.RayTaskError as err:
        kill_router(router, cfg.router_name, cfg.namespace)
        if isinstance(err.cause, ValueError):
            raise ValueError(str(err.cause)) from None
        raise
    log.info("reward router ready: %s", health)
    if health["url"]:
        log.info("reward service listening on %s", health["url"])
    return RewardService(cfg, router, health["url"])


def serve_verifier(verifier, **serve) -> RewardService:
    """Start a service for one `VerifierConfig` (no HTTP unless `http=True`): the one way the
    reproduction, the RL job and the benchmarks assemble an in-process service. `serve` holds any
    other `ServeConfig` field (replicas, CPUs, batch limits, router name...)."""
    from genrm_rl.config import from_dict

    return start_service(from_dict(ServeConfig, {"verifier": to_dict(verifier), "http": False, **serve}))


def connect(router_name: str = "genrm_reward_router", namespace: str = "genrm_rl", address: str = ""):
    """A client for a router already running on the cluster (e.g. started by `genrm-rl serve`)."""
    import ray

    from genrm_rl.runtime import ensure_ray
    from reward.client import RayRewardClient

    ensure_ray(address, namespace=namespace)
    return RayRewardClient(ray.get_actor(router_name, namespace=namespace))
