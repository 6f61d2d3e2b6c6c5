"""GPU-only checks (deselected by `make test` on machines without CUDA)."""

import pytest

pytestmark = pytest.mark.gpu


def test_bf16_deepspeed_training_and_scoring_on_gpu(tiny_model_dir, tmp_path):
    import torch

    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.launch import run_training
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    assert torch.cuda.is_available()
    cfg = from_dict(TrainConfig, {"objective": "genrm_cot", "model": tiny_model_dir, "output_dir": str(tmp_path),
                                  "launcher": "local", "data": {"num_problems": 100}, "max_steps": 10,
                                  "micro_batch_size": 8, "tensorboard": False})
    result = run_training(cfg)
    assert result["step"] == 10
    v = GenerativeVerifier(VerifierConfig(model=str(tmp_path / "model"), mode="cot", k=4, max_new_tokens=32,
                                          device="cuda"))
    r = v.score([("q", "s")])[0]
    assert len(r.votes) == 4 and 0 <= r.score <= 1
