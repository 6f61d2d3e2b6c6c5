"""Task registry: algorithmic tasks with oracle rationales, and GSM8K answer checking."""

from __future__ import annotations

from genrm_rl.tasks.base import Problem, Rationale, Task, word_list
from genrm_rl.tasks.gsm8k import GSM8KTask
from genrm_rl.tasks.last_letter import LastLetterTask
from genrm_rl.tasks.word_sort import WordSortTask

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


for _cls in (LastLetterTask, WordSortTask, GSM8KTask):
    register_task(_cls)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]()


def check_long_negatives(task: str, count: int, field: str = "long_negatives_per_problem") -> None:
    """At config time, not after the stages before verifier training have run: a task without long
    answers cannot supply `count` long-answer negatives per problem."""
    if task and count and not get_task(task).has_long_answers:
        raise ValueError(f"{field}={count}, but task {task!r} has no long-answer negatives: set {field} to 0")


def check_rationale_rows(task: str, rows: str, field: str = "rationale_rows") -> None:
    """At config time: the oracle rationale's row layout must be one the task writes."""
    layouts = get_task(task).row_layouts if task else (rows,)
    if rows not in layouts:
        raise ValueError(f"{field}={rows!r}, but task {task!r} writes rows {list(layouts)}")


__all__ = ["TASKS", "Problem", "Rationale", "Task", "check_long_negatives", "check_rationale_rows", "get_task",
           "register_task", "word_list"]
