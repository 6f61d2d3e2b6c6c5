"""Request parsing for the HTTP endpoints, as pure functions (unit-tested without a server).

Every malformed input raises `ServiceError` with a 4xx status and a message naming the field,
so the HTTP layer never answers a client mistake with a 500.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from genrm_rl.prompts import PromptFormat
from reward.router import ServiceError


def parse_json_body(body: bytes, max_bytes: int) -> dict:
    if len(body) > max_bytes:
        raise ServiceError(413, f"request body of {len(body)} bytes > max_body_bytes={max_bytes}")
    if not body.strip():
        raise ServiceError(400, "empty request body; send a JSON object")
    try:
        obj = json.loads(body)
    except RecursionError:
        raise ServiceError(400, "invalid JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, bad UTF-8, an integer beyond Python's digit limit
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


def split_query(query: str, prompt: str, tail_chars: int = 64) -> tuple[str, bool]:
    """The response inside an OpenRLHF query (the decoded prompt + response tokens).

    OpenRLHF decodes with `skip_special_tokens=False` and may left-truncate a long prompt, so the
    query need not start with `prompt`: the response is what follows the longest suffix of the
    prompt that the query starts with, else what follows the last occurrence of the prompt's tail
    (a re-decoded prompt can differ in whitespace before it). Returns (response, found); when no
    part of the prompt is found the whole query is the response."""
    if query.startswith(prompt):
        return query[len(prompt):], True
    for cut in range(1, len(prompt)):  # a left-truncated prompt: the query starts with a suffix of it
        if query.startswith(prompt[cut:]) and len(prompt) - cut >= min(tail_chars, len(prompt) // 2):
            return query[len(prompt) - cut:], True
    tail = prompt.strip()[-tail_chars:]
    at = query.rfind(tail) if tail else -1
    if at >= 0:
        return query[at + len(tail):], True
    return query, False


def strip_special_tokens(text: str, special: Sequence[str]) -> str:
    """`text` without the tokenizer's special-token strings (EOS, BOS, pad, chat markers) at its ends,
    and without EOS/pad text anywhere after the response's end."""
    changed = True
    while changed:
        changed = False
        stripped = text.strip()
        for tok in special:
            if tok and stripped.endswith(tok):
                text, changed = stripped[: -len(tok)], True
            elif tok and stripped.startswith(tok):
                text, changed = stripped[len(tok):], True
    return text.strip()


@dataclasses.dataclass(frozen=True)
class GetRewardParser:
    """OpenRLHF's remote reward protocol: `{"query": [...], "prompts": [...], "labels": [...]}`, each
    query being the decoded prompt + response. `question_from: label` takes the question from
    `labels` (OpenRLHF `--label_key question`) instead of parsing it out of the prompt."""

    fmt: PromptFormat
    max_items: int
    special_tokens: tuple[str, ...] = ()
    question_from: str = "prompt"

    @classmethod
    def for_service(cls, cfg) -> GetRewardParser:
        from genrm_rl.modeling import load_tokenizer
        from genrm_rl.prompts import get_prompt_format
        from genrm_rl.verifier import resolve_prompt_format

        tok = load_tokenizer(cfg.verifier.model)
        special = tuple(sorted({t for t in tok.all_special_tokens if t}, key=len, reverse=True))
        return cls(get_prompt_format(resolve_prompt_format(cfg.verifier), tok), cfg.max_items, special,
                   cfg.get_reward_question)

    def parse(self, obj: dict) -> list[dict]:
        """(question, response) items; a malformed request raises ServiceError (4xx), a well-formed one
        never does (an unsplittable query is scored whole)."""
        for field in ("query", "prompts"):
            if field not in obj:
                raise ServiceError(422, f"missing field {field!r} (OpenRLHF sends 'query', 'prompts', 'labels')")
            if not isinstance(obj[field], list):
                raise ServiceError(422, f"{field!r} must be a list, got {type(obj[field]).__name__}")
        queries, prompts, labels = obj["query"], obj["prompts"], obj.get("labels")
        if len(queries) != len(prompts):
            raise ServiceError(422, f"'query' has {len(queries)} entries but 'prompts' has {len(prompts)}")
        if labels is not None and not isinstance(labels, list):
            raise ServiceError(422, "'labels' must be a list when given")
        if not queries:
            raise ServiceError(422, "'query' is empty")
        if len(queries) > self.max_items:
            raise ServiceError(413, f"{len(queries)} queries > max_items={self.max_items}; split the request")
        if self.question_from == "label" and (labels is None or len(labels) != len(queries)):
            raise ServiceError(422, "this service reads the question from 'labels' (OpenRLHF --label_key): send one "
                                    "label per query")
        items = []
        for i, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
            if not isinstance(query, str) or not isinstance(prompt, str):
                raise ServiceError(422, f"query[{i}] and prompts[{i}] must be strings")
            response, _found = split_query(query, prompt)
            response = strip_special_tokens(response, self.special_tokens) or "(empty)"
            if self.question_from == "label":
                if not isinstance(labels[i], str) or not labels[i].strip():
                    raise ServiceError(422, f"labels[{i}] must be the question (a non-empty string)")
                question = labels[i]
            else:
                question = self.fmt.question_of(strip_special_tokens(prompt, self.special_tokens))
            items.append({"question": question, "solution": response})
        return items


def parse_get_reward_request(obj: dict, fmt: PromptFormat, max_items: int) -> list[dict]:
    """`GetRewardParser(fmt, max_items).parse(obj)` (no special tokens, question from the prompt)."""
    return GetRewardParser(fmt, max_items).parse(obj)
