"""Request parsing for the HTTP endpoints, as pure functions (unit-tested without a server).

Every malformed input raises `ServiceError` with a 4xx status and a message naming the field,
so the HTTP layer never answers a client mistake with a 500.
"""

from __future__ import annotations

import json

from genrm_rl.prompts import PromptFormat
from reward.router import ServiceError


def parse_json_body(body: bytes, max_bytes: int) -> dict:
    if len(body) > max_bytes:
        raise ServiceError(413, f"request body of {len(body)} bytes > max_body_bytes={max_bytes}")
    if not body.strip():
        raise ServiceError(400, "empty request body; send a JSON object")
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ServiceError(400, f"invalid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ServiceError(422, f"request body must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_score_request(obj: dict) -> tuple[list, str | None, int | None]:
    """`{"items": [{"question", "solution"}], "mode"?, "k"?}`; items are checked by the router."""
    unknown = sorted(set(obj) - {"items", "mode", "k"})
    if unknown:
        raise ServiceError(422, f"unknown field(s) {unknown}; expected 'items', 'mode', 'k'")
    if "items" not in obj:
        raise ServiceError(422, "missing field 'items'")
    mode, k = obj.get("mode"), obj.get("k")
    if mode is not None and not isinstance(mode, str):
        raise ServiceError(422, f"'mode' must be a string, got {type(mode).__name__}")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool)):
        raise ServiceError(422, f"'k' must be an integer, got {type(k).__name__}")
    return obj["items"], mode, k


def question_from_prompt(prompt: str, fmt: PromptFormat) -> str:
    """The question inside a generation prompt built with `fmt`; else the prompt itself."""
    head = fmt.header + "Q: "
    tail = "\nA: Let's think step by step.\n"
    stripped = prompt[len(head):] if prompt.startswith(head) else prompt
    if stripped.endswith(tail):
        stripped = stripped[: -len(tail)]
    elif tail.strip() in stripped:
        stripped = stripped.split("\nA: Let's think step by step.")[0]
    return stripped.strip() or prompt


def parse_get_reward_request(obj: dict, fmt: PromptFormat, max_items: int) -> list[tuple[str, str]]:
    """OpenRLHF remote reward protocol: `{"query": [...], "prompts": [...], "labels": [...]}`,
    each query being prompt + response. Returns (question, response) pairs."""
    for field in ("query", "prompts"):
        if field not in obj:
            raise ServiceError(422, f"missing field {field!r} (OpenRLHF sends 'query', 'prompts', 'labels')")
        if not isinstance(obj[field], list):
            raise ServiceError(422, f"{field!r} must be a list, got {type(obj[field]).__name__}")
    queries, prompts = obj["query"], obj["prompts"]
    if len(queries) != len(prompts):
        raise ServiceError(422, f"'query' has {len(queries)} entries but 'prompts' has {len(prompts)}")
    if "labels" in obj and obj["labels"] is not None and not isinstance(obj["labels"], list):
        raise ServiceError(422, "'labels' must be a list when given")
    if not queries:
        raise ServiceError(422, "'query' is empty")
    if len(queries) > max_items:
        raise ServiceError(413, f"{len(queries)} queries > max_items={max_items}; split the request")
    pairs = []
    for i, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
        if not isinstance(query, str) or not isinstance(prompt, str):
            raise ServiceError(422, f"query[{i}] and prompts[{i}] must be strings")
        if not query.startswith(prompt):
            raise ServiceError(422, f"query[{i}] does not start with prompts[{i}]; query must be prompt + response")
        pairs.append({"question": question_from_prompt(prompt, fmt), "solution": query[len(prompt):]})
    return pairs
