"""CLI on the bundled Online Retail sample: the import log in `stats`, `similar`, and batch `recommend` to a file."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shopsense.cli import app
from shopsense.pipeline import Pipeline
from shopsense.services.answers import RECOMMENDATIONS_SCHEMA, similar_items
from shopsense.services.data import DataService
from shopsense.services.marketing import MarketingService
from shopsense.services.recommendation import RecommendationService
from shopsense.settings import load_settings
from tests.conftest import DATA

SAMPLE = str(DATA / "online_retail_sample.csv")
runner = CliRunner()


def _run(data: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data), *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample imported, profiles built and the default pipeline trained, once for the module."""
    data = tmp_path_factory.mktemp("cli") / "d"
    for args in (("import", "dataset", "online-retail", SAMPLE), ("profiles", "build"), ("train",)):
        code, out, err = _run(data, *args)
        assert code == 0, out + err
    return data


def _customers(data: Path) -> list[str]:
    """Every non-guest user with stored events, sorted."""
    service = DataService(load_settings(None, data_dir=data))
    try:
        users = pc.unique(service.store.scan_events().column("user_id"))
        guests = pa.array(service.store.guest_user_ids(), pa.string())
    finally:
        service.close()
    assert len(guests) > 0, "the sample has guest baskets"
    return sorted(users.filter(pc.invert(pc.is_in(users, guests))).to_pylist())


def test_text_stats_lists_the_latest_imports(tmp_path: Path) -> None:
    data = tmp_path / "d"
    for _ in range(2):  # the second time every row is already stored
        assert _run(data, "import", "dataset", "online-retail", SAMPLE)[0] == 0
    code, out, _ = _run(data, "stats", "--json")
    log = json.loads(out)["imports"]
    assert code == 0 and len(log) == 6
    code, out, _ = _run(data, "stats")
    assert code == 0 and "already" in out
    rows = re.findall(r"│\s*(\d+)\s*│\s*(events|users|items)\s*│.*│\s*([\d,]+)\s*│\s*([\d,]+)\s*│\s*([\d,]+)\s*│", out)
    expected = [
        (str(r["batch_id"]), r["kind"], f"{r['received']:,}", f"{r['written']:,}", f"{r['already_stored']:,}")
        for r in sorted(log, key=lambda r: -r["batch_id"])
    ]
    assert rows == expected, out
    newest_events = expected[0]
    assert newest_events[1] == "events" and newest_events[3] == "0" and newest_events[4] == "1,750"
    code, out, _ = _run(data, "stats", "--imports", "2")
    assert code == 0 and "latest 2 of 6 imports" in " ".join(out.split())
    assert [r[0] for r in re.findall(r"│\s*(\d+)\s*│\s*(?:events|users|items)\s*│", out)] == ["6", "5"]
    code, out, _ = _run(data, "stats", "--imports", "0")
    assert code == 0 and "already" not in out and "funnel" in out


def test_similar_gives_what_the_api_gives(trained: Path) -> None:
    service = DataService(load_settings(None, data_dir=trained))
    try:
        pipeline: Pipeline = RecommendationService(service).pipeline()
        expected = similar_items(pipeline, "22423", 3)  # the function behind GET /v1/items/{id}/similar
    finally:
        service.close()
    code, out, err = _run(trained, "similar", "22423", "--k", "3", "--json")
    assert code == 0, err
    assert json.loads(out) == expected and len(expected) == 3 and "22423" not in {i["item_id"] for i in expected}
    code, out, _ = _run(trained, "similar", "22423", "--k", "3")
    assert code == 0 and all(i["item_id"] in out for i in expected)
    code, _, err = _run(trained, "similar", "no-such-item")
    assert code == 1 and "'no-such-item' is not known" in err and "Traceback" not in err


