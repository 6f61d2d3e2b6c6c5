"""Real model families end to end: tiny random-weight Gemma-2, Llama-3 and Qwen2.5 models, each with a
tokenizer that follows that family's BOS/EOS/pad/chat conventions, are trained a few steps, exported,
served and scored. Training data, scoring prompts and sampling prompts carry the family's BOS
exactly once (Gemma and Llama-3 need it; Qwen has none), and the service's score equals a manual
forward pass over the same ids."""

import pytest

from genrm_rl.tiny import FAMILIES

FAMILY_ARCH = {"gemma2": "gemma2", "llama3": "llama", "qwen2": "qwen2"}
QUESTION = 'Take the last letters of the words in "coat dog" and concatenate them.'
SOLUTION = '" coat: t, so t.\ncoat dog: g, so tg.\ndog ": end.\nThe answer is tg.'


@pytest.mark.parametrize("prompt_format", ["compact", "chat"])
@pytest.mark.parametrize("family", sorted(FAMILY_ARCH))
def test_family_trains_serves_and_scores_with_its_bos_once(family, prompt_format, ray_session, tmp_path):
    import torch

    from genrm_rl.config import from_dict
    from genrm_rl.modeling import encode, load_causal_lm, load_tokenizer
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.scoring import verdict_tokens
    from genrm_rl.tiny import TinyModelSpec, make_tiny_model
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.data import build_examples, tokenize_examples
    from genrm_rl.training.launch import run_training
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig
    from reward.service import serve_verifier

    base = make_tiny_model(tmp_path / "base", TinyModelSpec(arch=FAMILY_ARCH[family], tokenizer=family, num_layers=1))
    cfg = from_dict(TrainConfig, {
        "objective": "genrm_direct", "model": str(base), "output_dir": str(tmp_path / "run"), "launcher": "local",
        "engine": "torch", "data": {"task": "last_letter", "num_problems": 40, "val_fraction": 0.0,
                                    "prompt_format": prompt_format},
        "max_steps": 3, "micro_batch_size": 4, "log_every": 1, "tensorboard": False,
    })
    run_training(cfg)
    model_dir = str(tmp_path / "run" / "model")
    tok = load_tokenizer(model_dir)
    bos = tok.bos_token_id
    fam = FAMILIES[family]

    def bos_count(ids):
        return sum(1 for t in ids if bos is not None and t == bos)

    # training examples: BOS once at the start (families that use one), none otherwise
    examples, _ = build_examples("genrm_direct", cfg.data, 0.0, "mix", tok.eos_token, tok)
    tokenized, _ = tokenize_examples(examples[:8], tok, 1024)
    for t in tokenized:
        assert bos_count(t.input_ids) == (1 if fam.add_bos else 0)
        assert (t.input_ids[0] == bos) == fam.add_bos
    # the scoring prompt the service builds (the verifier reads the format training recorded), and a
    # manual forward over it
    fmt = get_prompt_format(prompt_format, tok)
    assert GenerativeVerifier(VerifierConfig(model=model_dir, mode="direct")).fmt == fmt
    if prompt_format == "chat":  # the question is the user's turn, in the family's own markers
        assert fmt.generation(QUESTION) == tok.apply_chat_template(
            [{"role": "user", "content": f"Q: {QUESTION}"}], tokenize=False, add_generation_prompt=True) + \
            "A: Let's think step by step.\n"
        assert fmt.question_of(fmt.generation(QUESTION)) == QUESTION
        assert fmt.parse(fmt.cot(QUESTION, SOLUTION)) == (QUESTION, SOLUTION, "cot")
    ids = encode(tok, [fmt.direct(QUESTION, SOLUTION)])[0]
    assert bos_count(ids) == (1 if fam.add_bos else 0) and (ids[0] == bos) == fam.add_bos
    model = load_causal_lm(model_dir, "cpu")
    verdict = verdict_tokens(tok)
    with torch.no_grad():
        logits = model(torch.tensor([ids + list(verdict.prefix_ids)])).logits[0, -1].float()
    want = torch.softmax(logits[[verdict.yes_id, verdict.no_id]], 0)[0].item()

    service = serve_verifier(VerifierConfig(model=model_dir, mode="direct"), router_name=f"family_{family}",
                             num_replicas=1, replica_cpus=0.25, cache_size=0)
    try:
        got = service.client().score([{"question": QUESTION, "solution": SOLUTION}])
    finally:
        service.shutdown()
    assert got[0]["score"] == pytest.approx(want, abs=1e-5)
    assert got[0]["prompt_tokens"] == len(ids)


def test_chat_format_needs_a_chat_template(tiny_model_dir):
    from genrm_rl.modeling import load_tokenizer
    from genrm_rl.prompts import get_prompt_format

    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        get_prompt_format("chat", load_tokenizer(tiny_model_dir))
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        get_prompt_format("chat")
