"""Session fixtures: tiny models built once, one Ray cluster for the whole run.

Nothing is downloaded: models are created from a config with `genrm_rl.tiny`, saved with
`save_pretrained` and loaded back through `from_pretrained` like any user model.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random tiny Llama + tokenizer directory (the base every test model starts from)."""
    from genrm_rl.tiny import TinyModelSpec, make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("models") / "tiny", TinyModelSpec(num_layers=2)))


@pytest.fixture(scope="session")
def trained_verifier_dir(tmp_path_factory, tiny_model_dir):
    """A tiny GenRM-CoT + direct verifier trained for a few seconds on last-letter oracle data, so it
    writes rationales that reach the verdict cue (plain single-process training, no Ray)."""
    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.launch import run_training

    out = tmp_path_factory.mktemp("verifier")
    cfg = from_dict(TrainConfig, {
        "objective": "genrm_cot", "model": tiny_model_dir, "output_dir": str(out), "launcher": "local",
        "engine": "torch", "data": {"task": "last_letter", "num_problems": 300, "val_fraction": 0.0},
        "max_steps": 250, "micro_batch_size": 16, "lr": 3e-3, "log_every": 50, "tensorboard": False,
    })
    run_training(cfg)
    return str(out / "model")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster per test session (2 CPUs, like the CI machine)."""
    import ray

    if not ray.is_initialized():
        # its own dashboard (State API): without one, Ray Train's placement-group cleaner falls back to the
        # default dashboard address, which another local cluster (a running `make demo`) may own
        ray.init(num_cpus=2, namespace="genrm_rl", include_dashboard=True, dashboard_host="127.0.0.1",
                 log_to_driver=False)
    yield ray
    ray.shutdown()
