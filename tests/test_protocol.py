"""reward/protocol.py on literal inputs: pure parsing, no server, no Ray."""

import pytest

from genrm_rl.prompts import get_prompt_format
from reward.protocol import parse_get_reward_request, parse_json_body, parse_score_request
from reward.router import ServiceError

FMT = get_prompt_format("compact")
PROMPT = "Q: What is 2+2?\nA: Let's think step by step.\n"


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"", 400, "empty request body"),
    (b"  \n", 400, "empty request body"),
    (b"{oops", 400, "invalid JSON"),
    (b"\xff\xfe", 400, "invalid JSON"),
    (b"[1]", 422, "must be a JSON object, got list"),
    (b"x" * 11, 413, "11 bytes > max_body_bytes=10"),
    # issue #14's measured 500s: deep nesting (RecursionError) and an integer past Python's digit limit
    (b"[" * 200_000 + b"]" * 200_000, 400, "invalid JSON"),
    (b'{"items": [], "k": ' + b"9" * 5000 + b"}", 400, "invalid JSON"),
])
def test_parse_json_body_rejects(body, status, message):
    with pytest.raises(ServiceError, match=message) as err:
        parse_json_body(body, max_bytes=10 if body == b"x" * 11 else 1_000_000)
    assert err.value.status == status


def test_parse_json_body_accepts_an_object():
    assert parse_json_body(b'{"items": []}', 100) == {"items": []}


def test_parse_score_request():
    assert parse_score_request({"items": [1], "mode": "cot", "k": 4}) == ([1], "cot", 4)
    assert parse_score_request({"items": []}) == ([], None, None)
    for obj, message in (({}, "missing field 'items'"), ({"items": [], "x": 1}, r"unknown field\(s\) \['x'\]"),
                         ({"items": [], "mode": 3}, "'mode' must be a string"),
                         ({"items": [], "k": True}, "'k' must be an integer"),
                         ({"items": [], "k": 2.5}, "'k' must be an integer")):
        with pytest.raises(ServiceError, match=message) as err:
            parse_score_request(obj)
        assert err.value.status == 422


def test_get_reward_splits_query_into_question_and_response():
    pairs = parse_get_reward_request({"query": [PROMPT + "4. The answer is 4."], "prompts": [PROMPT],
                                      "labels": ["4"]}, FMT, max_items=8)
    assert pairs == [{"question": "What is 2+2?", "solution": "4. The answer is 4."}]


@pytest.mark.parametrize(("obj", "status", "message"), [
    ({"prompts": []}, 422, "missing field 'query'"),
    ({"query": "q", "prompts": []}, 422, "'query' must be a list"),
    ({"query": ["a"], "prompts": []}, 422, "'query' has 1 entries but 'prompts' has 0"),
    ({"query": [], "prompts": []}, 422, "'query' is empty"),
    ({"query": ["a", "b"], "prompts": ["a", "b"]}, 413, "2 queries > max_items=1"),
    ({"query": [1], "prompts": ["a"]}, 422, r"query\[0\] and prompts\[0\] must be strings"),
    ({"query": ["a"], "prompts": ["a"], "labels": "x"}, 422, "'labels' must be a list"),
])
def test_get_reward_rejects(obj, status, message):
    with pytest.raises(ServiceError, match=message) as err:
        parse_get_reward_request(obj, FMT, max_items=1)
    assert err.value.status == status


def test_question_of_inverts_the_generation_prompt():
    for name in ("compact", "released"):
        fmt = get_prompt_format(name)
        assert fmt.question_of(fmt.generation("Sort the words.")) == "Sort the words."
    assert FMT.question_of("plain text prompt") == "plain text prompt"
    assert FMT.question_of("Q: Why?\nA: Let's think step by step. extra") == "Why?"
