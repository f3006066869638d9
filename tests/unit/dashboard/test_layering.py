"""The dashboard holds no store access, SQL, ranking or model code: like the API, it calls services/."""

from __future__ import annotations

from pathlib import Path

from tests.unit.api.test_layering import violations

DASHBOARD = Path(__file__).resolve().parents[3] / "src" / "shopsense" / "dashboard"


def test_no_dashboard_module_touches_the_store_or_holds_sql() -> None:
    modules = sorted(DASHBOARD.rglob("*.py"))
    assert DASHBOARD / "pages" / "overview.py" in modules, "the scan sees the pages"
    found = {str(m.relative_to(DASHBOARD)): v for m in modules if (v := violations(m.read_text(encoding="utf-8")))}
    assert found == {}, "move this work into a service method (services/), reached through the Shop"


def test_no_template_or_script_loads_anything_from_another_site() -> None:
    assets = [*DASHBOARD.glob("templates/*.html"), *DASHBOARD.glob("static/*.js"), *DASHBOARD.glob("static/*.css")]
    assert assets
    remote = {
        p.name for p in assets if any(s in p.read_text(encoding="utf-8") for s in ("http://", "https://", "//cdn"))
    }
    assert remote == set(), "serve every asset from /static (vendored with its licence)"
