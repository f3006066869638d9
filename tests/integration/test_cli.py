"""The CLI end to end: exit codes, messages without tracebacks, JSON output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
from typer.testing import CliRunner

from shopsense.cli import app
from tests.conftest import DATA, DEMO_SAMPLE

runner = CliRunner()


def _run(data: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data), *args])
    return result.exit_code, result.stdout, result.stderr


def test_import_stats_export_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert _run(data, "init")[0] == 0
    code, out, _ = _run(data, "import", "dataset", "online-retail", str(DATA / "online_retail_sample.csv"), "--json")
    assert code == 0
    reports = json.loads(out)
    assert [r["kind"] for r in reports] == ["items", "users", "events"]
    code, out, _ = _run(data, "stats", "--json")
    stats = json.loads(out)
    assert stats["events"] == reports[2]["rows_written"]
    assert stats["events_by_channel"] == {"web": stats["events"]}
    code, _, err = _run(data, "export", "events", str(tmp_path / "e.parquet"))
    assert code == 0 and f"wrote {stats['events']:,} events" in err


def test_bad_data_exits_1_with_located_message_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,type,timestamp\nu1,i1,view,yesterday\n")
    code, _, err = _run(tmp_path / "d", "import", "events", str(bad))
    assert code == 1
    assert "bad.csv:row 1 [timestamp] value='yesterday': unparseable timestamp" in " ".join(err.split())
    assert "Traceback" not in err
    code, _, err = _run(tmp_path / "d", "import", "events", str(bad), "--map", "nonsense")
    assert code == 2 and "--map expects FIELD=VALUE" in err


def test_skip_mode_and_mapping_flags(tmp_path: Path) -> None:
    src = tmp_path / "orders.csv"
    src.write_text("customer,sku,when\nc1,s1,2024-01-01 10:00\nc2,s2,oops\n")
    code, out, _ = _run(
        tmp_path / "d", "import", "events", str(src), "--map", "user_id=customer", "--map", "item_id=sku",
        "--map", "timestamp=when", "--const", "type=purchase", "--on-error", "skip", "--json",
    )  # fmt: skip
    report = json.loads(out)
    assert code == 0
    assert (report["rows_written"], report["rows_rejected"]) == (1, 1)
    assert Path(report["rejects_file"]).read_text().count("\n") == 2


def test_generate_then_import(tmp_path: Path) -> None:
    code, _, _ = _run(tmp_path / "d", "generate", "--out", str(tmp_path / "g"), "--events", "2000", "--format", "csv")
    assert code == 0
    assert _run(tmp_path / "d", "import", "items", str(tmp_path / "g" / "items.csv"))[0] == 0
    assert _run(tmp_path / "d", "import", "users", str(tmp_path / "g" / "users.csv"), "--extra", "keep")[0] == 0
    code, out, _ = _run(tmp_path / "d", "import", "events", str(tmp_path / "g" / "events.csv"), "--json")
    assert code == 0 and json.loads(out)["rows_written"] == 2000


def test_installed_entry_point_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shopsense", "--data-dir", str(tmp_path / "d"), "stats", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 0


def test_evaluate_any_imported_data(tmp_path: Path) -> None:
    data, gen = tmp_path / "d", tmp_path / "g"
    _run(data, "generate", "--out", str(gen), "--users", "300", "--items", "200", "--events", "20000")
    for kind in ("items", "events"):
        assert _run(data, "import", kind, str(gen / f"{kind}.parquet"))[0] == 0
    args = ["evaluate", "--models", "popular,repeat_buy,item_knn", "--hybrid", "repeat_buy,item_knn"]
    code, out, _ = _run(data, *args, "--out", str(tmp_path / "r"), "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report["models"]) == {"popular", "repeat_buy", "item_knn", "hybrid", "pipeline:default"}
    models = report["models"]
    assert models["pipeline:default"]["ndcg@10"] > models["popular"]["ndcg@10"], "what `train` builds is a row"
    choice = models["pipeline:default"]["params"]["choice"]
    assert choice["validation"].startswith("temporal") and "q=0.8" in choice["validation"], "the run's own protocol"
    assert len([t for t in choice["trials"] if t["error"] is None]) >= 2, "settings were chosen on validation"
    assert set(report["tasks"]) == {"all", "new"}
    for values in report["models"].values():
        lo, hi = values["ci95_ndcg@10"]
        assert lo <= values["ndcg@10"] <= hi and 0 <= values["recall@20"] <= 1
    assert report["tuning"]["item_knn"], "parameters were chosen on the validation split"
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"evaluation.md", "evaluation.json", "evaluation.png"}


def test_evaluate_rejects_unknown_model_and_empty_split(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path / "d", "evaluate", "--models", "nope")
    assert code == 2 and "unknown model 'nope'" in err
    _run(tmp_path / "d", "import", "dataset", "online-retail", str(DATA / "online_retail_sample.csv"))
    code, _, err = _run(tmp_path / "d", "evaluate", "--out", str(tmp_path / "r"))
    assert code == 1 and "no test user with a training history" in err and "Traceback" not in err


def test_train_then_recommend_with_reasons(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _run(data, "import", "dataset", "online-retail", str(DATA / "online_retail_sample.csv"))
    code, _, err = _run(data, "recommend", "guest:536544")
    assert code == 2 and "shopsense train" in err, "recommending before training says what to do"
    code, out, _ = _run(data, "train", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["pipeline"] == "default" and Path(summary["model"]).exists()
    assert summary["heads"]["chosen"] == "lightgbm" and summary["training"]["pairs"] > 0
    code, out, _ = _run(data, "recommend", "guest:536544", "--k", "4", "--json")
    assert code == 0
    recs = json.loads(out)
    assert len(recs) == 4 and all(r["explanation"]["reason"] for r in recs)
    code, out, _ = _run(data, "recommend", "someone-new", "--k", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3, "an unknown user gets trending items"
    code, out, _ = _run(data, "recommend", "guest:536544", "--k", "3", "--alpha", "1.0")
    assert code == 0 and "P(attention)" in out
    code, _, err = _run(data, "recommend", "guest:536544", "--alpha", "2")
    assert code == 2 and "alpha" in err
    code, _, err = _run(data, "train", "--pipeline", "nope")
    assert code == 2 and "not found" in err


def test_marketing_walkthrough_on_online_retail(tmp_path: Path) -> None:
    """The marketing walkthrough end to end on the demo sample, profiles as of the campaign's start."""
    data = tmp_path / "d"
    _run(data, "import", "dataset", "online-retail", str(DEMO_SAMPLE))
    code, out, err = _run(data, "profiles", "build", "--as-of", "2011-11-01T00:00:00+00:00", "--json")
    assert code == 0, err
    customers = json.loads(out)["customers"]
    code, out, _ = _run(data, "segment", "--rfm", "--json", "--plot", str(tmp_path / "rfm.png"))
    assert code == 0 and sum(r["customers"] for r in json.loads(out)) == customers
    assert (tmp_path / "rfm.png").read_bytes()[:4] == b"\x89PNG"
    code, _, _ = _run(data, "segment", "big=monetary > 100", "--export", str(tmp_path / "big.csv"))
    members = (tmp_path / "big.csv").read_text().splitlines()
    assert code == 0 and members[0] == '"user_id","segment"' and len(members) > 1
    code, _, err = _run(data, "segment", "big=monetry > 100")
    assert code == 2 and "did you mean 'monetary'" in err and "Traceback" not in err
    root = Path(__file__).resolve().parents[2]
    assert _run(data, "campaign", "create", str(root / "config" / "campaigns" / "winback.toml"))[0] == 0
    code, out, _ = _run(data, "campaign", "assign", "winback-nov", "--segment", "recency_days > 60", "--json")
    counts = json.loads(out)
    assert code == 0 and set(counts) == {"holdout", "coupon", "recs-email"}
    code, out, _ = _run(data, "campaign", "readout", "winback-nov", "--json", "--plot", str(tmp_path / "lift.png"))
    result = json.loads(out)
    assert code == 0 and {v["name"] for v in result["variants"]} == set(counts) and result["decision"]
    rates = [v["conversion_rate"] for v in result["variants"]]
    assert all(0.02 < rate < 0.8 for rate in rates), f"a replay of history converts some, not all: {rates}"
    assert _run(data, "train")[0] == 0
    code, _, err = _run(data, "campaign", "content", "winback-nov", "--out", str(tmp_path / "payload.jsonl"))
    assert code == 0, err
    lines = (tmp_path / "payload.jsonl").read_text().splitlines()
    assert len(lines) == counts["coupon"] + counts["recs-email"]
    first = json.loads(lines[0])
    assert first["message"] and first["items"] and first["items"][0]["reason"]


