"""Start and stop the reward service (router + replicas, optional HTTP), in-process or as a job."""

from __future__ import annotations

import dataclasses
import logging

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

        if self.url:
            from ray import serve

            serve.delete(self.cfg.router_name)
            # Serve's HTTP proxy keeps the port it was first started with for the cluster's lifetime;
            # stopping it once no app is left lets the next service bind the port it asks for.
            if not serve.status().applications:
                serve.shutdown()
        ray.get(self.router.shutdown.remote())
        ray.kill(self.router, no_restart=True)


def start_service(cfg: ServeConfig) -> RewardService:
    """Create the router actor (named, so other processes on the cluster find it), start and load
    every replica, then the HTTP front if `cfg.http`."""
    import ray

    from genrm_rl.runtime import ensure_ray
    from reward.router import RewardRouter

    ensure_ray(cfg.ray_address, namespace=cfg.namespace)
    # Ray restarts a router that dies (the replicas it owned die with it and the new one starts its
    # own); a call in flight when it died is retried on the restarted router.
    router = ray.remote(RewardRouter).options(
        name=cfg.router_name, namespace=cfg.namespace, num_cpus=0, max_concurrency=100_000, get_if_exists=False,
        max_restarts=-1, max_task_retries=3,
    ).remote(to_dict(cfg))
    health = ray.get(router.start.remote())
    log.info("reward router ready: %s", health)
    url = None
    if cfg.http:
        from reward.http import start_http

        url = start_http(cfg)
        log.info("reward service listening on %s", url)
    return RewardService(cfg, router, url)


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
