"""Record schemas, released-data loaders (on the real shared files) and the prompt format."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genrm_rl import critiques
from genrm_rl.prompts import COT_CUE, VERDICT_CUE, get_prompt_format
from genrm_rl.records import Candidate, RecordError, Score, read_records, write_records
from genrm_rl.tasks import Problem

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "genrm-critiques"


def test_records_roundtrip_and_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    recs = [Candidate("p1", 0, "q", "s", "a", True), Candidate("p1", 1, "q", "s2", None, False)]
    assert write_records(path, recs) == 2
    assert read_records(path, Candidate) == recs
    path.write_text('{"problem_id": "p", "candidate_id": 0, "score": 0.5}\n{"problem_id": "p", "score": 1}\n')
    with pytest.raises(RecordError, match=r"c.jsonl:2: missing field\(s\) \['candidate_id'\]"):
        read_records(path, Score)
    path.write_text('{"problem_id": "p", "candidate_id": 0, "score": "high"}\n')
    with pytest.raises(RecordError, match=r"c.jsonl:1: field 'score'"):
        read_records(path, Score)
    path.write_text('{"id": "x", "task": "t", "question": "q", "target": "a"}\n{oops\n')
    with pytest.raises(RecordError, match=r"c.jsonl:2: invalid JSON"):
        read_records(path, Problem)


def test_data_make_cli(tmp_path):
    out = tmp_path / "problems.jsonl"
    subprocess.run([sys.executable, "-m", "genrm_rl.cli", "data", "make", "--task", "last_letter", "--split", "test",
                    "--num", "20", "--seed", "0", "--out", str(out)], check=True, capture_output=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and set(rows[0]) == {"id", "task", "question", "target"}
    bad = subprocess.run([sys.executable, "-m", "genrm_rl.cli", "data", "make", "--split", "dev"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no split 'dev'" in bad.stderr


def test_released_prompt_format_is_rebuilt_exactly():
    fmt = get_prompt_format("released")
    rows = 0
    for name in ("rm_correct_solutions_batch_08_val.zip", "critiques_incorrect_solutions_batch_16_val.zip"):
        for obj in critiques._records(DATA / name, critiques.RELEASED_FIELDS):
            q, s, kind = fmt.parse(obj["inputs"])
            rebuilt = fmt.direct(q, s) if kind == "direct" else fmt.cot(q, s)
            assert rebuilt == obj["inputs"]
            rows += 1
    assert rows == 125 + 134
    assert fmt.cot("q", "s").endswith(f"s\n{COT_CUE}\n") and fmt.direct("q", "s").endswith(f"s\n{VERDICT_CUE}")


def test_answer_only_prompts_show_the_answer_line():
    """`verify_input: answer` keeps the layout and cues and shows only the candidate's last answer line
    (or, without one, its last line); the generation prompt does not change."""
    from genrm_rl.prompts import answer_line

    solution = "\" coat: t, so t.\ncoat dog: g, so tg.\ndog \": end.\nThe answer is tg."
    full, short = get_prompt_format("compact"), get_prompt_format("compact", verify_input="answer")
    assert short.cot("Q?", solution) == f"Q: Q?\nA: Let's think step by step.\nThe answer is tg.\n{COT_CUE}\n"
    assert short.direct("Q?", solution).endswith(f"step by step.\nThe answer is tg.\n{VERDICT_CUE}")
    assert full.cot("Q?", solution) == short.cot("Q?", solution).replace("The answer is tg.", solution)
    assert short.generation("Q?") == full.generation("Q?")
    assert short.parse(short.cot("Q?", solution)) == ("Q?", "The answer is tg.", "cot")
    assert answer_line("a\nThe answer is x.\nThe answer is y.\n") == "The answer is y."
    assert answer_line("coat dog: g, so tg.\n\n") == "coat dog: g, so tg."
    assert answer_line("") == ""
    released = get_prompt_format("released", verify_input="answer")
    assert released.header == get_prompt_format("released").header and released.verify_input == "answer"
    with pytest.raises(ValueError, match="verify_input"):
        get_prompt_format("compact", verify_input="steps")


def test_aligned_view_hides_the_list_and_writes_it_right_aligned_twice():
    """`question_view: aligned` shows a quoted list reversed and as asked on lines of 8 slots, padded
    in front; `parse` gives the question back; a longer list gets longer lines; a question without a
    quoted list is shown as asked; the generation prompt does not change; a bad value is an error."""
    from genrm_rl.prompts import VIEW_WIDTH, aligned_view, unaligned

    q = 'Take the last letters of the words in "about above act" and concatenate them.'
    fmt = get_prompt_format("compact", verify_input="answer", question_view="aligned")
    assert fmt.cot(q, "x\nThe answer is tet.") == (
        'Q: Take the last letters of the words in "..." and concatenate them.\n'
        '"~ ~ ~ ~ ~ act above about"\n"~ ~ ~ ~ ~ about above act"\n'
        f"A: Let's think step by step.\nThe answer is tet.\n{COT_CUE}\n")
    assert fmt.parse(fmt.cot(q, "The answer is tet.")) == (q, "The answer is tet.", "cot")
    assert fmt.parse(fmt.direct(q, "The answer is tet.")) == (q, "The answer is tet.", "direct")
    assert fmt.generation(q) == get_prompt_format("compact").generation(q)
    words = [f"w{i}" for i in range(VIEW_WIDTH + 2)]
    long_q = f'Sort the words "{" ".join(words)}" alphabetically.'
    assert aligned_view(long_q).splitlines()[2] == f'"{" ".join(words)}"' and unaligned(aligned_view(long_q)) == long_q
    assert aligned_view("What is 2 + 3?") == "What is 2 + 3?" and unaligned("What is 2 + 3?") == "What is 2 + 3?"
    with pytest.raises(ValueError, match="question_view"):
        get_prompt_format("compact", question_view="sideways")


def test_ends_view_shows_the_three_words_at_each_end_and_needs_ends_rows():
    """`question_view: ends` writes the list's first three words (reversed) and its last three, so a
    5-6-word list fills the same slots as a 3-4-word one; `parse` gives every list of up to 6 words
    back; the view needs the rows that read only those words."""
    from genrm_rl.prompts import ENDS_WIDTH, aligned_view, unaligned
    from genrm_rl.tasks.base import ROWS_PER_END
    from genrm_rl.training.data import TrainDataConfig

    assert ENDS_WIDTH == ROWS_PER_END
    fmt = get_prompt_format("compact", verify_input="answer", question_view="ends")
    lines = {n: [f"w{i}" for i in range(1, n + 1)] for n in range(2, 9)}
    views = {n: aligned_view(f'Take the last letters of the words in "{" ".join(w)}" and concatenate them.', ends=True)
             for n, w in lines.items()}
    assert views[2].splitlines()[1:] == ['"~ w2 w1"', '"~ w1 w2"']
    assert views[4].splitlines()[1:] == ['"w3 w2 w1"', '"w2 w3 w4"']
    assert views[6].splitlines()[1:] == ['"w3 w2 w1"', '"w4 w5 w6"']
    for n in range(2, 7):
        q = f'Take the last letters of the words in "{" ".join(lines[n])}" and concatenate them.'
        assert unaligned(views[n]) == q and fmt.parse(fmt.cot(q, "The answer is x."))[0] == q
    assert unaligned(views[8]) == 'Take the last letters of the words in "w1 w2 w3 w6 w7 w8" and concatenate them.'
    with pytest.raises(ValueError, match="rationale_rows 'ends'"):
        TrainDataConfig(task="last_letter", question_view="ends")
    assert TrainDataConfig(task="last_letter", question_view="ends", rationale_rows="ends").question_view == "ends"


def test_every_verifier_reads_the_question_view_it_was_trained_with(tmp_path):
    """The view is recorded with the model and always used to score it; the ORM's input shows it too."""
    from genrm_rl.verifier import VerifierConfig, orm_input, verifier_prompt_format

    q = 'Take the last letters of the words in "about act" and concatenate them.'
    (tmp_path / "genrm_rl.json").write_text(json.dumps({"objective": "orm", "prompt_format": "compact",
                                                         "verify_input": "answer", "question_view": "aligned"}))
    fmt = verifier_prompt_format(VerifierConfig(model=str(tmp_path), mode="cot"), None)
    assert fmt.question_view == "aligned"
    assert orm_input(fmt, q, "The answer is tt.").endswith('"~ ~ ~ ~ ~ ~ about act"\nA: Let\'s think step by step.\n'
                                                             "The answer is tt.")
    older = tmp_path / "older"
    older.mkdir()
    (older / "genrm_rl.json").write_text(json.dumps({"objective": "genrm_cot", "prompt_format": "compact"}))
    assert verifier_prompt_format(VerifierConfig(model=str(older), mode="cot"), None).question_view == "as_asked"


