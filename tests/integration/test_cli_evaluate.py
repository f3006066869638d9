"""`shopsense evaluate` on generated data: parameters per model, a budget that skips what does not fit, peers,
and what was scaled down to fit the machine, in the report and on screen."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopsense.cli import app
from shopsense.services.evaluation import EvaluationRun
from shopsense.store import open_store

runner = CliRunner()


def _run(data: Path, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr with the console's line wrapping undone."""
    result = runner.invoke(app, ["--data-dir", str(data), *args])
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated shop imported the documented way."""
    root = tmp_path_factory.mktemp("evaluate")
    data, gen = root / "d", root / "g"
    assert _run(data, "generate", "--out", str(gen), "--users", "300", "--items", "200", "--events", "20000")[0] == 0
    for kind in ("items", "events"):
        assert _run(data, "import", kind, str(gen / f"{kind}.parquet"))[0] == 0
    return data


def test_a_parameter_changes_the_model_and_is_reported(data: Path, tmp_path: Path) -> None:
    args = ["evaluate", "--models", "ease", "--pipeline", "none", "--no-tune", "--out", str(tmp_path / "r")]
    code, out, _ = _run(data, *args, "--json")
    assert code == 0
    default = json.loads(out)["models"]["ease"]
    sized = default["params"]["max_items"]  # left unset: sized to the machine, and the size used reported
    assert isinstance(sized, int) and sized >= 200 and default["scaled_down"] == []
    code, out, _ = _run(data, *args, "--param", "ease.max_items=20", "--param", "ease.l2=50", "--json")
    assert code == 0
    capped = json.loads(out)["models"]["ease"]
    assert (capped["params"]["max_items"], capped["params"]["l2"]) == (20, 50.0)
    assert capped["ndcg@10"] != default["ndcg@10"], "20 items cannot rank like 200"


def test_ease_scales_down_when_memory_is_short_and_says_so(data: Path, tmp_path: Path) -> None:
    params = tmp_path / "p.toml"
    params.write_text("[ease]\nmemory_gib = 0.00001\n")  # ~10 KiB free: 12 items fit
    args = ["evaluate", "--models", "ease", "--pipeline", "none", "--no-tune", "--params", str(params)]
    code, out, err = _run(data, *args, "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "scaled down: ease: max_items 12 of" in err and "free memory" in err
    report = json.loads((tmp_path / "r" / "evaluation.json").read_text())["store"]
    assert report["scaled_down"][0].startswith("ease: max_items 12 of")
    assert "Scaled down to fit this machine: ease: max_items 12" in out


def test_a_bad_parameter_is_refused_before_the_data_is_read(data: Path) -> None:
    code, _, err = _run(data, "evaluate", "--param", "ease.max_itemz=5")
    assert code == 2 and "ease has no parameter 'max_itemz'; valid: l2, max_items" in err
    code, _, err = _run(data, "evaluate", "--param", "nope.x=1")
    assert code == 2 and "unknown model 'nope'" in err and "Traceback" not in err
    code, _, err = _run(data, "evaluate", "--budget", "soon")
    assert code == 2 and "budget 'soon' is not a duration" in err
    code, _, err = _run(data, "evaluate", "--task", "repeat")
    assert code == 2 and "unknown task 'repeat'; tasks: all, new" in err
    code, _, err = _run(data, "evaluate", "--peers", "cornac")
    assert code == 2 and "'cornac'" in err and "pip install cornac" in err
    code, _, err = _run(data, "evaluate", "--pipeline", "nowhere")
    assert code == 2 and "pipeline 'nowhere' not found" in err


def test_the_budget_skips_what_does_not_fit_with_the_reason(data: Path, tmp_path: Path) -> None:
    args = ["evaluate", "--models", "popular", "--no-tune", "--budget", "4s", "--task", "new", "--peers", "implicit"]
    code, out, err = _run(data, *args, "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "estimate: ~" in err and "budget 4.0s" in err, "the plan is printed up front"
    report = json.loads((tmp_path / "r" / "evaluation.json").read_text())["store"]
    assert report["primary_task"] == "new"
    # The budget also covers reading and splitting, so on a busy machine even popular may be left no time:
    # it ran, or says why not; the pipeline (estimated at many times the budget) is always skipped.
    popular = report["models"]["popular"]
    assert popular["ndcg@10"] is not None or (popular["skipped"] and popular["error"].startswith("skipped: needs ~"))
    pipeline = report["models"]["pipeline:default"]
    assert pipeline["skipped"] and pipeline["error"].startswith("skipped: needs ~")
    assert "pipeline:default: skipped: needs ~" in err
    assert "Not run: pipeline:default (skipped: needs" in out
    assert {"implicit-als", "implicit-bpr"} <= set(report["models"]) or "implicit" in report["budget"]["skipped"]


def test_train_reports_what_a_candidate_source_scaled_down(data: Path) -> None:
    (data / "pipelines").mkdir(exist_ok=True)
    (data / "pipelines" / "lean.toml").write_text(
        '[[ranker.candidates.sources]]\nname = "trending"\nmodel = "popular"\n'
        '[[ranker.candidates.sources]]\nname = "linear"\nmodel = "ease"\nparams = { memory_gib = 0.00001 }\n'
    )
    code, _, err = _run(data, "train", "--pipeline", "lean")  # the same list is in --json's training.scaled_down
    assert code == 0, err
    assert "scaled down: ease: max_items 12 of 200 items (50% of 0.0102 MiB free memory)" in err


def test_the_store_is_let_go_before_the_models_are_fitted(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events are in memory once read: an import (a writer) may open the store while evaluate computes."""
    events: list[int] = []
    run_plan = EvaluationRun.run_plan

    def opening_a_writer_first(self: EvaluationRun, *args: object, **kwargs: object) -> object:
        writer = open_store(f"duckdb:///{data / 'shopsense.duckdb'}")  # fails while evaluate holds the store
        try:
            events.append(writer.summary().events)
        finally:
            writer.close()
        return run_plan(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(EvaluationRun, "run_plan", opening_a_writer_first)
    args = ["evaluate", "--models", "popular", "--pipeline", "none", "--no-tune", "--out", str(tmp_path / "r")]
    code, _, err = _run(data, *args)
    assert code == 0, err
    assert events and events[0] > 0


def test_train_with_both_objectives_says_which_it_kept(data: Path) -> None:
    (data / "pipelines").mkdir(exist_ok=True)
    (data / "pipelines" / "ltr.toml").write_text(
        '[[ranker.candidates.sources]]\nname = "trending"\nmodel = "popular"\n'
        '[[ranker.candidates.sources]]\nname = "co_bought"\nmodel = "item_knn"\n'
        '[ranker.boost]\nobjective = "auto"\n'
    )
    code, _, err = _run(data, "train", "--pipeline", "ltr")
    assert code == 0, err
    said = r"LightGBM objective (binary|lambdarank) \(validation NDCG@10: binary [\d.]+, lambdarank [\d.]+\)"
    assert re.search(said, err), err
