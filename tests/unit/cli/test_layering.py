"""The CLI, like the API, holds no store access, SQL, ranking or model code: it goes through the Shop facade."""

from __future__ import annotations

from pathlib import Path

from tests.unit.api.test_layering import violations

CLI = Path(__file__).resolve().parents[3] / "src" / "shopsense" / "cli"


def test_no_cli_module_touches_the_store_or_holds_sql() -> None:
    modules = sorted(CLI.rglob("*.py"))
    assert CLI / "data.py" in modules and CLI / "marketing.py" in modules, "the scan sees the command groups"
    found = {str(m.relative_to(CLI)): v for m in modules if (v := violations(m.read_text(encoding="utf-8")))}
    assert found == {}, "move this work into a service method (services/), reached through the Shop"


def test_the_scan_would_catch_a_command_reading_the_store() -> None:
    assert violations("def stats(shop):\n    return shop.data.store.scan_events()\n")
    assert violations("from shopsense.features.profiles import CHURN_MODEL_KEY\n")
