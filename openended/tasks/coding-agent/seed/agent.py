"""The seed coding agent: a loop that asks the model for its next action (write a file, run a shell
command, or finish) in a plain text protocol, carries it out in the workspace, and stops at DONE or its
step limit. No tool-calling API is assumed: a base model can drive it.

Entry point: solve(workspace, statement) -> the log of what it did (text)."""

import os

from tools import parse_action, run_command, show_files, write_file

MAX_STEPS = 4
MAX_TOKENS = 400
HERE = os.path.dirname(os.path.abspath(__file__))


def ask(prompt):
    from sandboxes.model import ModelError, complete

    try:
        return complete(prompt, max_tokens=MAX_TOKENS, stop=["\nAction:"])
    except ModelError as exc:
        return f"(the model failed: {exc})"


def solve(workspace, statement):
    with open(os.path.join(HERE, "prompt.txt"), encoding="utf-8") as fh:
        template = fh.read()
    history = []
    for step in range(MAX_STEPS):
        prompt = template.format(statement=statement, files=show_files(workspace),
                                 history="".join(f"Action: {h}\n" for h in history))
        action = parse_action(ask(prompt))
        if action[0] == "write":
            history.append(f"WRITE {action[1]}\n(result: {write_file(workspace, action[1], action[2])})")
        elif action[0] == "run":
            history.append(f"RUN {action[1]}\n(result: {run_command(workspace, action[1])})")
        elif action[0] == "done":
            history.append("DONE")
            break
        else:
            history.append(f"{action[1]}\n(result: not an action; reply with WRITE, RUN or DONE)")
    return "\n".join(history)
