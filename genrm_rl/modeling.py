"""The one loading path for every model: tiny ones built by `genrm_rl.tiny` and real ones alike.

Why: the reward service, trainers and evaluators must not special-case tiny test models, or the
tests would not exercise what users run. Everything goes through `from_pretrained` on a directory
(or Hub id on machines that have network access).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table) + ['auto']}, got {dtype!r}")
    return table[dtype]


def check_model_dir(path: str | Path) -> None:
    """Fail early, with the path in the message, instead of deep inside `from_pretrained`."""
    p = Path(path)
    if p.exists():
        if not (p / "config.json").is_file():
            raise ValueError(f"{p} is not a Hugging Face model directory (no config.json)")
    elif not _looks_like_hub_id(str(path)):
        raise ValueError(f"model directory not found: {p}")


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


# Per-load progress bars: one per model load or save, dozens per pipeline run (every replica, every
# training stage). Download bars from the Hub are a different bar and stay.
_QUIET_BARS = ("Loading weights", "Writing model shards")
_bars_quieted = False


def quiet_weight_bars() -> None:
    """Drop transformers' per-load "Loading weights" / "Writing model shards" bars in this process.
    Idempotent; a transformers without `set_tqdm_hook` keeps its bars (cosmetic, nothing else)."""
    global _bars_quieted
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is None or _bars_quieted:
        return

    def hook(factory, args, kwargs):
        if kwargs.get("desc") in _QUIET_BARS:
            kwargs = {**kwargs, "disable": True}
        return factory(*args, **kwargs)

    set_hook(hook)
    _bars_quieted = True


def load_tokenizer(path: str | Path, padding_side: str = "left"):
    from transformers import AutoTokenizer

    check_model_dir(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:  # many real causal LMs ship without a pad token
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def sequence_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer's own post-processor puts before a text: [bos] for Llama-3 and Gemma
    (Gemma's outputs degrade badly without it), [] for Qwen2.5 and the tiny tokenizer."""
    cached = getattr(tokenizer, "_genrm_prefix", None)
    if cached is None:
        plain = tokenizer("a b", add_special_tokens=False).input_ids
        full = tokenizer("a b", add_special_tokens=True).input_ids
        at = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
        cached = list(full[:at])
        tokenizer._genrm_prefix = cached
    return list(cached)


def encode(tokenizer, texts) -> list[list[int]]:
    """Token ids of texts that each start a sequence (prompts): the tokenizer's BOS policy once, then
    the text; never an EOS. The one tokenisation of training data, scoring, sampling and the
    service, so a model sees at inference exactly the layout it was trained on. Continuations
    (completions, cues) are tokenised with `add_special_tokens=False` and appended."""
    prefix = sequence_prefix(tokenizer)
    # a chat-templated text already starts with the template's BOS: never a second one
    return [list(ids) if prefix and list(ids[:len(prefix)]) == prefix else prefix + list(ids)
            for ids in tokenizer(list(texts), add_special_tokens=False).input_ids]


def load_causal_lm(path: str | Path, device: str = "auto", dtype: str = "auto"):
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    quiet_weight_bars()
    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype, device))
    return model.to(device).eval()


class _HeldRecords(logging.Filter):
    """Holds back the records of a logger (returns False) and keeps them, to re-emit or drop later."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record):
        self.records.append(record)
        return False


def scalar_head_from_pretrained(path: str | Path, pad_token_id=None, **kwargs):
    """`AutoModelForSequenceClassification` with one label on `path`: the ORM's model, in training and
    in scoring. Started from a plain causal LM (as every ORM training is), its score head is new by
    design, and transformers reports that missing key as a warning table on every load. That report
    is dropped when the score head is all it is about; any other missing, unexpected or mismatched
    key is reported as transformers wrote it, and so is everything it logged before an error."""
    from transformers import AutoModelForSequenceClassification

    quiet_weight_bars()
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    hf_log = logging.getLogger("transformers.modeling_utils")
    held, info = _HeldRecords(), None
    hf_log.addFilter(held)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1,
                                                                         output_loading_info=True, **kwargs)
    finally:  # on an error (info is None) everything it logged is shown
        hf_log.removeFilter(held)
        expected = info is not None and _head_only(info)
        for record in held.records:
            if not (expected and record.levelno >= logging.WARNING) and hf_log.isEnabledFor(record.levelno):
                hf_log.handle(record)
    return model


def _head_only(info: dict) -> bool:
    """True when the load's only difference from the checkpoint is a new score head (`score.*`)."""
    missing = info.get("missing_keys") or ()
    return (all(str(k).startswith("score.") for k in missing) and not info.get("unexpected_keys")
            and not info.get("mismatched_keys") and not info.get("error_msgs"))


def load_scalar_head_model(path: str | Path, device: str = "auto", dtype: str = "auto", pad_token_id=None):
    """A causal LM body with a 1-unit score head (the ORM); a fresh head if `path` is a plain LM."""
    check_model_dir(path)
    device = resolve_device(device)
    model = scalar_head_from_pretrained(path, pad_token_id=pad_token_id, dtype=resolve_dtype(dtype, device))
    return model.to(device).eval()