def test_backup_then_restore_into_a_new_data_directory(tmp_path: Path) -> None:
    """`shopsense backup` / `restore` end to end: strict JSON, the same stats, refusals with plain messages."""
    data, copy, backup = tmp_path / "d", tmp_path / "copy", tmp_path / "backups" / "monday"
    _run(data, "import", "dataset", "online-retail", str(DATA / "online_retail_sample.csv"))
    code, out, err = _run(data, "backup", str(backup), "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    code, _, err = _run(data, "backup", str(backup))
    assert code == 2 and "pass --force" in err and "Traceback" not in err
    code, _, err = _run(data, "backup", str(backup), "--force")
    assert code == 0 and f"{rows['events']:,} events" in " ".join(err.split())
    code, out, err = _run(copy, "restore", str(backup), "--json")
    assert code == 0, err
    assert json.loads(out)["written"] == rows
    original, restored = (json.loads(_run(d, "stats", "--json")[1]) for d in (data, copy))
    assert {k: v for k, v in restored.items() if k != "imports"} == {
        k: v for k, v in original.items() if k != "imports"
    }
    code, out, _ = _run(copy, "restore", str(backup), "--json")
    assert code == 0 and not any(json.loads(out)["written"].values()), "a second restore adds nothing"
    (backup / "items.parquet").write_bytes(b"PAR1 truncated")
    code, _, err = _run(tmp_path / "fresh", "restore", str(backup))
    assert code == 1 and "monday/items.parquet:14byteswherethemanifestsays" in "".join(err.split())
    assert "Traceback" not in err
    assert json.loads(_run(tmp_path / "fresh", "stats", "--json")[1])["events"] == 0


def test_erase_forgets_the_user_everywhere_and_retrains_on_request(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    models = data / "models" / "default"
    (version,) = [p.name for p in models.iterdir() if p.is_dir()]
    user = ipc.open_file(pa.memory_map(str(models / version / "answers.arrow"))).read_all()["user_id"][0].as_py()
    code, out, err = _run(data, "erase", user, "--retrain", "--json")
    assert code == 0, err
    receipt = json.loads(out)
    assert receipt["user_id"] == user and receipt["deleted"]["users"] == 1 and receipt["deleted"]["events"] > 0
    assert receipt["models"]["trained_on_user"] and receipt["models"]["bundles"] == [f"default/{version}"]
    assert receipt["models"]["answers_removed"] > 0
    newer = [p.name for p in models.iterdir() if p.is_dir() and p.name != version]
    assert receipt["models"]["forgotten_at"] == f"retrained ({newer[0]})"
    for folder in (version, newer[0]):
        answers = ipc.open_file(pa.memory_map(str(models / folder / "answers.arrow"))).read_all()
        assert user not in answers["user_id"].to_pylist()
    code, out, _ = _run(data, "erase", user)
    assert code == 0 and "nothing stored" in out + _
