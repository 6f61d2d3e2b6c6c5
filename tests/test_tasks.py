import random

import pytest

from genrm_rl.prompts import VERDICT_CUE
from genrm_rl.tasks import get_task, word_list


@pytest.mark.parametrize("name", ["last_letter", "word_sort"])
def test_generators_are_deterministic_and_sized(name):
    task = get_task(name)
    a = task.make_problems("train", 50, seed=3)
    assert a == task.make_problems("train", 50, seed=3)
    assert a != task.make_problems("train", 50, seed=4)
    words = set(word_list())
    for split, (lo, hi) in task.lengths.items():
        for p in task.make_problems(split, 100, seed=0):
            items = task.items(p.question)
            assert lo <= len(items) <= hi
            assert set(items) <= words  # real words from the packaged list
            assert task.is_correct(p, task.solve(p))
    assert len(words) == 300 and all(w.isalpha() for w in words)


def test_last_letter_answer_and_checker():
    task = get_task("last_letter")
    p = task.make_problems("test", 1, seed=0)[0]
    assert p.target == "".join(w[-1] for w in task.items(p.question))
    assert task.extract_answer("x\nThe answer is abc.") == "abc"
    assert task.extract_answer("no answer here") is None
    assert not task.is_correct(p, "The answer is zzzzzz.")


def test_word_sort_target():
    task = get_task("word_sort")
    p = task.make_problems("test", 1, seed=1)[0]
    assert p.target.split() == sorted(task.items(p.question))


@pytest.mark.parametrize("name", ["last_letter", "word_sort"])
def test_oracle_rationale_catches_planted_error_at_its_step(name):
    task = get_task(name)
    rng = random.Random(0)
    for p in task.make_problems("test", 40, seed=2):
        good = task.rationale(p, task.solve(p))
        assert good.verdict and good.first_error_step is None
        assert good.text.endswith(f"{VERDICT_CUE} Yes")
        for _ in range(5):
            bad, step = task.corrupt(p, rng)
            assert not task.is_correct(p, bad)
            r = task.rationale(p, bad)
            assert not r.verdict and r.first_error_step == step, (bad, r.text)
            lines = r.text.splitlines()
            assert lines[-1] == f"{VERDICT_CUE} No"
            assert "Wrong" in lines[step - 1] and all(line.endswith("Correct.") for line in lines[: step - 1])


def test_planted_errors_are_near_misses_that_change_the_answer():
    task = get_task("last_letter")
    rng = random.Random(1)
    kinds = set()
    for p in task.make_problems("mixed", 60, seed=3):
        bad, step = task.corrupt(p, rng)
        assert not task.is_correct(p, bad) and bad.splitlines()[:step - 1] == task.solve(p).splitlines()[:step - 1]
        wrong = bad.splitlines()[step - 1]
        kinds.add("end" if '"' in wrong and "end" in wrong else "answer" if wrong.startswith("The answer") else "step")
    assert kinds == {"end", "answer", "step"}


def test_rationale_for_truncated_and_garbage_candidates():
    task = get_task("last_letter")
    p = task.make_problems("test", 1, seed=0)[0]
    first_line = task.solve(p).splitlines()[0]
    r = task.rationale(p, first_line)
    # the second step is written as it should be, then found missing from the solution
    assert r.first_error_step == 2 and r.text.splitlines()[1] == task.solve(p).splitlines()[1] + " Wrong."
    longer = task.solve(p) + "\nmore"
    r = task.rationale(p, longer)
    assert r.text.splitlines()[-2] == "End of solution. Wrong." and not r.verdict
    r = task.rationale(p, "blah")
    assert r.first_error_step == 1 and not r.verdict


def test_gsm8k_answer_extraction():
    task = get_task("gsm8k")
    assert task.extract_answer("So he pays $27 * 3 = $81.\nThe answer is $81.") == "81"
    assert task.extract_answer("work...\n#### 81") == "81"
    assert task.extract_answer("The answer is 1,234.") == "1234"
    assert task.extract_answer("The answer is -3.50") == "-3.5"
    assert task.extract_answer("nothing") is None
    from genrm_rl.tasks import Problem

    assert task.is_correct(Problem("1", "gsm8k", "q", "81"), "The answer is 81.0")
    with pytest.raises(ValueError, match="not generated"):
        task.make_problems("test", 1)


def test_unknown_task_and_split():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    with pytest.raises(ValueError, match="splits"):
        get_task("last_letter").make_problems("dev", 1)
