"""verl custom reward function backed by the GenRM reward service (verl 0.9 reward loop).

verl config (0.9):
    reward:
      custom_reward_function:
        path: reward/verl.py
        name: compute_score
and set GENRM_REWARD_URL (and GENRM_REWARD_TOKEN if the service has one) in the reward workers'
environment. verl's reward-loop managers (naive, dapo, limited, ...) call
`compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **kwargs)` per
sample and await it when it is an `async def`, so many samples' calls are in flight at once and
the service batches them. The question is read from `extra_info["question"]` (put it there in the
verl dataset's `extra_info`); the ground truth is never shown to the verifier. The returned dict's
`score` is the reward; the other keys are logged by verl as reward extra info.

`compute_score_sync` is the same for callers that cannot await (verl before 0.9, scripts). verl's
legacy batch reward manager is no longer reachable from its config, so there is no batch variant.
"""

from __future__ import annotations

_clients: dict = {}


def _question(extra_info) -> str:
    if isinstance(extra_info, dict) and isinstance(extra_info.get("question"), str) and extra_info["question"].strip():
        return extra_info["question"]
    raise ValueError("verl extra_info needs a 'question' string for the GenRM verifier "
                     "(add it to each row's extra_info in the verl dataset)")


def _client(kind: str):
    if kind not in _clients:
        import os

        from reward.client import AsyncRewardClient, client_from_env

        sync = client_from_env()
        _clients["sync"] = sync
        _clients["async"] = AsyncRewardClient(sync.url, os.environ.get("GENRM_REWARD_TOKEN", ""))
    return _clients[kind]


def _result(r: dict) -> dict:
    return {"score": float(r["score"]), "genrm_votes": len(r.get("votes") or []),
            "genrm_forced_verdicts": int(r.get("num_forced", 0))}


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl 0.9's reward-loop signature: {"score": GenRM reward in [0, 1], "genrm_votes", "genrm_forced_verdicts"}."""
    item = {"question": _question(extra_info), "solution": (solution_str or "").strip() or "(empty)"}
    return _result((await _client("async").score([item]))[0])


def compute_score_sync(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """The same, blocking."""
    item = {"question": _question(extra_info), "solution": (solution_str or "").strip() or "(empty)"}
    return _result(_client("sync").score([item])[0])
