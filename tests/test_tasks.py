import random

import pytest

from genrm_rl.prompts import VERDICT_CUE
from genrm_rl.tasks import Problem, get_task, word_list


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
def test_oracle_rationale_checks_the_answer_against_the_question(name):
    task = get_task(name)
    rng = random.Random(0)
    for p in task.make_problems("test", 40, seed=2):
        reference = task.solve(p).splitlines()
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
            if name == "last_letter":  # a row per position: the solution's letter, the question's, a mark
                given, rows = task.extract_answer(bad), lines[:-2]
                assert len(rows) == max(len(given), len(p.target)) and lines[-2] == "Wrong."
                for i, row in enumerate(rows):
                    got, want = (given[i] if i < len(given) else "_"), (p.target[i] if i < len(p.target) else "_")
                    assert row == f"{got}/{want}{'+' if got == want else '-'}"
                assert "-" in "".join(row[3] for row in rows)
                continue
            # the sort done again from the question, then a row per position: its word, the sort's, a mark
            given, want = task.extract_answer(bad).split(), p.target.split()
            assert lines[:len(reference) - 1] == reference[:-1] and lines[-2] == "Wrong."
            rows = lines[len(reference) - 1:-2]
            assert len(rows) == max(len(given), len(want))
            for i, row in enumerate(rows):
                got, expected = (given[i] if i < len(given) else "_"), (want[i] if i < len(want) else "_")
                assert row == f"{got}/{expected}{'+' if got == expected else '-'}"
            assert any(row.endswith("-") for row in rows)
        if name == "word_sort":
            assert reference[-1] == f"The answer is {p.target}."
            assert all(row.endswith("+") for row in good.text.splitlines()[len(reference) - 1:-2])


def test_word_sort_planted_errors_cover_every_way_an_answer_goes_wrong():
    task = get_task("word_sort")
    rng = random.Random(4)
    seen = set()
    for p in task.make_problems("mixed", 80, seed=1):
        items = task.items(p.question)
        bad, _ = task.corrupt(p, rng)
        given = task.extract_answer(bad).split()
        seen.add("foreign" if set(given) - set(items) else "repeat" if len(set(given)) < len(given) else
                 "missing" if set(items) - set(given) else "order")
    assert seen == {"foreign", "missing", "repeat", "order"}
    p = task.make_problems("train", 1, seed=0)[0]
    rows = task.rationale(p, "no answer").text.splitlines()[len(task.solve(p).splitlines()) - 1:-2]
    assert rows == [f"_/{w}-" for w in p.target.split()]


def test_end_positions_cover_short_and_long_lists_from_both_ends():
    from genrm_rl.tasks.base import end_positions

    assert end_positions([]) == ["_"] * 6
    assert end_positions(list("tg")) == ["t", "g", "_", "g", "t", "_"]
    assert end_positions(list("tge")) == ["t", "g", "e", "e", "g", "t"]
    assert end_positions(list("abcdef")) == ["a", "b", "c", "f", "e", "d"]  # six items: each read once
    assert end_positions(list("abcdefg")) == ["a", "b", "c", "g", "f", "e"]  # the middle is not read
    assert end_positions(list("abcd"), per_end=1) == ["a", "d"]


@pytest.mark.parametrize("name", ["last_letter", "word_sort"])
def test_ends_rationale_has_six_rows_and_the_checkers_verdict(name):
    from genrm_rl.tasks.base import end_positions

    task = get_task(name)
    rng = random.Random(3)
    for split in ("train", "test"):
        for p in task.make_problems(split, 30, seed=4):
            for solution in [task.solve(p), task.corrupt(p, rng)[0], task.corrupt(p, rng)[0]]:
                r = task.rationale(p, solution, rows="ends")
                assert r == task.rationale(p, solution, rows="ends")
                lines = r.text.splitlines()
                assert r.verdict == task.is_correct(p, solution)
                assert lines[-1] == f"{VERDICT_CUE} {'Yes' if r.verdict else 'No'}"
                rows = lines[-8:-2]
                answer = task.extract_answer(solution) or ""
                given = end_positions(list(answer) if name == "last_letter" else answer.split())
                want = end_positions(list(p.target) if name == "last_letter" else p.target.split())
                assert rows == [f"{g}/{w}{'+' if g == w else '-'}" for g, w in zip(given, want, strict=True)]
                if r.verdict:
                    assert all(row.endswith("+") for row in rows)


