"""Start-up stays light: the CLI, `--help` and the data commands import no heavy library.

Each check runs in a fresh interpreter, since this test process has long imported everything. It is a
test of behaviour (what is in ``sys.modules``), not of timing; benchmarks/startup.py measures the seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sentence_transformers", "lightgbm", "matplotlib", "sklearn", "scipy.stats", "pandas")
"""Libraries that take from a tenth of a second to seconds to import, none needed to start the CLI."""
NEURAL = ("torch", "sentence_transformers", "transformers")

REPORT = f"""
import json, sys
print("\\nLOADED " + json.dumps(sorted(m for m in {set(HEAVY + NEURAL)!r} if m in sys.modules)))
"""
"""Appended to each child's script: the heavy modules it imported, on the last line of stdout."""


def _loaded(script: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after running ``script``."""
    done = subprocess.run(
        [sys.executable, "-c", script + REPORT], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("LOADED "), done.stdout
    loaded: list[str] = json.loads(last.removeprefix("LOADED "))
    return loaded


def _cli(*args: str) -> str:
    """A child script that runs the CLI app with ``args`` as `shopsense` would, exit status checked."""
    return f"""
from shopsense.cli import app
try:
    app({list(args)!r})
except SystemExit as exit:
    assert not exit.code, f"exit status {{exit.code}}"
"""


def test_importing_the_cli_imports_no_heavy_library() -> None:
    assert _loaded("import shopsense.cli") == []


def test_help_imports_no_heavy_library() -> None:
    assert _loaded(_cli("--help")) == []
    assert _loaded(_cli("import", "--help")) == []


def test_data_commands_import_no_heavy_library(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    sample = str(DATA / "online_retail_sample.csv")
    assert _loaded(_cli("--data-dir", data, "init")) == []
    assert _loaded(_cli("--data-dir", data, "import", "dataset", "online-retail", sample)) == []
    assert _loaded(_cli("--data-dir", data, "stats")) == []
    assert _loaded(_cli("--data-dir", data, "stats", "--json")) == []


def test_model_names_and_configs_resolve_without_torch() -> None:
    """Naming, validating and configuring every model (SASRec too) and the ranker need no torch."""
    script = """
import pytest
from shopsense.models.registry import MODELS, build_model, config_class, model_class
with pytest.raises(ValueError, match="unknown model 'nope'; known: als, bpr"):
    model_class("nope")
assert "sasrec" in MODELS and "nope" not in MODELS and len(MODELS) == 10
assert all(model_class(name).__name__ for name in MODELS)
assert config_class("sasrec")().max_len == 50
build_model("sasrec", {"dim": 32, "heads": 2})
import shopsense.pipeline
from shopsense.ranking.ranker import RankerConfig
RankerConfig(head="din")
"""
    loaded = _loaded(script)
    assert not set(loaded) & set(NEURAL), loaded
