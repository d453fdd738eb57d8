"""Foundation-model access: one OpenAI-compatible client (`complete`) for remote and local models,
and the embedded local model server (`LocalModelServer`, llama.cpp serving Gemma 3 270M)."""

from openended.llm.client import Completion, LLMError, complete
from openended.llm.local import LocalModelServer, gguf_path, local_model_unavailable, local_spec
from openended.llm.spec import ModelSpec

__all__ = [
    "Completion",
    "LLMError",
    "LocalModelServer",
    "ModelSpec",
    "complete",
    "gguf_path",
    "local_model_unavailable",
    "local_spec",
]
