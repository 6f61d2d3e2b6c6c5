"""Process-level plumbing every job needs the same way: the Ray connection and a free local port.

Ray: an explicit address, else RAY_ADDRESS, else a local cluster. `import ray` happens inside the
function, so importing this module (and `genrm_rl`) stays cheap.
"""

from __future__ import annotations

import os
import socket


def ensure_ray(address: str = "", num_cpus: int | None = None, namespace: str = "genrm_rl") -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    # Ship only what workers import; .gitignore'd paths (venv, runs/) are excluded by Ray.
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=True)
    else:
        # The dashboard hosts Ray's State API, which Ray Train's placement-group cleaner polls every
        # few seconds; without it the cleaner cannot work and logs a warning per poll (hundreds a run).
        # Ray binds it to 127.0.0.1 unless told otherwise.
        ray.init(num_cpus=num_cpus, namespace=namespace, log_to_driver=True, include_dashboard=True,
                 dashboard_host="127.0.0.1")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
