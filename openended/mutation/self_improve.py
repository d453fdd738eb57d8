"""``self_improve``: the Darwin Gödel Machine's operator. The child is made by its parent agent editing
its own code.

1. Diagnose (one model call, on the worker, not in a sandbox): the model reads the parent's code, its
   scorer's feedback (which problems failed, the tails of their runs) and the end of its recent model calls,
   and writes a short statement of the one change that would make the agent solve more problems.
2. Self-edit: the parent agent itself runs in a sandbox with the model gateway, on a writable copy of its
   own files, with that statement as its problem (the task's ``evaluate.py`` does this when its arguments
   hold ``self_edit``: it returns the workspace's files as its ``outputs``, like an acting stage). Whatever
   files it leaves are the child's genome.

The child fails at stage ``mutation``, with the reason, when the self-edit run fails, leaves no change,
breaks the entry point (the task's ``code_file`` missing or not Python), or reaches a gateway limit. Both
steps' tokens are the child's: the diagnosis on its result, the self-edit's through the gateway's lease.

Parameters (``[operators.self_improve]`` in task.toml, or ``mutation.params``): ``timeout_s`` (the self-edit
run, default 600), ``diagnosis_tokens`` (the diagnosis' length, default 300) and ``editor``: ``"parent"``
(default: the parent agent edits itself) or ``"seed"`` (the DGM's ``no_selfimprove`` comparison: the
campaign's seed agent, agent 0, always makes the change to the parent's files, so getting better at the
task never makes the editor better).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openended.gateway.records import DIAGNOSIS_ENDPOINT, TranscriptEntry
from openended.names import Files
from openended.results import InvalidResult, check_acting, clean_text

if TYPE_CHECKING:
    from openended.mutation.prompts import MutationContext
    from openended.sandbox.spec import SandboxSpec
    from openended.tasks import Task

EDITORS = ("parent", "seed")
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_DIAGNOSIS_TOKENS = 300
TRANSCRIPT_CHARS = 1500
STATEMENT_CHARS = 2000
PROMPT_CHARS = 4000
FILES_CHARS = 8000  # the parent's files in the diagnosis prompt (about 2,000 tokens)

DIAGNOSIS = """{task_prompt}

Here is a coding agent. On its last evaluation it scored {fitness} (the share of problems it solved).

Its files:
{files}

What the scorer reported:
{feedback}

The end of its last model calls:
{transcript}

Write one short paragraph for the agent's developer: the single change to the agent's code that would
most help it solve more problems. Say which file and what to change.

Change:"""

STATEMENT = """Improve this coding agent: the files in this workspace are its own source code (its entry point is
{code_file}, which defines solve(workspace, statement)). Make this change, keeping solve's name and
signature, and using only the Python standard library:

{diagnosis}"""


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnosis:
    """The diagnosis call of one self_improve child: what the model was asked and what it said. The store
    keeps it as a transcript of the child (entry ``endpoint = "diagnosis"``, committed with its genome), so
    ``lineage`` shows each self-modification with its reason."""

    model: str
    prompt: str
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    seconds: float = 0.0

    def transcript(self) -> dict[str, Any]:
        """The keyword arguments of ``ArchiveDB.add_transcript`` for it (one call; prompt kept to its end)."""
        entry = TranscriptEntry(at=0.0, endpoint=DIAGNOSIS_ENDPOINT, model=self.model, status=200, upstream=True,
                                request=clean_text(self.prompt[-PROMPT_CHARS:], PROMPT_CHARS),
                                response=clean_text(self.text, STATEMENT_CHARS), tokens_in=self.tokens_in,
                                tokens_out=self.tokens_out, cost=self.cost, seconds=self.seconds)
        return dict(calls=1, rejected=0, tokens_in=self.tokens_in, tokens_out=self.tokens_out, cost=self.cost,
                    limit_hit=None, entries=[dataclasses.asdict(entry)])


def diagnosis_of(transcripts: list[dict[str, Any]]) -> str | None:
    """The diagnosis among an agent's stored transcripts (newest last), or None."""
    for record in transcripts:
        for entry in record.get("entries") or []:
            if entry.get("endpoint") == DIAGNOSIS_ENDPOINT:
                return str(entry.get("response", ""))
    return None


class SelfImproveFailed(Exception):
    """The child cannot be made; the message is its failure reason (stage ``mutation``)."""


def editor_of(params: dict[str, Any]) -> str:
    """Who edits the parent's files: ``"parent"`` or ``"seed"``; ValueError naming a bad value."""
    editor = params.get("editor", "parent")
    if editor not in EDITORS:
        raise ValueError(f"self_improve editor must be one of {', '.join(EDITORS)}, got {editor!r}")
    return str(editor)


def self_edit_seconds(params: dict[str, Any]) -> float:
    """How long the self-edit run may take."""
    return float(params.get("timeout_s", DEFAULT_TIMEOUT_S))


