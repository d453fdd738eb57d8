"""The gateway's tests use the scripted upstream of the model client's tests (tests/llm/llm_fault_server.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "llm"))
