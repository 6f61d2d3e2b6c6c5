"""TRL reward functions backed by the GenRM reward service.

A TRL reward function is a plain callable `(prompts, completions, **kwargs) -> list[float]`;
GRPOTrainer also accepts `async def` ones and runs them on its event loop, concurrently with
other async reward functions.

    from reward.trl import GenRMReward
    reward = GenRMReward(url="http://127.0.0.1:8000")          # or router=service.router (in-process)
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

The verifier needs the *question*: it is taken from the `question_column` dataset column when
present (TRL passes dataset columns as kwargs), else parsed out of the prompt (our generation
prompt format, or the last user message of a conversational prompt).
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Sequence

from genrm_rl.prompts import PromptFormat, get_prompt_format

log = logging.getLogger("genrm_rl.reward")


def _text(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict):  # conversational: list of messages
        users = [m for m in x if m.get("role") == "user"] or x
        return str(users[-1].get("content", ""))
    if isinstance(x, dict):
        return str(x.get("content", ""))
    raise TypeError(f"cannot read text from a {type(x).__name__}")


class _Base:
    def __init__(self, url: str = "", router=None, token: str = "", mode: str | None = None, k: int | None = None,
                 question_column: str = "question", prompt_format="compact", timeout: float = 600.0,
                 retries: int = 3, name: str = "genrm", history: int = 256, log_path: str = ""):
        if bool(url) == (router is not None):
            raise ValueError("give exactly one of url= (HTTP) or router= (in-process Ray handle)")
        self.url, self.router, self.token = url, router, token
        self.mode, self.k, self.timeout, self.retries = mode, k, timeout, retries
        self.question_column = question_column
        # a name, or a built PromptFormat (`chat` is built from the policy's tokenizer by the caller)
        self.fmt = prompt_format if isinstance(prompt_format, PromptFormat) else get_prompt_format(prompt_format)
        self.__name__ = name  # TRL logs rewards under the function's __name__
        self.last_latency_s: float | None = None
        self.last_scores: list[float] = []
        self.history: collections.deque = collections.deque(maxlen=history)
        """Recent calls as {"items", "scores", "latency_s"} (what the trainer was told)."""
        self.log_path = log_path

    def _record(self, items: list[dict], results: list[dict], t0: float) -> list[float]:
        self.last_latency_s = time.monotonic() - t0
        self.last_scores = [r["score"] for r in results]
        record = {"items": items, "scores": list(self.last_scores), "latency_s": self.last_latency_s}
        self.history.append(record)
        if self.log_path:  # every reward call, for auditing what the policy was rewarded for
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        return list(self.last_scores)

    def _items(self, prompts: Sequence, completions: Sequence, kwargs: dict) -> list[dict]:
        questions = kwargs.get(self.question_column)
        out = []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            q = questions[i] if questions is not None else self.fmt.question_of(_text(p))
            sol = _text(c).strip() or "(empty)"  # an empty completion is a wrong answer, not a bad request
            out.append({"question": q, "solution": sol})
        return out


class GenRMReward(_Base):
    """Synchronous reward function (HTTP or Ray handle)."""

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        items = self._items(prompts, completions, kwargs)
        t0 = time.monotonic()
        if self.router is not None:
            from reward.client import RayRewardClient

            results = RayRewardClient(self.router, self.timeout).score(items, self.mode, self.k)
        else:
            from reward.client import RewardClient

            client = RewardClient(self.url, self.token, self.timeout, self.retries)
            try:
                results = client.score(items, self.mode, self.k)
            finally:
                client.close()
        return self._record(items, results, t0)


class AsyncGenRMReward(_Base):
    """`async` reward function: TRL awaits it on its event loop (HTTP or Ray handle)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client = None

    async def __call__(self, prompts, completions, **kwargs) -> list[float]:
        items = self._items(prompts, completions, kwargs)
        t0 = time.monotonic()
        if self.router is not None:
            from reward.client import RayRewardClient

            results = await RayRewardClient(self.router, self.timeout).ascore(items, self.mode, self.k)
        else:
            from reward.client import AsyncRewardClient

            if self._client is None:
                self._client = AsyncRewardClient(self.url, self.token, self.timeout, self.retries)
            results = await self._client.score(items, self.mode, self.k)
        return self._record(items, results, t0)


def correctness_reward(task_name: str):
    """Rule-based reward: 1.0 when the task's checker accepts the completion's answer."""
    from genrm_rl.tasks import Problem, get_task

    task = get_task(task_name)

    def correct(prompts, completions, question, target, **kwargs) -> list[float]:
        out = []
        for q, t, c in zip(question, target, completions, strict=True):
            text = c if isinstance(c, str) else c[-1]["content"]
            out.append(float(task.is_correct(Problem("", task_name, q, t), text)))
        return out

    correct.__name__ = "correct"
    return correct
