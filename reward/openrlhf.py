"""OpenRLHF custom reward function file backed by the GenRM reward service.

Either point OpenRLHF (0.10.2+; before that the flag was --remote_rm_url) at the service itself,
which speaks the remote RM protocol:
    --reward.remote_url http://127.0.0.1:8000/get_reward
or pass this file, which calls the same endpoint (set GENRM_REWARD_URL):
    --reward.remote_url reward/openrlhf.py
To give the verifier the dataset's own question instead of parsing it out of the (possibly
chat-templated, possibly truncated) prompt: `--data.label_key question` on the OpenRLHF side and
`get_reward_question: label` in the service config.
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