@pytest.mark.parametrize("name", ["last_letter", "word_sort"])
def test_long_answers_are_wrong_longer_than_the_list_and_marked_past_its_end(name):
    task = get_task(name)
    assert task.has_long_answers and not get_task("gsm8k").has_long_answers
    for i, p in enumerate(task.make_problems("train", 30, seed=5)):
        solution = task.long_answer(p, random.Random(i))
        assert solution == task.long_answer(p, random.Random(i))  # seeded
        assert solution.splitlines()[:-1] == task.solve(p).splitlines()[:-1]  # only the answer line differs
        answer, target = task.extract_answer(solution), p.target
        given, want = (list(answer), list(target)) if name == "last_letter" else (answer.split(), target.split())
        assert given[:len(want)] == want and 2 <= len(given) - len(want) <= 4
        assert not task.is_correct(p, solution)
        r = task.rationale(p, solution)
        assert not r.verdict and r.text.splitlines()[-3 - (len(given) - len(want))].endswith("+")
        assert all(row.startswith(f"{g}/_") and row.endswith("-")
                   for row, g in zip(r.text.splitlines()[-2 - (len(given) - len(want)):-2], given[len(want):], strict=True))


def test_spelled_rows_compare_first_and_last_letters_of_each_word():
    task = get_task("word_sort")
    p = Problem("p", "word_sort", 'Sort the words "tent lock frog change" alphabetically.', "change frog lock tent")
    wrong = "\n".join(task.steps(task.items(p.question), ["change", "tent", "frog", "lock"]))
    r = task.rationale(p, wrong, rows="spelled")
    assert r.text.splitlines()[4:] == [
        "change/change c/c+ e/e+", "tent/frog t/f- t/g-", "frog/lock f/l- g/k-", "lock/tent l/t- k/t-",
        "Wrong.", f"{VERDICT_CUE} No"]
    short = task.rationale(p, "The answer is change frog.", rows="spelled").text.splitlines()
    assert short[4:8] == ["change/change c/c+ e/e+", "frog/frog f/f+ g/g+", "_/lock _/l- _/k-", "_/tent _/t- _/t-"]
    rng = random.Random(0)
    for q in task.make_problems("test", 20, seed=2):
        for solution in (task.solve(q), task.corrupt(q, rng)[0]):
            r = task.rationale(q, solution, rows="spelled")
            assert r.verdict == task.is_correct(q, solution)
            if r.verdict:
                assert "-" not in r.text.replace("Verification", "")


def test_matched_rows_find_each_question_word_in_the_answer_and_check_its_order():
    task = get_task("word_sort")
    p = Problem("p", "word_sort", 'Sort the words "tent lock frog" alphabetically.', "frog lock tent")
    right = task.rationale(p, task.solve(p), rows="matched").text.splitlines()
    assert right == ["tent: frog t/f- lock t/l- tent t/t e/e n/n t/t+ +",
                     "lock: frog l/f- lock l/l o/o c/c k/k+ tent l/t- +",
                     "frog: frog f/f r/r o/o g/g+ lock f/l- tent f/t- +",
                     "frog<lock f/l+", "lock<tent l/t+", "Correct.", f"{VERDICT_CUE} Yes"]
    # a word the question does not have, one word too many (a `_` row), words out of order
    assert task.rationale(p, "The answer is frog loss tent.", rows="matched").text.splitlines()[1] == \
        "lock: frog l/f- loss l/l o/o c/s- tent l/t- -"
    extra = task.rationale(p, "The answer is frog lock tent tent.", rows="matched").text.splitlines()
    assert extra[3] == "_: frog _ lock _ tent _ tent _ -" and extra[6] == "tent<tent t/t e/e n/n t/t -"
    assert task.rationale(p, "The answer is lock frog tent.", rows="matched").text.splitlines()[3] == "lock<frog l/f-"
    assert task.rationale(p, "The answer is frog fro tent.", rows="matched").text.splitlines()[3] == "frog<fro f/f r/r o/o -"
    rng = random.Random(0)
    for q in task.make_problems("train", 40, seed=2):
        for solution in (task.solve(q), task.corrupt(q, rng)[0], "no answer here"):
            r = task.rationale(q, solution, rows="matched")
            rows = r.text.splitlines()[:-2]
            assert r.verdict == task.is_correct(q, solution) == all(row.endswith("+") for row in rows)
    assert task.rationale(p, "no answer here", rows="matched").text.splitlines()[0] == "tent: -"