def test_verifier_reads_what_its_training_recorded(tmp_path, caplog):
    """A verifier is scored on the input it trained on (`genrm_rl.json`), unless told otherwise, which
    warns; a model without the record reads whole solutions."""
    from genrm_rl.verifier import VerifierConfig, resolve_verify_input

    (tmp_path / "genrm_rl.json").write_text(json.dumps({"objective": "genrm_cot", "prompt_format": "compact",
                                                         "verify_input": "answer"}))
    assert resolve_verify_input(VerifierConfig(model=str(tmp_path), mode="cot")) == "answer"
    with caplog.at_level("WARNING", logger="genrm_rl.verifier"):
        assert resolve_verify_input(VerifierConfig(model=str(tmp_path), mode="cot", verify_input="solution")) == "solution"
    assert "trained to read the candidate's answer" in caplog.text
    assert resolve_verify_input(VerifierConfig(model=str(tmp_path / "none"), mode="cot")) == "solution"
    with pytest.raises(ValueError, match="verify_input"):
        VerifierConfig(model=str(tmp_path), mode="cot", verify_input="steps")


def test_released_loaders_counts():
    assert len(critiques.load_released(DATA / "rm_correct_solutions_batch_08_val.zip")) == 125
    neg = critiques.load_released(DATA / "rm_incorrect_solutions_batch_08_val.zip")
    assert len(neg) == 87 and not any(e.correct for e in neg)
    cot = critiques.load_released(DATA / "critiques_incorrect_solutions_batch_16_val.zip")
    assert len(cot) == 134 and all(e.rationale.rstrip().endswith(f"{VERDICT_CUE} No") for e in cot)


