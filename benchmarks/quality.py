"""Quality benchmark: every shopsense model and peer libraries on the same leak-free splits.

Each dataset is imported once through its adapter into a DuckDB store under
``benchmarks/.work/quality/`` (reused on later runs), split by the protocol that suits it,
and every model is tuned on a validation split carved from the training period, fitted on
the training period and asked to rank the whole catalogue for every test user. The default
pipeline (the two-stage ranker ``shopsense train`` builds with no flags) is a row of its own,
``pipeline:default``, and the headline compares it with the best peer that finished (a peer that
ran out of its budget is listed, never counted as beaten) and with the best single model.

Peers, labelled as such in every table:
- ``implicit`` ALS and BPR used directly with their documented defaults (in-process);
- Cornac 3.0.1 models, tuned on the same validation split, run in their own virtualenv
  (``benchmarks/.work/cornac-venv``, created on first use) so their dependencies never touch
  shopsense's; see ``benchmarks/peers/README.md``;
- RecBole 1.2.1 models (EASE, LightGCN, SASRec, BERT4Rec) with their documented defaults, in their own
  virtualenv (``benchmarks/.work/recbole-venv``, created on first use).

Reads ``../shared/datasets/`` (online_retail, instacart, movielens_1m, movielens_100k,
yoochoose_100k, diginetica_sample). Writes ``benchmarks/results/quality.md``, ``quality.json``
and ``quality.png``.

    .venv/bin/python benchmarks/quality.py              # everything (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/quality.py --quick      # MovieLens 100k only, small grids, < 2 minutes
    .venv/bin/python benchmarks/quality.py --datasets movielens-100k --no-cornac
    .venv/bin/python benchmarks/quality.py --store shop=../myshop/.shopsense --no-cornac   # any imported store

``--store [NAME=]DATA_DIR_OR_URL`` (repeatable) adds a store made by ``shopsense import`` (a data
directory, or a ``duckdb://``/``postgresql://`` URL), opened read-only, as one more dataset: a temporal
split predicting purchases (``--store-target`` to change), both tasks, ``all`` primary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopsense.eval.harness import EvalConfig, Task  # noqa: E402
from shopsense.eval.peers import run_implicit  # noqa: E402
from shopsense.eval.report import write_report  # noqa: E402
from shopsense.eval.splits import Protocol, SplitConfig  # noqa: E402
from shopsense.pipeline import PipelineConfig  # noqa: E402
from shopsense.services.data import DataService  # noqa: E402
from shopsense.services.evaluation import EvaluationRun  # noqa: E402
from shopsense.settings import Settings  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "quality"
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "datasets"


@dataclass(frozen=True)
class Dataset:
    """How a public dataset is split and which task is its headline."""

    adapter: str
    split: SplitConfig
    tasks: tuple[Task, ...]
    primary: Task
    max_test_users: int | None = None
    cornac: tuple[str, ...] = ("EASE", "RecVAE", "BPR")
    recbole: tuple[str, ...] = ("EASE", "LightGCN", "SASRec", "BERT4Rec")
    skip: tuple[str, ...] = field(default_factory=tuple)
    store: str | None = None
    """An imported store (data directory or URL) instead of a public dataset read by ``adapter``."""


PURCHASES = SplitConfig(protocol=Protocol.TEMPORAL, test_quantile=0.9, target_types=("purchase",))
DATASETS: dict[str, Dataset] = {
    "online-retail": Dataset(
        "online-retail", PURCHASES, (Task.ALL, Task.NEW), Task.ALL, cornac=("EASE", "RecVAE", "TIFUKNN")
    ),
    "instacart": Dataset("instacart", PURCHASES, (Task.ALL, Task.NEW), Task.ALL, cornac=("EASE", "RecVAE", "TIFUKNN")),
    "movielens-1m": Dataset(
        "movielens-1m",
        SplitConfig(protocol=Protocol.RANDOM, test_fraction=0.2, target_types=("rating",)),
        (Task.NEW,),
        Task.NEW,
        max_test_users=3000,
        skip=("repeat_buy", "sasrec"),  # no timestamps: no order for a sequence model to read
        recbole=("EASE", "LightGCN"),
    ),
    "movielens-100k": Dataset(
        "movielens-100k",
        SplitConfig(protocol=Protocol.LEAVE_LAST, last_k=10, target_types=("rating",)),
        (Task.NEW,),
        Task.NEW,
        skip=("repeat_buy",),
    ),
    "yoochoose": Dataset(
        "yoochoose",
        SplitConfig(protocol=Protocol.LEAVE_LAST, last_k=1, target_types=("click",)),
        (Task.ALL, Task.NEW),
        Task.ALL,
        cornac=("EASE", "GRU4Rec", "SASRec"),
        skip=("content",),
    ),
    "diginetica": Dataset(
        "diginetica",
        SplitConfig(protocol=Protocol.LEAVE_LAST, last_k=1, target_types=("view",)),
        (Task.ALL, Task.NEW),
        Task.ALL,
        cornac=("EASE", "GRU4Rec", "SASRec"),
        skip=("content",),
    ),
}

QUICK_CORNAC = ("EASE",)
PARAMS: dict[str, dict[str, Any]] = {"sasrec": {"max_minutes": 10.0}}
"""Fixed settings (no grid): SASRec early-stops on its own validation carve-out within a time limit."""
QUICK_PARAMS: dict[str, dict[str, Any]] = {"sasrec": {"max_minutes": 0.5}}
MODELS = ("popular", "repeat_buy", "item_knn", "user_knn", "ease", "als", "bpr", "content", "sasrec")
HYBRID = ("repeat_buy", "item_knn", "popular")


def store_dataset(text: str, target: str = "purchase") -> tuple[str, Dataset]:
    """``[NAME=]DATA_DIR_OR_URL`` as a dataset read from that store (named after its folder by default)."""
    name, sep, where = text.partition("=")
    if not sep or "://" in name:
        name, where = Path(text.split("://")[-1].rstrip("/")).name.split(".")[0] or "store", text
    split = PURCHASES.model_copy(update={"target_types": tuple(t for t in target.split(",") if t)})
    return name, Dataset("store", split, (Task.ALL, Task.NEW), Task.ALL, store=where)


def load(name: str, spec: Dataset) -> tuple[Any, Any]:
    """Events and catalogue of a dataset: an imported store read as it is, or a public one imported once into
    a cached store."""
    if spec.store is not None:
        url = spec.store if "://" in spec.store else None
        where = Settings(store_url=url) if url else Settings(data_dir=Path(spec.store))
        if url is None and not (Path(spec.store) / "shopsense.duckdb").exists():
            sys.exit(f"--store {spec.store}: no shopsense.duckdb there (give a data directory or a store URL)")
        reader = DataService(where, read_only=True)
        try:
            return reader.store.scan_events(), reader.store.scan_items()
        finally:
            reader.close()
    folder = WORK / name
    marker = folder / "imported"
    service = DataService(Settings(data_dir=folder))
    try:
        if not marker.exists():
            service.init()
            service.import_dataset(spec.adapter, [])
            marker.write_text("ok\n")
        return service.store.scan_events(), service.store.scan_items()
    finally:
        service.close()


def run_dataset(name: str, spec: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    """All models and peers on one dataset; the report also records the command and the seconds taken."""
    started = time.perf_counter()
    events, catalog = load(name, spec)
    config = EvalConfig(
        split=spec.split, tasks=spec.tasks, max_test_users=args.max_users or spec.max_test_users, bootstrap=1000
    )
    print(f"[{name}] {events.num_rows:,} events; tuning interactions…", file=sys.stderr)
    run = EvaluationRun(name, events, config, catalog=catalog, primary=spec.primary, tune=not args.no_tune)
    models = [m for m in (args.models or MODELS) if m not in spec.skip]
    for model in models:
        print(f"[{name}] {model}", file=sys.stderr)
        result = run.add_model(model, (QUICK_PARAMS if args.quick else PARAMS).get(model))
        if result.error:
            print(f"[{name}] {model} failed: {result.error}", file=sys.stderr)
    if not args.models:
        run.add_hybrid([m for m in HYBRID if m not in spec.skip])
    if not args.no_pipeline:
        print(f"[{name}] {DEFAULT_ROW}", file=sys.stderr)
        result = run.add_pipeline("default", PipelineConfig())
        if result.error:
            print(f"[{name}] {DEFAULT_ROW} failed: {result.error}", file=sys.stderr)
    if not args.no_peers:
        for peer, lists, cost in run_implicit(run.prepared):
            run.add_lists(peer, lists, **cost)
    if not args.no_cornac and not args.no_peers:
        from benchmarks.peers.cornac_runner import run_cornac_peers

        cornac = QUICK_CORNAC if args.quick else spec.cornac
        for peer, lists, cost in run_cornac_peers(run, cornac, WORK.parent, quick=args.quick):
            run.add_lists(peer, lists, **cost)
    if not args.no_recbole and not args.no_peers:
        from benchmarks.peers.recbole_runner import QUICK_MODELS, run_recbole_peers

        recbole = QUICK_MODELS if args.quick else spec.recbole
        for peer, lists, cost in run_recbole_peers(run, recbole, WORK.parent, quick=args.quick):
            run.add_lists(peer, lists, **cost)
    report = run.report()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["command"] = ".venv/bin/python benchmarks/quality.py " + " ".join(sys.argv[1:])
    return report


DEFAULT_ROW = "pipeline:default"
"""The row of what ``shopsense train`` builds with no flags: the headline compares it, not a best-of-N."""
GOAL = 1.10
"""Issue 24's goal: the default pipeline at least 1.10 x the best finished peer, with non-overlapping 95% CIs."""


