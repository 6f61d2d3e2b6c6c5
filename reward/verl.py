"""verl custom reward function backed by the GenRM reward service.

verl config:
    custom_reward_function:
      path: reward/verl.py
      name: compute_score          # or compute_score_batch with the batch reward manager
and set GENRM_REWARD_URL (and GENRM_REWARD_TOKEN if the service has one) in the workers'
environment. The question is read from `extra_info["question"]` (put it there in the verl dataset);
the ground truth is not shown to the verifier.
"""

from __future__ import annotations

_client = None


def _get_client():
    global _client
    if _client is None:
        from reward.client import client_from_env

        _client = client_from_env()
    return _client


def _question(extra_info) -> str:
    if isinstance(extra_info, dict) and isinstance(extra_info.get("question"), str):
        return extra_info["question"]
    raise ValueError("verl extra_info needs a 'question' string for the GenRM verifier")


def compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float:
    """verl's per-sample signature: returns the GenRM score in [0, 1]."""
    return _get_client().rewards([_question(extra_info)], [solution_str or "(empty)"])[0]


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos) -> list[float]:
    """verl's batch reward manager signature: one service call for the whole batch."""
    questions = [_question(e) for e in extra_infos]
    return _get_client().rewards(questions, [s or "(empty)" for s in solution_strs])
