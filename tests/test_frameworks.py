"""The reward service called by the frameworks' own code, as they ship: OpenRLHF 0.11.2's rollout
reward fetch and verl 0.9.1's reward-loop manager (installed without their GPU stacks, see
scripts/install.sh). Each reward must equal `/score` on the clean (question, response)."""

import asyncio
import types

import pytest

from genrm_rl.runtime import free_port

openrlhf_agent = pytest.importorskip("openrlhf.utils.agent", reason="scripts/install.sh installs openrlhf (no deps)")
verl_naive = pytest.importorskip("verl.experimental.reward_loop.reward_manager.naive",
                                 reason="scripts/install.sh installs verl (no deps)")

QUESTION = 'Take the last letters of the words in "coat dog" and concatenate them.'
RESPONSE = '" coat: t, so t.\ncoat dog: g, so tg.\ndog ": end.\nThe answer is tg.'


@pytest.fixture(scope="module", params=["tiny", "llama3"])
def family_service(request, ray_session, tmp_path_factory):
    """A direct-mode service over a tiny model whose tokenizer follows `family`'s conventions (llama3:
    BOS added by the tokenizer, <|eot_id|> as EOS, no pad token)."""
    from genrm_rl.tiny import TinyModelSpec, make_tiny_model
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig
    from reward.service import serve_verifier

    model = str(make_tiny_model(tmp_path_factory.mktemp(request.param) / "m",
                                TinyModelSpec(num_layers=1, tokenizer=request.param)))
    vcfg = VerifierConfig(model=model, mode="direct")
    service = serve_verifier(vcfg, http=True, port=free_port(), router_name=f"fw_{request.param}", cache_size=0,
                             num_replicas=1, replica_cpus=0.25)
    want = GenerativeVerifier(vcfg).score([(QUESTION, RESPONSE)])[0].score
    yield types.SimpleNamespace(url=service.url, model=model, want=want)
    service.shutdown()


class FixedEngine:
    """Stands in for OpenRLHF's vLLM engine: answers every prompt with the same token ids."""

    def __init__(self, token_ids, finish_reason="stop"):
        self.token_ids, self.finish_reason = list(token_ids), finish_reason

    async def generate(self, prompt_token_ids, params, multi_modal_data=None):
        out = types.SimpleNamespace(token_ids=self.token_ids, finish_reason=self.finish_reason, logprobs=None)
        return types.SimpleNamespace(outputs=[out])


@pytest.mark.parametrize("truncate", [False, True])
def test_openrlhf_rollout_reward_equals_score_on_the_clean_pair(family_service, truncate):
    from genrm_rl.modeling import load_tokenizer
    from genrm_rl.prompts import get_prompt_format

    tok = load_tokenizer(family_service.model)
    prompt = get_prompt_format("compact").generation(QUESTION)
    # the policy's response ends with its EOS token, which OpenRLHF decodes into the query
    response_ids = tok(RESPONSE, add_special_tokens=False).input_ids + [tok.eos_token_id]
    params = types.SimpleNamespace(max_tokens=len(response_ids), logprobs=None)
    prompt_len = len(tok(prompt, add_special_tokens=False).input_ids)
    # truncate: OpenRLHF keeps only the prompt's last tokens when prompt + response exceed max_length
    max_length = len(response_ids) + (prompt_len - 8 if truncate else prompt_len + 4)
    executor = openrlhf_agent.SingleTurnAgentExecutor(family_service.url + "/get_reward")
    out = asyncio.run(executor.execute(prompt, QUESTION, params, max_length, tok, FixedEngine(response_ids)))
    # OpenRLHF's own serve_rm answers a one-query request with one-element lists, and its rollout
    # builds `torch.tensor([reward])` from them and flattens per prompt group: compare that tensor
    import torch

    for key in ("reward", "scores"):
        assert torch.tensor([out[key]]).flatten().tolist() == pytest.approx([family_service.want], abs=1e-5), out


def test_verl_reward_loop_manager_awaits_compute_score(family_service, monkeypatch):
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto

    import reward.verl as genrm_verl
    from genrm_rl.modeling import load_tokenizer

    monkeypatch.setenv("GENRM_REWARD_URL", family_service.url)
    genrm_verl._clients.clear()
    tok = load_tokenizer(family_service.model)
    response = tok(RESPONSE, add_special_tokens=False).input_ids + [tok.eos_token_id]
    width = len(response) + 3  # right padding, as verl's rollout returns fixed-width responses
    responses = torch.full((2, width), tok.pad_token_id, dtype=torch.long)
    responses[:, :len(response)] = torch.tensor(response)
    prompts = torch.zeros((2, 4), dtype=torch.long)
    mask = torch.cat([torch.ones((2, 4), dtype=torch.long), (responses != tok.pad_token_id).long()], dim=1)
    mask[:, 4 + len(response):] = 0
    data = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={"data_source": np.array(["last_letter"] * 2, dtype=object),
                     "reward_model": np.array([{"ground_truth": "tg"}] * 2, dtype=object),
                     "extra_info": np.array([{"question": QUESTION}, {"question": QUESTION}], dtype=object)})

    async def run():
        manager = verl_naive.NaiveRewardManager(OmegaConf.create({}), tok, genrm_verl.compute_score)
        assert manager.is_async_reward_score  # verl awaits it on its own event loop
        return await asyncio.gather(*(manager.run_single(data[i:i + 1]) for i in range(2)))

    for out in asyncio.run(run()):
        assert out["reward_score"] == pytest.approx(family_service.want, abs=1e-5)
        assert out["reward_extra_info"]["genrm_votes"] == 1
    sync = genrm_verl.compute_score_sync("last_letter", RESPONSE, "tg", {"question": QUESTION})
    assert sync["score"] == pytest.approx(family_service.want, abs=1e-5)
    with pytest.raises(ValueError, match="extra_info needs a 'question'"):
        genrm_verl.compute_score_sync("last_letter", RESPONSE, "tg", {})