def summary(reports: list[dict[str, Any]]) -> str:
    """The headline, per dataset and task (the primary first, then ``new`` where the dataset has it): the default
    pipeline against the best *finished* peer and against the best single shopsense model (a best-of-N picked on
    the test split, shown for reference, never as the headline)."""
    lines = [
        "| dataset | task | default pipeline NDCG@10 [95% CI] | best finished peer | NDCG@10 [95% CI] | "
        "default vs peer | goal (x1.10, CIs apart) | best single model | NDCG@10 | default vs single |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    unfinished: list[str] = []
    for report in reports:
        peers = report["models"]
        unfinished += [f"{report['dataset']}: {n} ({m['error']})" for n, m in peers.items() if m["peer"] and m["error"]]
        tasks = [report["primary_task"], *(t for t in report["tasks"] if t == "new" and t != report["primary_task"])]
        for task in tasks:
            scored = report["tasks"][task]["models"]
            default = scored.get(DEFAULT_ROW)
            theirs = {n: m for n, m in scored.items() if peers.get(n, {}).get("peer") and m.get("ndcg@10") is not None}
            ours = {
                n: m
                for n, m in scored.items()
                if n != DEFAULT_ROW and not peers.get(n, {}).get("peer") and m.get("ndcg@10") is not None
            }
            label = f"{task} (primary)" if task == report["primary_task"] else task
            row = [report["dataset"], label, _with_ci(default)]
            if theirs:
                peer = max(theirs, key=lambda n: theirs[n]["ndcg@10"])
                row += [peer, _with_ci(theirs[peer]), _change(default, theirs[peer]), _goal(default, theirs[peer])]
            else:
                row += ["-", "-", "-", "-"]
            if ours:
                single = max(ours, key=lambda n: ours[n]["ndcg@10"])
                row += [single, f"{ours[single]['ndcg@10']:.4f}", _change(default, ours[single])]
            else:
                row += ["-", "-", "-"]
            lines.append("| " + " | ".join(row) + " |")
    if unfinished:
        lines += ["", "Peers that did not finish, and are not counted as beaten: " + "; ".join(unfinished) + "."]
    return "\n".join(lines)


def _with_ci(scores: dict[str, Any] | None) -> str:
    if not scores or scores.get("ndcg@10") is None:
        return "not run"
    low, high = scores.get("ci95_ndcg@10") or (float("nan"), float("nan"))
    return f"{scores['ndcg@10']:.4f} [{low:.4f}, {high:.4f}]"


def _change(ours: dict[str, Any] | None, theirs: dict[str, Any]) -> str:
    if not ours or ours.get("ndcg@10") is None or not theirs["ndcg@10"]:
        return "-"
    return f"{ours['ndcg@10'] / theirs['ndcg@10'] - 1:+.1%}"


def _goal(ours: dict[str, Any] | None, theirs: dict[str, Any]) -> str:
    """Met when the default is at least GOAL x the peer and its CI's low end is above the peer's high end."""
    if not ours or ours.get("ndcg@10") is None:
        return "-"
    apart = (ours.get("ci95_ndcg@10") or [0.0])[0] > (theirs.get("ci95_ndcg@10") or [0.0, float("inf")])[1]
    return "met" if ours["ndcg@10"] >= GOAL * theirs["ndcg@10"] and apart else "**not met**"


def cached(name: str) -> Path:
    return WORK / "reports" / f"{name}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MovieLens 100k only, small budgets: < 2 minutes")
    parser.add_argument("--datasets", nargs="*", choices=sorted(DATASETS), help="default: all (none with --store)")
    parser.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="[NAME=]DATA_DIR_OR_URL",
        help="an imported store as one more dataset (repeatable)",
    )
    parser.add_argument("--store-target", default="purchase", help="--store: comma-separated event types to predict")
    parser.add_argument("--models", nargs="*", help="shopsense models to run (default: all + hybrid)")
    parser.add_argument("--max-users", type=int, help="evaluate a seeded sample of test users per dataset")
    parser.add_argument("--no-tune", action="store_true", help="defaults instead of validation tuning")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-pipeline", action="store_true", help="leave out the default pipeline's row")
    parser.add_argument("--no-cornac", action="store_true", help="skip the Cornac peers (no venv needed)")
    parser.add_argument("--no-recbole", action="store_true", help="skip the RecBole peers (no venv needed)")
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="also report the other datasets' last full runs (cached under benchmarks/.work), each with its command",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing: rewrite the results from the cached full runs"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    stores = dict(store_dataset(text, args.store_target) for text in args.store)
    DATASETS.update(stores)
    public = ["movielens-100k"] if args.quick else (args.datasets or ([] if stores else list(DATASETS)))
    if public and not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: the benchmark reads the shared datasets in place")
    names = [n for n in public if n not in stores] + list(stores)
    if args.report_only:
        names, args.keep_others = [], True
    stem = "quality-quick" if args.quick else "quality"
    fresh = {}
    for name in names:
        fresh[name] = run_dataset(name, DATASETS[name], args)
        if not args.quick:
            cached(name).parent.mkdir(parents=True, exist_ok=True)
            cached(name).write_text(json.dumps(fresh[name], default=str))
    reports = [
        fresh[name] if name in fresh else json.loads(cached(name).read_text())
        for name in DATASETS
        if name in fresh or (args.keep_others and not args.quick and cached(name).exists())
    ]
    commands = "\n".join(f"| {r['dataset']} | `{r['command'].strip()}` | {r['seconds']:,.0f} |" for r in reports)
    preamble = (
        "# Recommendation quality: shopsense models vs peer libraries\n\n"
        f"Measured on {platform.node() or 'this machine'} ({os.cpu_count()} cores). Full-catalogue ranking, "
        "no sampled negatives; every model tuned on a validation split of the training period; "
        "peers are marked *(peer)*. CIs are 95% bootstrap over users; *p vs best* is a paired t-test "
        "on per-user NDCG@10 against the task's best model.\n\n"
        "| dataset | command | seconds |\n|---|---|---|\n"
        f"{commands}\n\n## Headline: the default pipeline (what `shopsense train` builds) vs the best finished peer\n\n"
        f"{summary(reports)}\n\n![NDCG@10 per model]({stem}.png)\n\n## Per dataset\n\n"
    )
    for path in write_report(reports, args.out, stem, preamble):
        print(f"wrote {path}", file=sys.stderr)
    print(summary(reports))


if __name__ == "__main__":
    main()
