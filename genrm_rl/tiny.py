"""Tiny-model kit: a small tokenizer and a small random causal LM, built locally.

Why: nothing may be downloaded at test or demo time, yet every code path must be the one a real
model takes. So we *build* a model directory (config.json + model.safetensors + tokenizer files)
with `save_pretrained` and from then on load it like any Hub model, through `from_pretrained`.

The tokenizer is a Unigram model whose vocabulary is every printable character plus whole words
(the task word list and the words of the prompt templates). Like a real LLM tokenizer, a known
word is one token (so a model must *learn* its spelling: the reason last-letter concatenation is
hard for LLMs), and anything else falls back to single characters, so every string round-trips
exactly. Sequences are ~2x shorter than character-level ones, which matters on a 2-core CPU.
head_dim >= 32 keeps vLLM happy.
"""

from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path

from genrm_rl.config import option

# Printable ASCII minus the rare vertical whitespace characters.
CHARSET = [c for c in string.printable if c not in "\x0b\x0c\r"]
# Each whitespace and punctuation character is its own piece; words keep their apostrophes.
PRE_TOKENIZE = r"\s|[^\w']"


# The words of the prompt templates, solutions and oracle rationales of the built-in tasks, as a
# fixed list. It was once derived from the current rationale texts, so rewording word sorting's
# rationale dropped four words, shrank the vocabulary 460 -> 456 and gave every tiny model, on
# last-letter too, another random init: the committed results no longer came back from the same
# config and seed (measured). Changing this list changes every run's init; re-run the committed
# results if you do. `tests/test_tiny.py` checks that every word the tasks write is in it, and pins it.
TEMPLATE_WORDS = (
    "Answer", "Correct", "Final", "Here", "Insert", "Is", "Left", "Let's", "No", "Pick", "So", "Solve", "Sort",
    "Take", "The", "Verification", "When", "Wrong", "Yes", "alphabetically", "and", "answer", "answer's", "asked",
    "based", "be", "by", "concatenate", "conclude", "correct", "correctness", "end", "ending", "every",
    "followed", "in", "is", "last", "letters", "math", "me", "of", "on", "or", "problems", "provide", "respond",
    "should", "so", "solution", "solution's", "solutions", "step", "the", "them", "think", "verify", "with",
    "words",
)


def template_words() -> list[str]:
    """Whole-word tokens of the tiny vocabulary: the template words and the task word list."""
    from genrm_rl.tasks import word_list

    return sorted(set(TEMPLATE_WORDS) | set(word_list()))


def task_text_words(problems_per_task: int = 20) -> set[str]:
    """Every word (2+ characters, not a number) the built-in tasks write in prompts, solutions and
    oracle rationales of right and wrong candidates (what the vocabulary must cover), answers left
    out: a last-letter answer (and each partial answer before it) is a string of letters a model must
    spell."""
    import random

    from genrm_rl.prompts import ANSWER_CUE, COT_CUE, NO, RELEASED_HEADER, VERDICT_CUE, YES
    from genrm_rl.tasks import TASKS

    texts, answers = [RELEASED_HEADER, VERDICT_CUE, COT_CUE, "Q:", ANSWER_CUE, YES, NO], set()
    rng = random.Random(0)
    for _name, cls in TASKS.items():
        task = cls()
        for split in task.lengths:
            for problem in task.make_problems(split, problems_per_task, seed=1):
                good, (bad, _) = task.solve(problem), task.corrupt(problem, rng)
                texts += [problem.question, good, bad, task.rationale(problem, bad).text,
                          task.rationale(problem, good).text]
                answers |= {a[:i] for a in (task.extract_answer(good), task.extract_answer(bad))
                            for i in range(2, len(a) + 1)}  # and the partial answers on the way
    return {w for t in texts for w in re.findall(r"[\w']+", t)
            if len(w) > 1 and not w.isdigit() and w not in answers}


@dataclasses.dataclass(frozen=True)
class TokenizerFamily:
    """The special-token conventions of a real model family, reproduced on the tiny vocabulary, so
    BOS/EOS/pad/chat handling is tested the way Gemma, Llama-3 and Qwen checkpoints need it."""

    bos: str | None
    eos: str
    pad: str | None
    add_bos: bool
    """Whether the tokenizer's own post-processor prepends BOS (Gemma, Llama-3) or not (Qwen, tiny)."""
    extra: tuple[str, ...] = ()
    chat_template: str | None = None


