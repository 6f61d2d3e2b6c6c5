"""OpenRLHF's `--data.label_key`: the reward service takes the question from the request's `labels`.

Its own module because it starts its own HTTP service, and a Ray cluster has one Serve HTTP proxy:
test_frameworks' module-scoped services must be gone first (pytest finalises them with their module).
"""

import pytest

from genrm_rl.runtime import free_port

QUESTION = 'Take the last letters of the words in "coat dog" and concatenate them.'
RESPONSE = '" coat: t, so t.\ncoat dog: g, so tg.\ndog ": end.\nThe answer is tg.'


def test_openrlhf_label_key_question(ray_session, tiny_model_dir):
    """--data.label_key question: the service takes the question from `labels`, not from the prompt
    (here a chat-templated prompt it could not parse)."""
    import httpx

    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig
    from reward.service import serve_verifier

    vcfg = VerifierConfig(model=tiny_model_dir, mode="direct")
    service = serve_verifier(vcfg, http=True, port=free_port(), router_name="fw_labels", num_replicas=1,
                             replica_cpus=0.25, get_reward_question="label")
    try:
        prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
        body = {"query": [prompt + RESPONSE + "<|im_end|>"], "prompts": [prompt], "labels": [QUESTION]}
        got = httpx.post(service.url + "/get_reward", json=body, timeout=60).json()
        want = GenerativeVerifier(vcfg).score([(QUESTION, RESPONSE + "<|im_end|>")])[0].score
        assert got["rewards"][0] == pytest.approx(want, abs=1e-5)
        missing = httpx.post(service.url + "/get_reward", json={**body, "labels": None}, timeout=60)
        assert missing.status_code == 422 and "label_key" in missing.json()["error"]
    finally:
        service.shutdown()
