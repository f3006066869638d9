"""The README's and docs' command examples, run as written, so the documentation cannot drift from the code.

A fenced ``bash`` block that follows a ``<!-- test: FIXTURE -->`` line runs in a fresh folder prepared by
that fixture (``byod``: a shop's own ``products.csv`` and ``orders.csv``, ~50k events where the heads learn;
``demo``: the bundled Online Retail sample imported and trained; ``spark``: the demo, where pyspark and Java
are; ``postgres``: the demo and an empty
PostgreSQL database in ``$DATABASE_URL``), with ``shopsense`` on the PATH and the
default data directory ``.shopsense`` in that folder. ``shopsense serve &`` listens on a free port (``curl``
calls to ``127.0.0.1:8000`` are sent there and fail on an HTTP error) and stops when the block ends; its log
must hold no traceback. Every other block is checked too: each ``shopsense`` command it names must exist.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shopsense.cli import app
from shopsense.spark.session import spark_available
from tests.conftest import DEMO_SAMPLE
from tests.postgres import in_ci
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
MARK = re.compile(r"<!-- test: (\w+) -->\s*\n```bash\n(.*?)```", re.S)
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
PRELUDE = r"""
set -euo pipefail
shopsense() {
  if [ "${1:-}" = serve ]; then
    shift
    exec shopsense serve --port "$DOCS_PORT" "$@" > server.log 2>&1  # docs start it with `&`: a job of its own
  else
    command shopsense "$@"
  fi
}
curl() {
  local fail=--fail-with-body
  case " $* " in *" -f"* | *" --fail"*) fail= ;; esac
  command curl $fail "${@//127.0.0.1:8000/127.0.0.1:$DOCS_PORT}"
}
trap 'kill $(jobs -p) 2> /dev/null || true' EXIT
"""


def _blocks() -> list[tuple[str, str, str]]:
    """(document and block number, fixture, commands) of every block marked to run."""
    found = []
    for doc in DOCS:
        for n, match in enumerate(MARK.finditer(doc.read_text()), 1):
            found.append((f"{doc.relative_to(ROOT)}#{n}", match.group(1), match.group(2)))
    return found


def _sku(item_id: str) -> str:
    return item_id.replace("item-", "SKU-")


def _customer(user_id: str) -> str:
    return user_id.replace("user-", "C")


@pytest.fixture(scope="module")
def byod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shop's own exports: products.csv and orders.csv with its own column names and action codes."""
    root = tmp_path_factory.mktemp("byod")
    done = subprocess.run(
        [BIN / "shopsense", "generate", "--out", str(root / "g"), "--events", "50000", "--users", "1000"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    items = pq.read_table(root / "g" / "items.parquet").to_pylist()
    with (root / "products.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sku", "name", "department", "brand", "unit_price"])
        for item in items:
            category = " > ".join(item["category"]) if isinstance(item["category"], list) else item["category"]
            out.writerow([_sku(item["item_id"]), item["title"], category, item["brand"], item["price"]])
    action = {"view": "view", "click": "click", "cart": "basket", "favourite": "wishlist", "purchase": "order"}
    action["return"] = "refund"
    events = pq.read_table(root / "g" / "events.parquet").to_pylist()
    with (root / "orders.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer", "sku", "action", "time", "amount"])
        for e in events:
            amount = "" if e["value"] is None else f"{e['value']:.2f}"
            when = e["timestamp"].strftime("%Y-%m-%d %H:%M:%S")
            out.writerow([_customer(e["user_id"]), _sku(e["item_id"]), action[e["type"]], when, amount])
    shutil.rmtree(root / "g")
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled Online Retail sample imported and the default pipeline trained, as `make demo` leaves it."""
    root = tmp_path_factory.mktemp("demo")
    for args in (["import", "dataset", "online-retail", str(DEMO_SAMPLE)], ["train"]):
        done = subprocess.run([BIN / "shopsense", *args], cwd=root, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def spark(demo: Path) -> Path:
    """The demo folder, for blocks that run ``--engine spark`` on ``local[2]``: skipped without pyspark or Java
    (one line), failed under ``CI=true``."""
    missing = spark_available()
    if missing:
        if in_ci():
            pytest.fail(f"the Spark docs block cannot run under CI=true: {missing}")
        pytest.skip(f"SPARK DOCS BLOCK SKIPPED: {missing}")
    return demo


ENV_FILE = ".docs-env"
"""Variables a fixture hands its block (``NAME=value`` lines), such as the URL of a database made for it."""


@pytest.fixture
def postgres(demo: Path, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo folder, and an empty PostgreSQL database the block finds in ``$DATABASE_URL``."""
    root = tmp_path_factory.mktemp("postgres")
    shutil.copytree(demo, root, dirs_exist_ok=True)
    (root / ENV_FILE).write_text(f"DATABASE_URL={postgres_url}\n")
    return root


@pytest.mark.integration
@pytest.mark.parametrize(("where", "fixture", "commands"), _blocks(), ids=[b[0] for b in _blocks()])
def test_documented_block_runs(
    where: str, fixture: str, commands: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    shutil.copytree(request.getfixturevalue(fixture), tmp_path, dirs_exist_ok=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DOCS_PORT": str(free_port())}
    env.pop("SHOPSENSE_DATA_DIR", None)
    given = tmp_path / ENV_FILE
    if given.exists():
        env.update(line.split("=", 1) for line in given.read_text().splitlines() if line)
    script = PRELUDE + commands
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{where} failed:\n{commands}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    log = tmp_path / "server.log"
    assert not log.exists() or "Traceback" not in log.read_text(), log.read_text()


def test_some_blocks_run() -> None:
    fixtures = {fixture for _, fixture, _ in _blocks()}
    assert {"byod", "demo"} <= fixtures, "the README's quick start and the demo walkthroughs run in tests"


def _known() -> tuple[set[str], dict[str, set[str]]]:
    """The CLI's top-level commands and each group's subcommands."""
    import typer.main

    command = typer.main.get_command(app)
    top = getattr(command, "commands", {})
    return set(top), {name: set(getattr(sub, "commands", {})) for name, sub in top.items() if hasattr(sub, "commands")}


def _named(line: str) -> list[list[str]]:
    """The words after each ``shopsense`` (or ``$S``) in a shell line, global options and their values left out."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    named = []
    for at, word in enumerate(words):
        if word not in ("shopsense", "$S", "${S}"):
            continue
        rest = words[at + 1 :]
        while rest and rest[0] in ("--data-dir", "--config", "--store-url"):
            rest = rest[2:]
        named.append(rest[:2])
    return named


def test_every_documented_command_exists() -> None:
    top, groups = _known()
    for doc in DOCS:
        for block in BLOCK.findall(doc.read_text()):
            for line in block.splitlines():
                for words in _named(line):
                    if not words or words[0].startswith("-"):
                        continue
                    assert words[0] in top, f"{doc.name}: unknown command `shopsense {words[0]}` in: {line}"
                    if words[0] in groups and len(words) > 1 and not words[1].startswith(("-", "$")):
                        assert words[1] in groups[words[0]], f"{doc.name}: unknown subcommand in: {line}"
