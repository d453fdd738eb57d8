"""The seed agent's tools: show the workspace, read one action from the model's reply, carry it out."""

import os
import subprocess

MAX_FILE_CHARS = 6000
MAX_OUTPUT_CHARS = 1500
END_OF_FILE = "END_OF_FILE"  # the line that ends a WRITE (a word no file of the agent holds on a line of its own)


def show_files(workspace):
    """Every file of the workspace with its content, as the prompt shows them."""
    parts = []
    for folder, _, names in sorted(os.walk(workspace)):
        for name in sorted(names):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, workspace)
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read(MAX_FILE_CHARS)
            except OSError as exc:
                text = f"(unreadable: {exc.strerror})"
            parts.append(f"--- {rel} ---\n{text.rstrip()}\n--- end of {rel} ---")
    return "\n".join(parts) or "(no files)"


def parse_action(reply):
    """The first action in the model's reply: ("write", name, content), ("run", command), ("done",), or
    ("unknown", first line)."""
    lines = reply.strip("\n").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ("unknown", "")
    head = lines[0].strip()
    word, _, rest = head.partition(" ")
    word = word.upper().rstrip(":")
    if word == "WRITE" and rest.strip():
        body = []
        for line in lines[1:]:
            if line.strip() == END_OF_FILE:
                break
            body.append(line)
        return ("write", rest.strip(), "\n".join(body) + "\n")
    if word == "RUN" and rest.strip():
        return ("run", rest.strip())
    if word == "DONE":
        return ("done",)
    return ("unknown", head[:200])


def write_file(workspace, name, content):
    path = os.path.normpath(os.path.join(workspace, name))
    if not path.startswith(os.path.normpath(workspace) + os.sep):
        return f"refused: {name} is outside the workspace"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(content)
    return f"wrote {name} ({len(content)} characters)"


def run_command(workspace, command, timeout_s=20):
    try:
        done = subprocess.run(command, shell=True, cwd=workspace, capture_output=True, text=True,
                              timeout=timeout_s, errors="replace")
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s}s"
    output = (done.stdout + done.stderr)[-MAX_OUTPUT_CHARS:]
    return f"exit status {done.returncode}\n{output}".rstrip()