def test_recommend_all_writes_every_customer_as_the_single_user_command_would(trained: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "recs.csv"
    code, out, err = _run(trained, "recommend", "--all", "--k", "3", "--out", str(out_file), "--json")
    assert code == 0, err
    customers = _customers(trained)
    summary = {"path": str(out_file), "users": len(customers), "rows": 3 * len(customers), "skipped": []}
    assert json.loads(out) == summary
    table = pacsv.read_csv(out_file, convert_options=pacsv.ConvertOptions(column_types=RECOMMENDATIONS_SCHEMA))
    assert table.column_names == RECOMMENDATIONS_SCHEMA.names
    assert sorted(set(table.column("user_id").to_pylist())) == customers, "every customer, no guest"
    assert table.column("rank").to_pylist() == [1, 2, 3] * len(customers)
    assert pc.all(pc.is_valid(table.column("reason"))).as_py()
    for user in customers[:3]:
        code, single, _ = _run(trained, "recommend", user, "--k", "3", "--json")
        assert code == 0
        mine = table.filter(pc.equal(table.column("user_id"), user))
        assert mine.column("item_id").to_pylist() == [r["item_id"] for r in json.loads(single)]
        assert mine.column("score").to_pylist() == pytest.approx([r["score"] for r in json.loads(single)])


def test_recommend_a_segment_to_parquet(trained: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "loyal.parquet"
    code, _, err = _run(trained, "recommend", "--segment", "monetary > 300", "--k", "2", "--out", str(out_file))
    assert code == 0, err
    assert "recommendations for" in " ".join(err.split())
    service = DataService(load_settings(None, data_dir=trained))
    try:
        members = MarketingService(service.settings, service.store).segments({"s": "monetary > 300"}).members("s")
    finally:
        service.close()
    table = pq.read_table(out_file)
    assert table.schema.equals(RECOMMENDATIONS_SCHEMA)
    assert 0 < len(members) < len(_customers(trained))
    assert table.column("user_id").to_pylist() == [u for u in members for _ in range(2)]
    code, _, err = _run(trained, "recommend", "--segment", "monetry > 300", "--out", str(out_file))
    assert code == 2 and "did you mean 'monetary'" in err


def test_recommend_a_file_of_ids_fails_on_unknown_ones_unless_told_to_skip(trained: Path, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    known = _customers(trained)[:2]
    ids.write_text(f"user_id\n{known[0]}\nnobody-1\n\n{known[1]}\n{known[0]}\nnobody-2\n")
    out_file = tmp_path / "recs.jsonl"
    code, _, err = _run(trained, "recommend", "--users", str(ids), "--out", str(out_file))
    message = " ".join(err.split())
    assert code == 1 and "2 of 4 users have no stored events: 'nobody-1', 'nobody-2'" in message
    assert "--skip-unknown" in message and "Traceback" not in err and not out_file.exists()
    code, out, err = _run(
        trained, "recommend", "--users", str(ids), "--skip-unknown", "--k", "2", "--out", str(out_file), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["skipped"] == ["nobody-1", "nobody-2"]
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [(r["user_id"], r["rank"]) for r in rows] == [(known[0], 1), (known[0], 2), (known[1], 1), (known[1], 2)]
    assert set(rows[0]) == set(RECOMMENDATIONS_SCHEMA.names)


def test_batch_reads_the_store_once_and_runs_the_pipeline_once_per_batch(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"scan": 0, "batches": 0}
    service = DataService(load_settings(None, data_dir=trained))
    store = service.store
    scan, batched = store.scan_events, Pipeline.recommend_users

    def counted_scan(*args: object, **kwargs: object) -> pa.Table:
        calls["scan"] += 1
        return scan(*args, **kwargs)  # type: ignore[arg-type]

    def counted_batch(self: Pipeline, *args: object, **kwargs: object) -> object:
        calls["batches"] += 1
        return batched(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "scan_events", counted_scan)
    monkeypatch.setattr(Pipeline, "recommend_users", counted_batch)
    try:
        result = RecommendationService(service).recommend_batch(tmp_path / "r.parquet", k=2, batch=40)
    finally:
        service.close()
    customers = len(_customers(trained))
    assert result.users == customers and result.rows == 2 * customers
    assert calls == {"scan": 1, "batches": -(-customers // 40)}


def test_recommend_usage_errors(trained: Path, tmp_path: Path) -> None:
    usage = "give one USER, or --out FILE with one of --all, --segment EXPR, --users FILE"
    for args in (
        (),
        ("--all",),
        ("12431", "--out", str(tmp_path / "x.csv")),
        ("--all", "--segment", "frequency > 1", "--out", str(tmp_path / "x.csv")),
    ):
        code, _, err = _run(trained, "recommend", *args)
        assert code == 2 and usage in " ".join(err.split()), (args, err)
    code, _, err = _run(trained, "recommend", "--all", "--out", str(tmp_path / "x.txt"))
    assert code == 2 and "cannot tell the export format" in err and not (tmp_path / "x.txt").exists()
    code, _, err = _run(trained, "recommend", "--all", "--out", str(tmp_path / "new" / "x.csv.gz"))
    assert code == 0, err  # the same names and folders as `shopsense export`
    assert gzip.decompress((tmp_path / "new" / "x.csv.gz").read_bytes()).startswith(b"user_id,rank,item_id")
    code, _, err = _run(trained, "recommend", "--users", str(tmp_path / "none.txt"), "--out", str(tmp_path / "x.csv"))
    assert code == 2 and "cannot read user ids" in err
