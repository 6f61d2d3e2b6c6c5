"""transformers backend: batched direct scoring and K-sample CoT with one prefill per prompt.

Why a custom sampling loop instead of `generate(num_return_sequences=K)`: `generate` copies each
prompt K times and prefills all copies. Here each prompt is prefilled once, its KV cache is
repeated K times, and decoding reads p(Yes) at the exact step a rationale reaches the verdict cue,
so no second pass over the rationale is needed. Finished rows are dropped from the cache in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from genrm_rl.backends import RationaleSample
from genrm_rl.prompts import NO, VERDICT_CUE, YES

SAMPLING, FORCING, VERDICT, DONE = range(4)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding, so a padded prompt sees the positions it trained on."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class TransformersBackend:
    def __init__(self, cfg):
        from genrm_rl.modeling import load_causal_lm, load_tokenizer, resolve_device
        from genrm_rl.scoring import verdict_tokens

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.tokenizer = load_tokenizer(cfg.model, padding_side="left")
        self.model = load_causal_lm(cfg.model, self.device, cfg.dtype)
        self.verdict = verdict_tokens(self.tokenizer)
        self.cue_tail_ids = self.tokenizer("\n" + VERDICT_CUE, add_special_tokens=False).input_ids
        self.cue_window = len(self.tokenizer(VERDICT_CUE, add_special_tokens=False).input_ids) + 4
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in eos + [self.tokenizer.eos_token_id] if e is not None}
        self._token_text: dict[int, str] = {}
        self.prefix_text = self.tokenizer.decode(list(self.verdict.prefix_ids))

    # ---- direct -------------------------------------------------------------------------------
    @torch.no_grad()
    def verdict_probs(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        from genrm_rl.scoring import yes_probability

        seqs = [list(p) + list(self.verdict.prefix_ids) for p in prompts]
        out = [0.0] * len(seqs)
        for batch in length_batches([len(s) for s in seqs], self.cfg.batch_size):
            ids, mask = left_pad([seqs[i] for i in batch], self.tokenizer.pad_token_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                                logits_to_keep=1).logits[:, -1]
            for i, p in zip(batch, yes_probability(logits, self.verdict.yes_id, self.verdict.no_id).tolist(), strict=True):
                out[i] = p
        return out

    # ---- CoT ----------------------------------------------------------------------------------
    def _text(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self.tokenizer.decode([token_id])
        return self._token_text[token_id]

    def _ends_with_cue(self, generated: list[int]) -> bool:
        if not self._text(generated[-1]).endswith(VERDICT_CUE[-1]):
            return False
        return self.tokenizer.decode(generated[-self.cue_window:]).endswith(VERDICT_CUE)

    @torch.no_grad()
    def sample_verdicts(self, prompts, k, temperature, top_p, max_new_tokens, seed) -> list[list[RationaleSample]]:
        out: list[list[RationaleSample]] = [[] for _ in prompts]
        for b, batch in enumerate(length_batches([len(p) for p in prompts], self.cfg.batch_size)):
            samples = self._sample_batch([prompts[i] for i in batch], k, temperature, top_p, max_new_tokens, seed + b)
            for j, i in enumerate(batch):
                out[i] = samples[j * k:(j + 1) * k]
        return out

    def _sample_batch(self, prompts, k, temperature, top_p, max_new_tokens, seed) -> list[RationaleSample]:
        from genrm_rl.scoring import sample_next_token, yes_probability

        pad = self.tokenizer.pad_token_id
        yes_id, no_id = self.verdict.yes_id, self.verdict.no_id
        ids, mask = left_pad(prompts, pad, self.device)
        pos = positions(mask)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(k)  # one prefill, K decoding rows per prompt
        logits = out.logits[:, -1].repeat_interleave(k, 0)
        mask = mask.repeat_interleave(k, 0)
        next_pos = pos[:, -1].repeat_interleave(k, 0) + 1

        n = len(prompts) * k
        rows = list(range(n))  # rows[r] = sample index of cache row r
        phase = [SAMPLING] * n
        forced: list[list[int]] = [[] for _ in range(n)]
        generated: list[list[int]] = [[] for _ in range(n)]
        num_sampled = [0] * n
        p_yes: list[float | None] = [None] * n
        gen = torch.Generator(device=self.device).manual_seed(seed)
        dead_rows = 0

        while True:
            sampled = sample_next_token(logits, temperature, top_p, gen).tolist()
            verdict_p = None
            feed = []
            for r, s in enumerate(rows):
                if phase[s] == VERDICT:  # these logits are the distribution right after the cue
                    if verdict_p is None:
                        verdict_p = yes_probability(logits, yes_id, no_id).tolist()
                    p_yes[s] = verdict_p[r]
                    phase[s] = DONE
                    dead_rows += 1
                if phase[s] == DONE:
                    feed.append(pad)
                    continue
                if phase[s] == FORCING:
                    tok = forced[s].pop(0)
                else:
                    tok = sampled[r]
                    num_sampled[s] += 1
                    if tok in self.eos_ids:
                        phase[s] = DONE  # no verdict: forced afterwards
                        dead_rows += 1
                        feed.append(pad)
                        continue
                generated[s].append(tok)
                if phase[s] == SAMPLING and self._ends_with_cue(generated[s]):
                    forced[s] = list(self.verdict.prefix_ids)
                    phase[s] = FORCING
                if phase[s] == FORCING and not forced[s]:
                    phase[s] = VERDICT
                elif phase[s] == SAMPLING and num_sampled[s] >= max_new_tokens:
                    phase[s] = DONE
                    dead_rows += 1
                    feed.append(pad)
                    continue
                feed.append(tok)
            if dead_rows == len(rows):
                break
            if dead_rows and dead_rows * 4 >= len(rows):  # compact: drop finished rows from the cache
                keep = [r for r, s in enumerate(rows) if phase[s] != DONE]
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                rows = [rows[r] for r in keep]
                feed = [feed[r] for r in keep]
                dead_rows = 0
            step_ids = torch.tensor(feed, device=self.device)[:, None]
            alive = torch.tensor([phase[s] != DONE for s in rows], device=self.device, dtype=mask.dtype)[:, None]
            mask = torch.cat([mask, alive], dim=-1)
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos[:, None],
                             past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
            next_pos = next_pos + 1

        # Rationales that ended without a verdict: append the cue and read p(Yes) there.
        missing = [s for s in range(n) if p_yes[s] is None]
        if missing:
            seqs = [list(prompts[s // k]) + generated[s] + self.cue_tail_ids for s in missing]
            for s, p in zip(missing, self.verdict_probs(seqs), strict=True):
                p_yes[s] = p
                generated[s] = generated[s] + self.cue_tail_ids + list(self.verdict.prefix_ids)
        forced_set = set(missing)
        return [
            RationaleSample(
                text=self.tokenizer.decode(generated[s]) + verdict_word(p_yes[s], self.prefix_text),
                p_yes=float(p_yes[s]), reached_verdict=s not in forced_set, num_tokens=num_sampled[s],
                token_ids=generated[s],
            )
            for s in range(n)
        ]


def verdict_word(p_yes: float, prefix_text: str) -> str:
    """" Yes"/" No" minus the shared prefix already in the text (for readable rationales)."""
    word = YES if p_yes >= 0.5 else NO
    return word[len(prefix_text):] if word.startswith(prefix_text) else word
