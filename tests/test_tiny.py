"""The tiny tokenizer's vocabulary is fixed: every tiny model's random init depends on its size, so a
vocabulary that followed the tasks' current wording changed every committed result when a rationale
was reworded (it did once: 460 -> 456 tokens)."""

import hashlib


def test_every_word_the_tasks_write_is_one_token():
    from genrm_rl.tiny import build_tiny_tokenizer, task_text_words

    tok = build_tiny_tokenizer()
    split = {w: tok.tokenize(w) for w in sorted(task_text_words())}
    assert {w: pieces for w, pieces in split.items() if len(pieces) != 1} == {}


def test_the_vocabulary_is_the_one_the_committed_results_were_trained_with():
    from genrm_rl.tiny import build_tiny_tokenizer

    vocab = sorted(build_tiny_tokenizer().get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]
    # Changing it re-initialises every tiny model: re-run docs/results before updating this.
    assert (len(vocab), digest) == (460, DIGEST)


DIGEST = "de8f44e0a2c5cfeb"
