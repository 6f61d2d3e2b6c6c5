"""SFT data for every objective, built deterministically from a config (so a resumed job rebuilds
exactly the data it was trained on).

- verification (GenRM-CoT): prompt = question + solution + "Let's verify step by step." cue,
  completion = an oracle (or released) rationale ending in the verdict;
- verification (direct GenRM): prompt ends with the verdict cue, completion " Yes"/" No";
- generation: prompt = question, completion = a correct solution + EOS (the λ term);
- ORM: text = question + solution, label = correct.
Candidates for verification come from the task's planted-error generator (balanced), from
sampled candidates in a JSONL file, and/or from the released genrm-critiques files.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

from genrm_rl.config import option


@dataclasses.dataclass
class TrainDataConfig:
    task: str = option("last_letter", help="algorithmic task for oracle data ('' to use only files)")
    num_problems: int = option(2000, help="problems generated for the task")
    split: str = option("train", help="task split the problems come from (train = 2-4 words)")
    seed: int = option(0, help="problem generation seed")
    negatives_per_problem: int = option(1, help="planted-error candidates per problem (one correct each)")
    foreign_negatives_per_problem: int = option(
        0, help="wrong candidates per problem that are another problem's correct solution (same length): their "
                "letters disagree with the question almost everywhere, so a verifier that copies the solution "
                "instead of reading the question is wrong on every step (docs/experiments.md, T2)")
    long_negatives_per_problem: int = option(
        0, help="wrong candidates per problem that are the reference solution with 2-4 extra items appended to "
                "its answer: answers longer than the list, so the verifier also learns to read answer items "
                "(and question words) further from its rows than 2-4-item answers put them "
                "(docs/experiments.md, X5 and A2)")
    verify_input: Literal["solution", "answer"] = option(
        "solution", help="what verification examples show of a candidate: the whole solution (the paper) or its "
                         "final-answer line (see genrm_rl.prompts); recorded with the model for scoring")
    question_view: Literal["as_asked", "aligned", "ends"] = option(
        "as_asked", help="how verification examples show the question: as asked (the paper), its quoted list "
                         "on two right-aligned lines (aligned), or only the three words at each end of it (ends; "
                         "needs rationale_rows: ends) (see genrm_rl.prompts); recorded with the model for scoring")
    mask_long_answer_verdicts: bool = option(
        False, help="GenRM-CoT: leave the final Yes/No of a candidate whose answer is longer than the right one "
                    "out of the loss (its rows and Wrong. line are trained). On 2-4-item data every such answer "
                    "is wrong, and a verdict trained on them says No to right 5-6-item answers after writing "
                    "Correct. (docs/experiments.md, VM1)")
    viewed_generation: bool = option(
        False, help="GenRM objectives: the λ term's generation prompts show the question through question_view "
                    "too, as the verification prompts do (the solutions are unchanged); else as asked. Under "
                    "`ends` the λ term then trains the lookups the rows use (docs/experiments.md, GV)")
    candidates_files: list[str] = option([], help="extra candidates JSONL files (e.g. generator samples)")
    released_files: list[str] = option([], help="genrm-critiques .zip / data_collection .jsonl.gz files")
    released_limit: int = option(0, help="use at most this many released examples (0 = all)")
    prompt_format: Literal["released", "compact", "chat"] = option("compact", help="prompt layout (see genrm_rl.prompts); chat = the model's "
                                                                         "chat template")
    max_length: int = option(1024, help="drop examples longer than this many tokens (counted in the log)")
    exclude_problems: list[str] = option([], help="problems JSONL files whose questions must not be trained on")
    val_fraction: float = option(0.05, help="fraction held out for validation loss")
    rationale_rows: Literal["all", "ends", "spelled", "matched"] = option(
        "all", help="oracle rationale rows (tasks with answer rows): 'all' = one per answer position; 'ends' = "
                    "the first three and the last three positions, so no row reads beyond the third item from "
                    "an end of the list (docs/experiments.md, E1); 'spelled' = one per answer position, its words' "
                    "first and last letters compared (word sorting; docs/experiments.md, W7); 'matched' = no sort: each "
                    "question word matched against the answer's words by letters, then adjacent answer words "
                    "compared for order (word sorting; docs/experiments.md, W10)")
    balance: bool = option(False, help="equal numbers of correct and incorrect solutions: plant errors into "
                                       "(or add reference solutions for) the task's problems until they match, "
                                       "as the paper balances its verification data")

    def __post_init__(self):
        if min(self.num_problems, self.negatives_per_problem, self.foreign_negatives_per_problem,
               self.long_negatives_per_problem) < 0:
            raise ValueError("num_problems, negatives_per_problem, foreign_negatives_per_problem and "
                             "long_negatives_per_problem must be >= 0")
        from genrm_rl.kinds import check_choice
        from genrm_rl.prompts import VERIFY_INPUTS, check_view_options
        from genrm_rl.tasks import check_long_negatives, check_rationale_rows

        check_choice(self.verify_input, VERIFY_INPUTS, "verify_input")
        check_view_options(self.question_view, self.rationale_rows, self.viewed_generation)
        if self.mask_long_answer_verdicts and not self.task:
            raise ValueError("mask_long_answer_verdicts needs data.task: the right answer comes from the task")
        check_long_negatives(self.task, self.long_negatives_per_problem)
        check_rationale_rows(self.task, self.rationale_rows)
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.task and not self.candidates_files and not self.released_files:
            raise ValueError("training data is empty: set data.task, data.candidates_files or data.released_files")


@dataclasses.dataclass
class Example:
    """One training example. SFT: prompt/completion/kind. ORM: prompt is the text, label is set."""

    prompt: str
    completion: str = ""
    kind: Literal["verify", "generate", "orm"] = "verify"
    label: float | None = None


@dataclasses.dataclass
class DataStats:
    verify: int = 0
    generate: int = 0
    orm_pos: int = 0
    orm_neg: int = 0
    rationale_disagrees: int = 0
    released_dropped: int = 0
    excluded: int = 0
    too_long: int = 0
    balanced_added: int = 0
    foreign_negatives: int = 0
    verdicts_masked: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _labelled_candidates(cfg: TrainDataConfig) -> tuple[list[tuple[str, str, bool, str | None]], DataStats]:
    """(question, solution, correct, rationale-or-None) from every configured source."""
    from genrm_rl.records import Candidate, read_records
    from genrm_rl.tasks import Problem, get_task

    stats = DataStats()
    out: list[tuple[str, str, bool, str | None]] = []
    task = get_task(cfg.task) if cfg.task else None
    rng = random.Random(f"train-data/{cfg.seed}")
    held_out = {p.question for path in cfg.exclude_problems for p in read_records(path, Problem)}
    if task is not None and cfg.num_problems:
        problems = [p for p in task.make_problems(cfg.split, cfg.num_problems, cfg.seed) if p.question not in held_out]
        stats.excluded += cfg.num_problems - len(problems)  # evaluation problems never leak into training
        lengths, by_length = [], {}
        if cfg.foreign_negatives_per_problem:
            lengths = [len(task.items(p.question)) for p in problems]
            for problem, length in zip(problems, lengths, strict=True):
                by_length.setdefault(length, []).append(problem)
        for i, problem in enumerate(problems):
            good = task.solve(problem)
            out.append((problem.question, good, True, task.rationale(problem, good, cfg.rationale_rows).text))
            for _ in range(cfg.negatives_per_problem):
                bad, _step = task.corrupt(problem, rng)
                out.append((problem.question, bad, False, task.rationale(problem, bad, cfg.rationale_rows).text))
            for j in range(cfg.long_negatives_per_problem):  # own draws: the other negatives stay as they were
                long = task.long_answer(problem, random.Random(f"long/{cfg.seed}/{i}" + (f"/{j}" if j else "")))
                out.append((problem.question, long, False, task.rationale(problem, long, cfg.rationale_rows).text))
            if not cfg.foreign_negatives_per_problem:
                continue
            peers = [p for p in by_length[lengths[i]] if p.target != problem.target]
            for _ in range(cfg.foreign_negatives_per_problem if peers else 0):
                other = task.solve(peers[rng.randrange(len(peers))])
                out.append((problem.question, other, False, task.rationale(problem, other, cfg.rationale_rows).text))
                stats.foreign_negatives += 1
    if cfg.balance and task is None:
        raise ValueError("data.balance plants errors into the task's problems: it needs data.task")
    for path in cfg.candidates_files:
        if task is None:
            raise ValueError("data.candidates_files needs data.task to write oracle rationales")
        for cand in read_records(path, Candidate):
            problem = Problem(cand.problem_id, task.name, cand.question, task.target(task.items(cand.question)))
            correct = task.is_correct(problem, cand.solution)
            rationale = task.rationale(problem, cand.solution, cfg.rationale_rows)
            text = rationale.text
            if rationale.verdict != correct:  # e.g. a wrong word with the right last letter
                # The paper's filter: such a rationale is not trained on (GenRM-CoT skips the
                # candidate), but its label still teaches direct GenRM and the ORM.
                stats.rationale_disagrees += 1
                text = None
            out.append((cand.question, cand.solution, correct, text))
    if cfg.balance and out:
        stats.balanced_added = _balance(out, task, rng, cfg.rationale_rows)
    if cfg.released_files:
        from genrm_rl.critiques import load_rationales, load_released

        released = []
        for path in cfg.released_files:
            if str(path).endswith(".jsonl.gz"):
                examples, fstats = load_rationales(path)
                stats.released_dropped += fstats.total - fstats.kept
            else:
                examples = load_released(path)
            released += [(e.question, e.solution, e.correct, e.rationale) for e in examples]
        if cfg.released_limit:
            rng.shuffle(released)
            released = released[: cfg.released_limit]
        out += released
    return out, stats


def _balance(out: list, task, rng: random.Random, rows: str = "all") -> int:
    """Add planted-error solutions (or reference solutions) for questions already in `out` until the
    correct and incorrect counts are equal; returns how many were added."""
    from genrm_rl.tasks import Problem

    questions = sorted({q for q, *_ in out})
    gap = sum(1 if correct else -1 for _, _, correct, _ in out)
    for k in range(abs(gap)):
        question = questions[rng.randrange(len(questions))]
        problem = Problem(f"balance-{k}", task.name, question, task.target(task.items(question)))
        solution = task.corrupt(problem, rng)[0] if gap > 0 else task.solve(problem)
        out.append((question, solution, gap < 0, task.rationale(problem, solution, rows).text))
    return abs(gap)


def _longer_than_right(task, question: str, solution: str) -> bool:
    """Whether the solution's answer has more characters than `task`'s right answer to `question`."""
    try:
        right = task.target(task.items(question))
    except ValueError:  # not one of the task's questions (released data): nothing to compare
        return False
    answer = task.extract_answer(solution)
    return answer is not None and len(answer) > len(right)


def build_examples(objective: str, cfg: TrainDataConfig, gen_weight: float, gen_weight_mode: str,
                   eos_token: str, tokenizer=None) -> tuple[list[Example], DataStats]:
    """All examples for `objective` (genrm_cot, genrm_direct, orm, generator); `tokenizer` builds the
    `chat` prompt format from its template."""
    from genrm_rl.prompts import NO, YES, get_prompt_format
    from genrm_rl.tasks import get_task
    from genrm_rl.verifier import orm_input

    fmt = get_prompt_format(cfg.prompt_format, tokenizer, cfg.verify_input, cfg.question_view)
    candidates, stats = _labelled_candidates(cfg)
    rng = random.Random(f"mix/{cfg.seed}")
    examples: list[Example] = []
    mask_task = get_task(cfg.task) if cfg.mask_long_answer_verdicts else None
    if objective == "orm":
        for q, s, correct, _ in candidates:
            examples.append(Example(orm_input(fmt, q, s), kind="orm", label=float(correct)))
            stats.orm_pos += int(correct)
            stats.orm_neg += int(not correct)
        return examples, stats
    # the generator solves the question as asked; a verifier's λ term may read it as its verification does
    view = fmt.viewed if cfg.viewed_generation and objective != "generator" else (lambda q: q)
    generation = [Example(fmt.generation(view(q)), s + eos_token, "generate") for q, s, correct, _ in candidates
                  if correct]
    if objective == "generator":
        stats.generate = len(generation)
        return generation, stats
    for q, s, correct, rationale in candidates:
        if objective == "genrm_cot":
            if rationale is None:  # no usable rationale (direct-only released pairs, filtered ones)
                continue
            if mask_task is not None and _longer_than_right(mask_task, q, s):
                # the completion stops before the verdict: nothing after "(Yes/No)? " is trained
                examples.append(Example(fmt.cot(q, s), rationale[: rationale.rindex(" ") + 1], "verify"))
                stats.verdicts_masked += 1
                continue
            examples.append(Example(fmt.cot(q, s), rationale + eos_token, "verify"))
        else:
            examples.append(Example(fmt.direct(q, s), (YES if correct else NO) + eos_token, "verify"))
    stats.verify = len(examples)
    if gen_weight > 0:
        if gen_weight_mode == "mix":  # λ as the ratio of generation to verification examples
            want = round(gen_weight * len(examples))
            pool = generation * (want // max(len(generation), 1) + 1) if generation else []
            rng.shuffle(pool)
            generation = pool[:want]
        examples += generation
        stats.generate = len(generation)
    return examples, stats


@dataclasses.dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    """-100 on prompt tokens (loss on completion tokens only); for ORM a single float label."""
    kind: int
    """0 verify, 1 generate, 2 orm"""


EXAMPLE_KINDS = {"verify": 0, "generate": 1, "orm": 2}


def tokenize_examples(examples: list[Example], tokenizer, max_length: int) -> tuple[list[Tokenized], int]:
    """Prompt and completion are tokenized separately (as at inference); too-long ones are dropped."""
    out, too_long = [], 0
    from genrm_rl.modeling import encode

    prompts = encode(tokenizer, [e.prompt for e in examples])
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False).input_ids
    for e, p, c in zip(examples, prompts, completions, strict=True):
        if len(p) + len(c) > max_length:
            too_long += 1
            continue
        if e.kind == "orm":
            out.append(Tokenized(list(p), [int(e.label)], EXAMPLE_KINDS["orm"]))
        else:
            out.append(Tokenized(list(p) + list(c), [-100] * len(p) + list(c), EXAMPLE_KINDS[e.kind]))
    return out, too_long


def split_val(items: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(items)))
    random.Random(f"val/{seed}").shuffle(order)
    n_val = int(len(items) * fraction)
    val = [items[i] for i in order[:n_val]]
    train = [items[i] for i in order[n_val:]]
    return train, val
