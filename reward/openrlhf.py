"""OpenRLHF custom reward function file backed by the GenRM reward service.

Either point OpenRLHF at the service itself (it speaks the remote RM protocol):
    --remote_rm_url http://127.0.0.1:8000/get_reward
or pass this file, which calls the same endpoint (set GENRM_REWARD_URL):
    --remote_rm_url reward/openrlhf.py
"""

from __future__ import annotations

_client = None


def reward_func(queries, prompts, labels):
    """OpenRLHF signature: queries are prompt + response texts. Returns rewards/scores tensors."""
    import torch

    global _client
    if _client is None:
        from reward.client import client_from_env

        _client = client_from_env()
    reply = _client.get_reward(list(queries), list(prompts), list(labels) if labels is not None else None)
    rewards = torch.tensor(reply["rewards"], dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": {
        "genrm_forced_verdicts": torch.tensor(reply["extra_logs"]["genrm_forced_verdicts"], dtype=torch.float32)}}