FAMILIES = {
    "tiny": TokenizerFamily("<bos>", "<eos>", "<pad>", add_bos=False),
    "gemma2": TokenizerFamily(
        "<bos>", "<eos>", "<pad>", add_bos=True, extra=("<start_of_turn>", "<end_of_turn>"),
        chat_template="{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                      "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}"
                      "<start_of_turn>model\n{% endif %}"),
    "llama3": TokenizerFamily(
        "<|begin_of_text|>", "<|eot_id|>", None, add_bos=True,
        extra=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"),
        chat_template="{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                      "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "qwen2": TokenizerFamily(
        None, "<|im_end|>", "<|endoftext|>", add_bos=False, extra=("<|im_start|>", "<|endoftext|>"),
        chat_template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
}


def build_tiny_tokenizer(family: str = "tiny"):
    """A `PreTrainedTokenizerFast`: whole-word tokens where the vocabulary has them, else characters,
    with the special tokens, BOS policy and chat template of `family` (FAMILIES)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if family not in FAMILIES:
        raise ValueError(f"unknown tokenizer family {family!r}; choose one of {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    specials = list(dict.fromkeys(t for t in (fam.pad, "<unk>", fam.bos, fam.eos, *fam.extra) if t))
    words = [w for w in template_words() if w not in CHARSET]
    # Unigram picks the most probable segmentation: one word piece (-1) beats several chars (-10 each).
    vocab = [(t, 0.0) for t in specials] + [(c, -10.0) for c in CHARSET] + [(w, -1.0) for w in words]
    core = Tokenizer(models.Unigram(vocab, unk_id=specials.index("<unk>"), byte_fallback=False))
    core.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(PRE_TOKENIZE), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials)
    if fam.add_bos:
        bos_id = specials.index(fam.bos)
        core.post_processor = processors.TemplateProcessing(single=f"{fam.bos} $A", pair=f"{fam.bos} $A $B",
                                                            special_tokens=[(fam.bos, bos_id)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token=fam.bos, eos_token=fam.eos,
        pad_token=fam.pad, additional_special_tokens=list(fam.extra), model_max_length=4096,
    )
    if fam.chat_template:
        tok.chat_template = fam.chat_template
    return tok


@dataclasses.dataclass
class TinyModelSpec:
    """Shape of a tiny random causal LM (Llama, Qwen2 or Gemma-2 architecture)."""

    arch: str = option("llama", help="llama, qwen2 or gemma2")
    tokenizer: str = option("tiny", help="special-token conventions: tiny, gemma2, llama3 or qwen2 (BOS, EOS, pad, "
                                         "chat template of that family)")
    hidden_size: int = option(128, help="model width")
    num_layers: int = option(4, help="transformer blocks")
    num_heads: int = option(4, help="attention heads; hidden_size/num_heads is head_dim (>= 32 for vLLM)")
    intermediate_size: int = option(384, help="MLP width")
    max_position_embeddings: int = option(1024, help="longest sequence in characters")
    seed: int = option(0, help="seed for the random init")

    def __post_init__(self):
        if self.arch not in ("llama", "qwen2", "gemma2"):
            raise ValueError(f"tiny model arch must be 'llama', 'qwen2' or 'gemma2', got {self.arch!r}")
        if self.tokenizer not in FAMILIES:
            raise ValueError(f"tiny tokenizer must be one of {sorted(FAMILIES)}, got {self.tokenizer!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size // self.num_heads < 32:
            raise ValueError(
                f"head_dim = {self.hidden_size // self.num_heads} < 32; vLLM rejects it (raise hidden_size or lower num_heads)"
            )


def make_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write a tokenizer + random causal LM to `out_dir` (a normal HF model directory)."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig, Qwen2Config

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    tok = build_tiny_tokenizer(spec.tokenizer)
    common = dict(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    head_dim = spec.hidden_size // spec.num_heads
    config = {"llama": lambda: LlamaConfig(head_dim=head_dim, **common),
              "qwen2": lambda: Qwen2Config(**common),
              "gemma2": lambda: Gemma2Config(head_dim=head_dim, query_pre_attn_scalar=head_dim, **common)}[spec.arch]()
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    from genrm_rl.modeling import quiet_weight_bars

    quiet_weight_bars()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
