"""Process-level plumbing every job needs the same way: the Ray connection, a free local port, the
training stages' progress bar, and the facts about this machine that decide whether a re-run gives
the same numbers.

Ray: an explicit address, else RAY_ADDRESS, else a local cluster. `import ray` happens inside the
function, so importing this module (and `genrm_rl`) stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("genrm_rl.runtime")

#: Ray's notice, at WARNING on every new local cluster, that it turned token authentication on (its
#: default in recent releases). Nothing to act on: it is the safe default, and we keep it.
RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"
#: Ray's INFO line for a new local cluster; `ensure_ray` logs its own line with the same dashboard address.
RAY_START_NOTICE = "Started a local Ray instance."
_RAY_NOTICES = {"ray._private.authentication.authentication_token_setup": RAY_AUTH_NOTICE,
                "ray._private.worker": RAY_START_NOTICE}


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
        with quiet_ray_start_notices() as notices:
            context = ray.init(num_cpus=num_cpus, namespace=namespace, log_to_driver=True, include_dashboard=True,
                               dashboard_host="127.0.0.1")
        said = ["Ray: started a local cluster"]
        url = getattr(context, "dashboard_url", "") or ""  # host:port, as Ray's own line shows it after http://
        if url:
            said.append(f"dashboard at {url if '://' in url else 'http://' + url}")
        if notices[RAY_AUTH_NOTICE].dropped:
            said.append("token authentication is on (Ray's default; RAY_AUTH_MODE=disabled turns it off)")
        log.info("; ".join(said))


class _DropRecords(logging.Filter):
    """Drops the records whose message starts with `prefix`, counting them."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.dropped = prefix, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(self.prefix):
            self.dropped += 1
            return False
        return True


@contextlib.contextmanager
def quiet_ray_start_notices():
    """Inside it, Ray's token-authentication notice (`RAY_AUTH_NOTICE`) and its new-cluster line
    (`RAY_START_NOTICE`) are not logged; every other record of those Ray modules is. Yields the
    filters by notice, each counting what it dropped. Why: the console is for stages, progress and
    real warnings; these came once per job start with nothing to do about them, and `ensure_ray`
    says the same once, at INFO. Setting RAY_AUTH_MODE=token ourselves would silence the first too,
    but only before Ray reads its config, which an earlier `import ray` may already have done."""
    filters = {notice: _DropRecords(notice) for notice in _RAY_NOTICES.values()}
    loggers = [(logging.getLogger(name), filters[notice]) for name, notice in _RAY_NOTICES.items()]
    for ray_log, drop in loggers:
        ray_log.addFilter(drop)
    try:
        yield filters
    finally:
        for ray_log, drop in loggers:
            ray_log.removeFilter(drop)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def training_bar(total: int, desc: str, initial: int = 0, disable: bool = False):
    """The progress bar of every training stage (SFT under DeepSpeed, DPO, RL). It redraws at most every
    5 s: in a log file every redraw stays, and a loss set with `set_postfix(..., refresh=False)` shows
    at the next one."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=disable, mininterval=5, dynamic_ncols=True)


def cpu_model() -> str:
    """The processor's model name as the OS reports it ('' where it does not say). On Linux this is
    /proc/cpuinfo's `model name` (e.g. "AMD EPYC ..." or "Intel(R) Xeon(R) ..."); elsewhere
    `platform.processor()`."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or ""


def numerics_fingerprint() -> dict:
    """What float results depend on besides the code, config and seed: the torch build, the kernels
    it picks for this processor, and the processor itself. A re-run reproduces a run bit for bit on the
    same machine type (measured: seed 1 of the quickstart twice on one machine, every weight equal),
    not across processors. The same torch build with AVX512 kernels and 2 threads gave seed 0's
    generator another set of weights on an Intel Xeon than on an AMD EPYC (greedy dev accuracy 0.59
    against 0.16 after 1,000 steps): MKL's float32 GEMM takes a code path per processor, and pinning
    it (MKL_CBWR) to any of the six branches tried did not give the EPYC's weights (docs/experiments.md, HW1)."""
    import torch

    fact = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "cpu": cpu_model()}
    if os.environ.get("MKL_CBWR"):
        fact["mkl_cbwr"] = os.environ["MKL_CBWR"]
    if torch.cuda.is_available():
        fact["cuda_device"] = torch.cuda.get_device_name(0)
    return fact