def test_a_row_layout_the_task_does_not_write_is_a_config_error():
    from genrm_rl.tasks import check_rationale_rows

    p = get_task("last_letter").make_problems("train", 1, seed=0)[0]
    with pytest.raises(ValueError, match="rationale_rows"):
        get_task("last_letter").rationale(p, "The answer is ab.", rows="spelled")
    with pytest.raises(ValueError, match="verifier_stage.rationale_rows='spelled'.*last_letter"):
        check_rationale_rows("last_letter", "spelled", "verifier_stage.rationale_rows")
    check_rationale_rows("word_sort", "spelled")


def test_unknown_rationale_rows_is_a_clear_error():
    task = get_task("last_letter")
    p = task.make_problems("train", 1, seed=0)[0]
    with pytest.raises(ValueError, match="rationale_rows"):
        task.rationale(p, task.solve(p), rows="middle")


def test_steps_are_graded_on_what_the_answer_depends_on():
    task = get_task("last_letter")
    p = task.make_problems("train", 1, seed=5)[0]
    words = task.items(p.question)
    lines = task.solve(p).splitlines()
    # a misnamed word with the right letter is scratch work, not an error
    other = next(w for w in __import__("genrm_rl.tasks", fromlist=["word_list"]).word_list()
                 if w[-1] == words[0][-1] and w != words[0])
    renamed = "\n".join([lines[0].replace(words[0], other)] + lines[1:])
    assert task.first_wrong_step(p, renamed) is None and task.is_correct(p, renamed)
    sort = get_task("word_sort")
    q = sort.make_problems("train", 1, seed=5)[0]
    assert sort.step_result("Left: a b. Pick a.") == "Pick a." and sort.first_wrong_step(q, sort.solve(q)) is None


def test_planted_errors_are_near_misses_that_change_the_answer():
    task = get_task("last_letter")
    rng = random.Random(1)
    kinds = set()
    for p in task.make_problems("mixed", 60, seed=3):
        bad, step = task.corrupt(p, rng)
        assert not task.is_correct(p, bad)
        assert [task.step_result(x) for x in bad.splitlines()[:step - 1]] == \
            [task.step_result(x) for x in task.solve(p).splitlines()[:step - 1]]
        wrong = bad.splitlines()[step - 1]
        kinds.add("end" if '"' in wrong and "end" in wrong else "answer" if wrong.startswith("The answer") else "step")
    assert kinds == {"end", "answer", "step"}


@pytest.mark.parametrize("name", ["last_letter", "word_sort"])
def test_planted_candidates_hold_one_reference_per_problem(name):
    from genrm_rl.generation import planted_candidates

    problems = get_task(name).make_problems("train", 5, seed=2)
    cands = planted_candidates(problems, 4, random.Random(0))
    assert [c.problem_id for c in cands] == [p.id for p in problems for _ in range(4)]
    assert [c.candidate_id for c in cands] == [0, 1, 2, 3] * 5
    assert [sum(c.correct for c in cands[i:i + 4]) for i in range(0, 20, 4)] == [1] * 5
    assert cands == planted_candidates(problems, 4, random.Random(0))  # the same rng state, the same set


def test_rationale_for_truncated_and_garbage_candidates():
    task = get_task("last_letter")
    p = task.make_problems("test", 1, seed=0)[0]
    first_line = task.solve(p).splitlines()[0]
    r = task.rationale(p, first_line)
    assert r.first_error_step == 2 and not r.verdict
    assert r.text.splitlines()[:-1] == [f"_/{c}-" for c in p.target] + ["Wrong."]
    r = task.rationale(p, task.solve(p) + "\nmore")  # an extra line after the answer: the answer is still right
    assert r.verdict and r.first_error_step is None
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
