"""No evaluation spent on a child that cannot be new: against a real local server that answers too long or
repeats itself, a cut-off answer fails at stage mutation with kind truncated, and a program that only
restyles an earlier one is recorded as its duplicate, unevaluated; max_tokens is sized to the parent."""

from __future__ import annotations

import subprocess
from pathlib import Path

from llm_fault_server import FaultServer, cut_off, ok, too_long, unfinished

from archive_db import ArchiveDB
from openended.config import load_config
from openended.mutation.output_limits import max_output_tokens
from openended.tasks import load_task

FIRST_FIT = "import numpy as np\n\n\ndef priority(item, bins):\n    return -np.arange(len(bins), dtype=float)\n"
# the same program: other spacing, comments, a docstring
FIRST_FIT_RESTYLED = ('import numpy as np  # arrays\n\ndef priority(item, bins):\n    """First fit."""\n'
                      "    # the lowest index wins\n    return -np.arange( len(bins),\n        dtype = float )\n")
# the parent (binpack's seed, best fit) again, restyled
SEED_RESTYLED = ("import numpy as np\n\ndef priority(item: float, bins: np.ndarray) -> np.ndarray:\n"
                 "    # best fit, once more\n    return -( bins - item )\n")
WORST_FIT = "import numpy as np\n\n\ndef priority(item, bins):\n    return bins - item\n"


def _campaign_toml(path: Path, db: Path, base_url: str, budget: int) -> None:
    path.write_text(f"""
task = "binpack"
db = "{db}"
max_in_flight = 1
[sandbox]
kind = "process"
[archive]
kind = "novelty"
params = {{ threshold = 1e9 }}   # only the seed is ever a member: every child is the seed's
[mutation]
operator = "llm_rewrite"
[llm]
inspirations = 0
[[llm.models]]
name = "fault"
base_url = "{base_url}"
model = "fault-model"
timeout_s = 5.0
max_retries = 0
max_output = {{ llm_rewrite = {{ factor = 3.0, floor = 64 }} }}
[budget]
max_children = {budget}
""")


def test_cut_off_answers_and_restyled_programs_are_never_evaluated(tmp_path, cli_env, python):
    script = [
        ok(FIRST_FIT),                 # child 1: a new program, evaluated
        ok(FIRST_FIT_RESTYLED),        # child 2: child 1's program restyled: its duplicate
        too_long("    return -bins\n" + "    # and more\n" * 400),  # child 3: cut at max_tokens, finish "length"
        unfinished("x " * 400),        # child 4: no finish reason, the whole limit used
        ok(SEED_RESTYLED),             # child 5: repeats its parent modulo formatting: changes nothing
        cut_off(WORST_FIT),            # child 6: a whole program, but the server says max_tokens cut it
    ]
    config_path, db = tmp_path / "campaign.toml", tmp_path / "waste.db"
    with FaultServer(script, default=ok(FIRST_FIT)) as server:
        _campaign_toml(config_path, db, server.base_url, budget=7)
        proc = subprocess.run([python, "-m", "openended", "run", str(config_path), "--quiet"],
                              env=cli_env, capture_output=True, text=True, timeout=300)
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(requests) == 6

    # max_tokens is sized to the parent by the model's own table: 3 x the seed's estimated tokens
    config = load_config(config_path)
    seed_code = load_task("binpack").seed_files()["priority.py"].decode()
    expected = max_output_tokens(config, "fault", "llm_rewrite", seed_code)
    assert expected == 3 * -(-len(seed_code) // 4) > 64
    assert {r.body["max_tokens"] for r in requests} == {expected}

    with ArchiveDB(db, readonly=True) as store:
        rows = {i: store.agent(i) for i in range(7)}
        evaluated = {i for i in rows if store.evaluations(i)}
        assert evaluated == {0, 1}, "only the seed and the one new program were evaluated"
        assert rows[1]["status"] == "rejected" and rows[1]["fitness"] is not None  # the archive holds only the seed

        dup = rows[2]
        assert dup["duplicate_of"] == 1 and dup["status"] == "rejected" and dup["fitness"] == rows[1]["fitness"]
        assert dup["genome_hash"] is not None and dup["genome_hash"] != rows[1]["genome_hash"], \
            "its own text is stored: only formatting differs"
        assert "duplicate of agent 1" in dup["feedback"] and dup["eval_seconds"] is None

        for i in (3, 4, 6):
            row = rows[i]
            assert (row["status"], row["fail_stage"]) == ("failed", "mutation"), row
            assert row["fail_reason"].startswith("truncated: the answer reached its limit of "
                                                 f"{expected} tokens"), row["fail_reason"]
            assert row["genome_hash"] is None and row["tokens_out"] > 0
        assert "finish reason length" in rows[3]["fail_reason"] and "no finish reason" in rows[4]["fail_reason"]
        assert (rows[5]["fail_stage"], rows[5]["fail_reason"]) == ("mutation", "the edit changed nothing")
    # the reason a child was cut off reaches a later prompt for the same parent
    assert any("truncated: the answer reached its limit" in r.prompt for r in requests[3:])
