"""JSONL record schemas shared by every job (problems, candidates, scores) and strict readers.

Why: data moves between jobs (and between machines) as JSONL files. A malformed line must fail
with the file name and line number, not as a KeyError three jobs later.

- problems:   {"id", "task", "question", "target"}
- candidates: {"problem_id", "candidate_id", "question", "solution", "answer", "correct"}
- scores:     {"problem_id", "candidate_id", "score"} (+ optional "votes", "rationales")
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import types
import typing
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

R = TypeVar("R")


@dataclasses.dataclass
class Candidate:
    problem_id: str
    candidate_id: int
    question: str
    solution: str
    answer: str | None
    correct: bool


@dataclasses.dataclass
class Score:
    problem_id: str
    candidate_id: int
    score: float
    votes: list[float] | None = None
    rationales: list[str] | None = None


class RecordError(ValueError):
    """A JSONL line that does not match its schema; the message names file and line."""


def _check(tp: Any, value: Any) -> bool:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_check(a, value) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = get_args(tp)
        return isinstance(value, list) and all(_check(item, v) for v in value)
    return isinstance(value, tp)


def parse_record(cls: type[R], obj: Any, where: str) -> R:
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in obj]
    if missing:
        raise RecordError(f"{where}: missing field(s) {missing} for a {cls.__name__.lower()} record")
    values = {}
    for name in fields:
        if name not in obj:
            continue
        value = obj[name]
        if not _check(hints[name], value):
            raise RecordError(
                f"{where}: field {name!r} should be {hints[name]}, got {value!r:.80} ({type(value).__name__})"
            )
        values[name] = float(value) if hints[name] is float else value
    return cls(**values)


def _lines(path: Path) -> Iterator[str]:
    """Lines of a .jsonl file, a .jsonl.gz, or the one .jsonl inside a .zip (the released GenRM data)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".jsonl")]
            if len(names) != 1:
                raise RecordError(f"{path}: expected one .jsonl inside, found {names}")
            with zf.open(names[0]) as raw:
                yield from io.TextIOWrapper(raw, encoding="utf-8")
    elif path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            yield from fh
    else:
        with path.open(encoding="utf-8") as fh:
            yield from fh


def iter_jsonl(path: str | Path, fields: tuple[str, ...] = ()) -> Iterator[tuple[int, Any]]:
    """(line number, object) for every non-blank line; a bad line, or an object without one of
    `fields`, raises RecordError naming the file and line. The one JSONL reader of the project."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.colno})") from err
        missing = [f for f in fields if not isinstance(obj, dict) or f not in obj]
        if missing:
            raise RecordError(f"{path}:{lineno}: missing field(s) {missing}")
        yield lineno, obj


def read_records(path: str | Path, cls: type[R]) -> list[R]:
    return [parse_record(cls, obj, f"{path}:{lineno}") for lineno, obj in iter_jsonl(path)]


def write_records(path: str | Path, records: Iterable[Any]) -> int:
    """Write atomically (temp file + rename) so a crash never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            obj = dataclasses.asdict(rec) if dataclasses.is_dataclass(rec) else rec
            if isinstance(obj, dict):
                obj = {k: v for k, v in obj.items() if v is not None or k == "answer"}
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """One JSON document, written as `write_records` writes (temp file + rename): a kill mid-write
    leaves the old file or the new one, never a torn record (several mark a pipeline stage as done)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent), encoding="utf-8")
    tmp.replace(path)


def index_unique(records: Iterable[Any], key: typing.Callable[[Any], Any], what: str, path: str | Path) -> dict:
    out: dict = {}
    dupes = []
    for rec in records:
        k = key(rec)
        if k in out:
            dupes.append(k)
        out[k] = rec
    if dupes:
        raise RecordError(f"{path}: duplicate {what} {dupes[:5]}{' ...' if len(dupes) > 5 else ''}")
    return out