def test_raw_rationales_filter_counts():
    examples, stats = critiques.load_rationales(DATA / "data_collection/critique_gen_incorrect_solutions_round_0_shard_0.jsonl.gz")
    assert stats.total == 8321
    assert stats.kept + stats.no_verdict + stats.disagrees == stats.total
    assert (stats.kept, stats.no_verdict, stats.disagrees) == (6537, 1473, 311)
    assert len(examples) == stats.kept and not any(e.correct for e in examples)
    assert all(e.rationale.endswith(f"{VERDICT_CUE} No") for e in examples)
    kept_all, stats_all = critiques.load_rationales(
        DATA / "data_collection/critique_gen_incorrect_solutions_round_0_shard_0.jsonl.gz", keep_disagreeing=True)
    assert stats_all.kept == stats.kept + stats.disagrees


def test_verdict_parser_variants():
    assert critiques.parse_verdict("... Verification: Is the answer correct (Yes/No)? Yes") is True
    assert critiques.parse_verdict("**Verification: Is the answer correct (Yes/No)? No**") is False
    assert critiques.parse_verdict("Is the answer correct (Yes/No)? <b>Yes</b>") is True
    assert critiques.parse_verdict("Is the answer correct? (Yes/No) Yes") is None
    assert critiques.parse_verdict("no verdict") is None


def test_loader_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"inputs": "a"}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:1: missing field"):
        critiques.load_released(bad)
