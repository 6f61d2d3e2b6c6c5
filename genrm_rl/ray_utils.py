"""Connecting to Ray the same way in every job: an explicit address, RAY_ADDRESS, or a local cluster."""

from __future__ import annotations

import os


def ensure_ray(address: str = "", num_cpus: int | None = None, namespace: str = "genrm_rl") -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    # Ship only what workers import; .gitignore'd paths (venv, runs/) are excluded by Ray.
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, namespace=namespace, log_to_driver=True, include_dashboard=False)
