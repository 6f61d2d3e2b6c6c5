"""transformers backend: batched direct scoring, K-sample CoT and plain sampling, one prefill per prompt.

Why a custom sampling loop instead of `generate(num_return_sequences=K)`: `generate` copies each
prompt K times and prefills all copies. Here each prompt is prefilled once, its KV cache is
repeated K times, and decoding reads p(Yes) at the exact step a rationale reaches the verdict cue,
so no second pass over the rationale is needed. Finished rows are dropped from the cache in chunks.
The decoding cache (`reserved_cache`) has room for every token a row may add and is written in
place: transformers' default layer concatenates, copying the whole cache at every step.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

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
    def __init__(self, spec):
        from genrm_rl.modeling import load_causal_lm, load_tokenizer, resolve_device

        device = resolve_device(spec.device)
        self._setup(load_causal_lm(spec.model, device, spec.dtype), load_tokenizer(spec.model, padding_side="left"),
                    spec.batch_size)

    @classmethod
    def from_model(cls, model, tokenizer, batch_size: int = 16) -> TransformersBackend:
        """A backend around a model already in memory (e.g. the policy an RL trainer is updating)."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, batch_size)
        return backend

    def _setup(self, model, tokenizer, batch_size: int) -> None:
        from genrm_rl.scoring import verdict_tokens

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = next(model.parameters()).device
        self.verdict = verdict_tokens(self.tokenizer)
        self.cue_tail_ids = self.tokenizer("\n" + VERDICT_CUE, add_special_tokens=False).input_ids
        self.cue_window = len(self.tokenizer(VERDICT_CUE, add_special_tokens=False).input_ids) + 4
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in eos + [self.tokenizer.eos_token_id] if e is not None}
        self._token_text: dict[int, str] = {}
        self.prefix_text = self.tokenizer.decode(list(self.verdict.prefix_ids))
        # transformers 5.25 renamed the KV cache argument and output `past_key_values` -> `cache`
        # (the old name warns, and goes in 5.40); pass it by whichever name this model's forward takes
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    # ---- direct -------------------------------------------------------------------------------
    @torch.no_grad()
    def verdict_probs(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        from genrm_rl.scoring import yes_probability

        seqs = [list(p) + list(self.verdict.prefix_ids) for p in prompts]
        out = [0.0] * len(seqs)
        for batch in length_batches([len(s) for s in seqs], self.batch_size):
            ids, mask = left_pad([seqs[i] for i in batch], self.tokenizer.pad_token_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                                logits_to_keep=1).logits[:, -1]
            for i, p in zip(batch, yes_probability(logits, self.verdict.yes_id, self.verdict.no_id).tolist(), strict=True):
                out[i] = p
        return out

    # ---- sampling -----------------------------------------------------------------------------
    def _text(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self.tokenizer.decode([token_id])
        return self._token_text[token_id]

    def _ends_with_cue(self, generated: list[int]) -> bool:
        if not self._text(generated[-1]).endswith(VERDICT_CUE[-1]):
            return False
        return self.tokenizer.decode(generated[-self.cue_window:]).endswith(VERDICT_CUE)

    def _batched(self, prompts, k, fn) -> list:
        """fn(batch_prompts) -> k results per prompt, in prompt order; batches of similar length."""
        out: list = [None] * len(prompts)
        for batch in length_batches([len(p) for p in prompts], self.batch_size):
            results = fn([prompts[i] for i in batch])
            for j, i in enumerate(batch):
                out[i] = results[j * k:(j + 1) * k]
        return out

    @torch.no_grad()
    def sample(self, prompts, n, temperature, top_p, max_new_tokens, seed) -> list[list[list[int]]]:
        """`n` completions per prompt (token ids, EOS dropped); temperature 0 decodes greedily."""
        return self._batched(prompts, n, lambda batch: [
            d.tokens for d in self._decode(batch, n, temperature, top_p, max_new_tokens, seed, watch_cue=False)])

    @torch.no_grad()
    def sample_verdicts(self, prompts, k, temperature, top_p, max_new_tokens, seed) -> list[list[RationaleSample]]:
        return self._batched(prompts, k, lambda batch: self._rationales(batch, k, temperature, top_p,
                                                                         max_new_tokens, seed))

    def _rationales(self, prompts, k, temperature, top_p, max_new_tokens, seed, start=0,
                    prefill=None) -> list[RationaleSample]:
        decoded = self._decode(prompts, k, temperature, top_p, max_new_tokens, seed, watch_cue=True, start=start,
                               prefill=prefill)
        # Rationales that ended without a verdict: append the cue and read p(Yes) there.
        missing = [s for s, d in enumerate(decoded) if d.p_yes is None]
        if missing:
            seqs = [list(prompts[s // k]) + decoded[s].tokens + self.cue_tail_ids for s in missing]
            for s, p in zip(missing, self.verdict_probs(seqs), strict=True):
                decoded[s].p_yes = p
                decoded[s].tokens = decoded[s].tokens + self.cue_tail_ids + list(self.verdict.prefix_ids)
        forced = set(missing)
        return [
            RationaleSample(
                text=self.tokenizer.decode(d.tokens) + verdict_word(d.p_yes, self.prefix_text),
                p_yes=float(d.p_yes), reached_verdict=s not in forced, num_tokens=d.num_sampled, token_ids=d.tokens,
            )
            for s, d in enumerate(decoded)
        ]

    def _prefill(self, prompts) -> _Prefill:
        ids, mask = left_pad(prompts, self.tokenizer.pad_token_id, self.device)
        pos = positions(mask)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        return _Prefill(out[self._cache_kw], out.logits[:, -1], mask, pos[:, -1])

    @torch.no_grad()
    def verdict_rounds(self, prompts, k_max, k_round, temperature, top_p, max_new_tokens, seed, decide) -> list:
        """Adaptive K: rounds of `k_round` rationales for every prompt `decide` has not stopped, until
        `k_max`. Each prompt is prefilled once; every round decodes from a copy of that cache, and
        sample j of a prompt is the same as in a fixed-K run. `decide(samples so far per prompt)`
        returns which prompts are done."""
        batches = length_batches([len(p) for p in prompts], self.batch_size)
        prefills = [self._prefill([prompts[i] for i in batch]) for batch in batches]
        out: list[list[RationaleSample]] = [[] for _ in prompts]
        done, start = [False] * len(prompts), 0
        while start < k_max and not all(done):
            k = min(k_round, k_max - start)
            for batch, prefill in zip(batches, prefills, strict=True):
                rows = [j for j, i in enumerate(batch) if not done[i]]
                if not rows:
                    continue
                samples = self._rationales([prompts[batch[j]] for j in rows], k, temperature, top_p, max_new_tokens,
                                           seed, start=start, prefill=prefill.rows(rows))
                for n, j in enumerate(rows):
                    out[batch[j]] += samples[n * k:(n + 1) * k]
            start += k
            done = list(decide(out))
        return out

    def _decode(self, prompts, k, temperature, top_p, max_new_tokens, seed, watch_cue: bool, start: int = 0,
                prefill: _Prefill | None = None) -> list[_Row]:
        """K rows per prompt from one prefill. Row (i, j) draws its tokens from its own generator, seeded
        by `sample_seed(seed, prompt_i, start + j)`. With `watch_cue`, a row that writes the verdict cue is
        fed the Yes/No prefix and p(Yes) is read from the next logits (no second pass over the rationale)."""
        from genrm_rl.scoring import row_generators, sample_rows, sample_seed, yes_probability

        pad = self.tokenizer.pad_token_id
        prefill = prefill or self._prefill(prompts)
        # one prefill, K decoding rows per prompt, with room for every token the rows may add
        cache = reserved_cache(prefill.cache, k, room=max_new_tokens + len(self.verdict.prefix_ids) + 1,
                               rows=prefill.index)
        logits = prefill.logits.repeat_interleave(k, 0)
        mask = prefill.mask.repeat_interleave(k, 0)
        next_pos = prefill.last_pos.repeat_interleave(k, 0) + 1

        n = len(prompts) * k
        generators = row_generators([sample_seed(seed, prompts[s // k], start + s % k) for s in range(n)],
                                    self.device)
        state = [_Row() for _ in range(n)]
        rows = list(range(n))  # rows[r] = sample index of cache row r
        dead_rows = 0
        while True:
            sampling = [r for r, s in enumerate(rows) if state[s].phase == SAMPLING]
            drawn = dict(zip(sampling, sample_rows(logits[sampling], temperature, top_p,
                                                   [generators[rows[r]] for r in sampling]).tolist(),
                             strict=True)) if sampling else {}
            verdict_p = None
            feed = []
            for r, s in enumerate(rows):
                row = state[s]
                if row.phase == VERDICT:  # these logits are the distribution right after the cue
                    if verdict_p is None:
                        verdict_p = yes_probability(logits, self.verdict.yes_id, self.verdict.no_id).tolist()
                    row.p_yes, row.phase = verdict_p[r], DONE
                    dead_rows += 1
                if row.phase == DONE:
                    feed.append(pad)
                    continue
                if row.phase == FORCING:
                    tok = row.forced.pop(0)
                else:
                    tok = drawn[r]
                    row.num_sampled += 1
                    if tok in self.eos_ids:
                        row.phase = DONE  # no verdict: forced afterwards (watch_cue)
                        dead_rows += 1
                        feed.append(pad)
                        continue
                row.tokens.append(tok)
                if watch_cue and row.phase == SAMPLING and self._ends_with_cue(row.tokens):
                    row.forced, row.phase = list(self.verdict.prefix_ids), FORCING
                if row.phase == FORCING and not row.forced:
                    row.phase = VERDICT
                elif row.phase == SAMPLING and row.num_sampled >= max_new_tokens:
                    row.phase = DONE
                    dead_rows += 1
                    feed.append(pad)
                    continue
                feed.append(tok)
            if dead_rows == len(rows):
                return state
            if dead_rows and dead_rows * 4 >= len(rows):  # compact: drop finished rows from the cache
                keep = [r for r, s in enumerate(rows) if state[s].phase != DONE]
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                rows = [rows[r] for r in keep]
                feed = [feed[r] for r in keep]
                dead_rows = 0
            step_ids = torch.tensor(feed, device=self.device)[:, None]
            alive = torch.tensor([state[s].phase != DONE for s in rows], device=self.device, dtype=mask.dtype)[:, None]
            mask = torch.cat([mask, alive], dim=-1)
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos[:, None],
                             use_cache=True, **{self._cache_kw: cache})
            cache, logits = out[self._cache_kw], out.logits[:, -1]
            next_pos = next_pos + 1


class _ReservedLayer(DynamicLayer):
    """A KV cache layer whose keys and values are views into buffers with room for more tokens: a
    decoding step writes its one token in place. transformers' `DynamicLayer` concatenates, copying
    the whole cache every step (28% of the decoding time at K=8 in a profile; BENCHMARKS.md)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int):
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._reserve(keys, values, room)

    def _reserve(self, keys, values, room: int) -> None:
        b, h, t, d = keys.shape
        self._k, self._v = keys.new_empty((b, h, t + room, d)), values.new_empty((b, h, t + room, d))
        self._k[:, :, :t], self._v[:, :, :t] = keys, values
        self._set_length(t)

    def _set_length(self, t: int) -> None:
        self._n = t
        self.keys, self.values = self._k[:, :, :t], self._v[:, :, :t]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self._n + n > self._k.shape[-2]:  # out of room (not on the decoding path): grow
            self._reserve(self.keys, self.values, max(n, 64))
        self._k[:, :, self._n:self._n + n], self._v[:, :, self._n:self._n + n] = key_states, value_states
        self._set_length(self._n + n)
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        room = self._k.shape[-2] - self._n
        self._reserve(self.keys.repeat_interleave(repeats, 0), self.values.repeat_interleave(repeats, 0), room)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._set_length(self._n)


def reserved_cache(cache, repeats: int, room: int, rows: list[int] | None = None) -> Cache:
    """Rows `rows` (default: all) of `cache` (a prefill's), each repeated `repeats` times, in
    `_ReservedLayer`s that hold `room` more tokens. The prefill's own cache is only read, so adaptive
    rounds decode from it again without a copy."""
    layers = []
    for layer in cache.layers:
        index = torch.arange(layer.keys.shape[0]) if rows is None else torch.tensor(rows)
        index = index.to(layer.keys.device).repeat_interleave(repeats)
        layers.append(_ReservedLayer(layer.keys[index], layer.values[index], room))
    return Cache(layers=layers)


class _Prefill:
    """A batch of prompts run through the model once: the KV cache, next-token logits, mask and last
    positions. `rows(...)` selects prompts for a decoding round that reuses it; the cache is shared,
    never written (decoding copies the rows it needs into a `reserved_cache`)."""

    def __init__(self, cache, logits, mask, last_pos, index: list[int] | None = None):
        self.cache, self.logits, self.mask, self.last_pos = cache, logits, mask, last_pos
        self.index = index  # rows of `cache` these prompts are (None: all, in order)

    def rows(self, index: list[int]) -> _Prefill:
        base = self.index or list(range(self.cache.layers[0].keys.shape[0]))
        return _Prefill(self.cache, self.logits[index], self.mask[index], self.last_pos[index],
                        [base[i] for i in index])


class _Row:
    """Decoding state of one sampled row."""

    __slots__ = ("phase", "tokens", "forced", "num_sampled", "p_yes")

    def __init__(self):
        self.phase = SAMPLING
        self.tokens: list[int] = []
        self.forced: list[int] = []
        self.num_sampled = 0
        self.p_yes: float | None = None


def verdict_word(p_yes: float, prefix_text: str) -> str:
    """" Yes"/" No" minus the shared prefix already in the text (for readable rationales)."""
    word = YES if p_yes >= 0.5 else NO
    return word[len(prefix_text):] if word.startswith(prefix_text) else word