def transcript_tail(transcripts: list[dict[str, Any]], chars: int = TRANSCRIPT_CHARS) -> str:
    """The end of an agent's recorded model calls (its transcripts' entries, newest last), as text."""
    lines: list[str] = []
    runs = [r for r in transcripts if diagnosis_of([r]) is None]  # the agent's own runs, not how it was made
    for record in runs[-2:]:
        for entry in (record.get("entries") or [])[-4:]:
            request, answer = str(entry.get("request", ""))[-400:], str(entry.get("response", ""))[:400]
            lines.append(f"[request] {request}\n[answer] {answer}")
    text = "\n".join(lines)
    return text[-chars:] if text else "(none recorded)"


def shown_files(files: Files, code_file: str, chars: int = FILES_CHARS) -> str:
    """The agent's files as text for the diagnosis, the entry point first, within ``chars`` characters: an
    agent that grew does not make every descendant's diagnosis longer (the rest of a file is cut, and said so)."""
    order = sorted(files, key=lambda name: (name != code_file, name))
    parts, left = [], chars
    for name in order:
        text = files[name].decode("utf-8", "replace").rstrip()
        if len(text) > left:
            cut = len(text) - max(left, 0)
            text = text[: max(left, 0)] + f"\n[... {cut} more characters of {name} not shown]"
        left -= len(text)
        parts.append(f"--- {name} ---\n{text}\n--- end of {name} ---")
    return "\n".join(parts)


def diagnosis_prompt(context: MutationContext) -> str:
    files = shown_files(context.parent_files, context.code_file)
    fitness = "unknown" if context.parent_fitness is None else f"{context.parent_fitness:.3g}"
    return DIAGNOSIS.format(task_prompt=context.task_prompt.strip(), fitness=fitness, files=files,
                            feedback=(context.parent_feedback or "(none)")[-3000:],
                            transcript=context.parent_transcript or "(none recorded)")


def statement_for(diagnosis: str, code_file: str) -> str:
    text = diagnosis.strip()[:STATEMENT_CHARS]
    if not text:
        raise SelfImproveFailed("the diagnosis is empty")
    return STATEMENT.format(code_file=code_file, diagnosis=text)


def self_edit(task: Task, parent: Files, statement: str, spec: SandboxSpec, gateway: str | None,
              params: dict[str, Any], *, usage: Callable[[str], dict] | None = None,
              editor: Files | None = None) -> Files:
    """Run the parent agent (or ``editor``, a fixed agent) on a copy of the parent's files with ``statement``;
    the files it leaves, checked."""
    from openended.sandbox import get_sandbox

    if gateway is None:
        raise SelfImproveFailed("the self-edit needs the model gateway (the task's gateway = true)")
    seconds = self_edit_seconds(params)
    spec = dataclasses.replace(spec, gateway=True, hidden=task.hidden_folders,
                               limits=dataclasses.replace(spec.limits, timeout_s=seconds))
    args: dict[str, Any] = {**task.evaluate_args, "self_edit": statement, "problem_timeout_s": max(1.0, seconds - 5.0)}
    if editor is not None:
        try:  # the workspace the editor works in: the parent's files, as text (the arguments are JSON)
            args["edit_files"] = {name: data.decode("utf-8") for name, data in parent.items()}
        except UnicodeDecodeError as exc:
            raise SelfImproveFailed(f"the parent has a file that is not UTF-8 text ({exc.reason})") from None
    if editor is not None and not editor:
        raise SelfImproveFailed("the editor (the seed agent, agent 0) has no stored genome")
    outcome = get_sandbox(spec, str(task.root)).evaluate([parent if editor is None else editor], args,
                                                         gateway=gateway)
    if outcome.failure_kind is not None or not outcome.results:
        raise SelfImproveFailed(f"the self-edit run failed: {outcome.fail_reason}")
    try:
        acted = check_acting(outcome.results[0])
    except InvalidResult as exc:
        raise SelfImproveFailed(f"the self-edit run: {exc}") from None
    spent = usage(gateway) if usage is not None else {}
    if spent.get("limit_hit"):
        raise SelfImproveFailed(f"over budget: the self-edit reached the gateway's limit {spent['limit_hit']}")
    skipped = acted.metrics.get("skipped") if isinstance(acted.metrics, dict) else None
    if skipped:  # a file the workspace held but could not hand back: the child would lose it silently
        raise SelfImproveFailed(f"the self-edit left files that cannot be kept: {str(skipped)[:300]}")
    return checked_child(acted.outputs, parent, task.spec.code_file)


def checked_child(files: Files, parent: Files, code_file: str) -> Files:
    """The self-edit's files as a genome: changed, with an entry point that is Python."""
    if not files:
        raise SelfImproveFailed("the self-edit left no files")
    if files == parent:
        raise SelfImproveFailed("the self-edit changed nothing")
    if code_file not in files:
        raise SelfImproveFailed(f"broken entry point: the self-edit removed {code_file}")
    try:
        compile(files[code_file], code_file, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise SelfImproveFailed(f"broken entry point: {code_file} does not compile ({type(exc).__name__}: "
                                f"{exc})") from None
    return files
