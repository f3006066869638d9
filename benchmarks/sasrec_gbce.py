"""SASRec's three losses under one wall-clock budget: full softmax (the default), sampled softmax and gBCE.

Issue 24, item 3: does gSASRec's generalised BCE (Petrov & Macdonald 2023; 256 uniform negatives,
calibration t = 0.75) train SASRec further than the full softmax in the same minutes on 2 cores?
Each loss gets the same architecture (the ``SASRecConfig`` defaults: 2 blocks, dim 64, 50 events)
and the same budget (``--minutes``, default 8); training stops at the budget or after
``--patience`` epochs without a better NDCG@10 on SASRec's own validation users, keeping the best
state. Scoring ranks the whole catalogue (no sampled metrics) for every test user.

Datasets, read and split with ``benchmarks/quality.py``'s loaders (its cached stores under
``benchmarks/.work/quality/``), always leave-one-out (the last target event of each user):
- ``movielens-100k``: the MovieLens set here with timestamps; ratings in time order, seen movies
  never recommended again (task ``new``, the paper's protocol).
- ``diginetica``, ``yoochoose``: session click streams, a session is a user; task ``all``.
The paper's ML-1M (NDCG@10 0.1726) cannot be reproduced here: ``../shared/datasets/movielens_1m``
has no timestamps, so a user's ratings have no order to learn or hold out the last of.

    .venv/bin/python benchmarks/sasrec_gbce.py                                    # ML-100k + Diginetica, 8 min each
    .venv/bin/python benchmarks/sasrec_gbce.py --datasets diginetica --minutes 2  # one set, shorter budget

Writes ``benchmarks/results/sasrec-gbce.md`` and ``sasrec-gbce.json`` after every dataset, keeping the
other datasets' last results there (each with the command that made it) unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import DATASETS, RESULTS, load  # noqa: E402
from shopsense.eval.harness import EvalConfig, Task, compare, evaluate_model, prepare  # noqa: E402
from shopsense.eval.report import build_report  # noqa: E402
from shopsense.eval.splits import Protocol  # noqa: E402
from shopsense.models.registry import build_model  # noqa: E402
from shopsense.models.sasrec import SASRec, SASRecConfig  # noqa: E402

LOSSES = ("softmax", "sampled", "gbce")
TASKS = {"movielens-100k": (Task.NEW,), "diginetica": (Task.ALL, Task.NEW), "yoochoose": (Task.ALL, Task.NEW)}


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Popularity and SASRec with each loss on one dataset's leave-one-out split."""
    spec = DATASETS[name]
    split = spec.split.model_copy(update={"protocol": Protocol.LEAVE_LAST, "last_k": 1})
    events, catalog = load(name, spec)
    config = EvalConfig(split=split, tasks=TASKS[name], bootstrap=1000)
    prepared = prepare(events, config, catalog)
    print(f"[{name}] {events.num_rows:,} events, {len(prepared.data.items):,} items", file=sys.stderr)
    results = [evaluate_model(prepared, "popular", build_model("popular"))]
    training: dict[str, Any] = {}
    for loss in args.losses:
        print(f"[{name}] sasrec loss={loss}", file=sys.stderr)
        model = SASRec(
            SASRecConfig(
                loss=loss,
                max_minutes=args.minutes,
                max_epochs=10_000,
                patience=args.patience,
                target_types=split.target_types,
                seed=args.seed,
            )
        )
        results.append(evaluate_model(prepared, f"sasrec-{loss}", model))
        history = model.history_
        training[f"sasrec-{loss}"] = {
            "epochs": len(history),
            "best_epoch": model.best_epoch_,
            "best_valid_ndcg@10": round(history[model.best_epoch_ - 1].ndcg, 4),
            "train_seconds": round(sum(log.seconds for log in history), 1),
            "valid_ndcg@10_per_epoch": [round(log.ndcg, 4) for log in history],
        }
        print(f"[{name}] {training[f'sasrec-{loss}']}", file=sys.stderr)
    compare(results)
    primary = TASKS[name][0] if name == "movielens-100k" else Task.ALL
    report = build_report(name, prepared, results, primary)
    report["training"] = training
    return report


def earlier(path: Path, fresh: list[str]) -> list[dict[str, Any]]:
    """The results already in ``path`` of datasets not run now, each with the command that made it."""
    if not path.exists():
        return []
    payload = json.loads(path.read_text())
    kept = [{"command": payload["command"], **r} for r in payload["reports"] if r["dataset"] not in fresh]
    return kept


def markdown(reports: list[dict[str, Any]]) -> str:
    """Per dataset: NDCG@10 (95% CI), HR@10 and training figures of every model on the primary task."""
    import torch

    lines = [
        "# SASRec: full softmax vs sampled softmax vs gBCE in the same time budget",
        "",
        *(f"Command: `{command}`" for command in dict.fromkeys(r["command"] for r in reports)),
        "",
        f"Measured on {platform.node() or 'this machine'} ({os.cpu_count()} cores, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, shared with other work), CPU only. "
        "Every SASRec has the default architecture and the same minutes (see the command), stops after "
        "`--patience` epochs without a better validation NDCG@10 and keeps its best state. "
        "Leave-one-out (each user's last target event), whole catalogue ranked, no sampled metrics. "
        "CIs: 95% bootstrap over users; p: paired t-test on per-user NDCG@10 against the best model.",
        "",
        "The paper's ML-1M figure (gSASRec NDCG@10 0.1726) is not comparable: the ML-1M copy here has no "
        "timestamps, so there is no last event to leave out; MovieLens-100k (with times) stands in for it.",
        "",
    ]
    for report in reports:
        task = report["primary_task"]
        models = report["tasks"][task]["models"]
        lines += [
            f"## {report['dataset']} (task `{task}`, {report['tasks'][task]['users']:,} test users, "
            f"{report['items']:,} items)",
            "",
            f"Split: {report['split']}. Command: `{report['command']}`; load average "
            f"{report.get('load_average', 'not recorded')} at the end.",
            "",
            "| model | NDCG@10 | 95% CI | HR@10 | p vs best | fit s | epochs (best) | valid NDCG@10 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, values in sorted(models.items(), key=lambda kv: -(kv[1].get("ndcg@10") or 0)):
            low, high = values["ci95_ndcg@10"]
            fit = report["models"][name]["fit_seconds"]
            trained = report["training"].get(name)
            epochs = f"{trained['epochs']} ({trained['best_epoch']})" if trained else "-"
            valid = f"{trained['best_valid_ndcg@10']:.4f}" if trained else "-"
            p = values.get("p_vs_best")
            lines.append(
                f"| {name} | {values['ndcg@10']:.4f} | {low:.4f}-{high:.4f} | {values['hit_rate@10']:.4f} | "
                f"{'-' if p is None else f'{p:.3g}'} | {fit:,.0f} | {epochs} | {valid} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", choices=sorted(TASKS), default=["movielens-100k", "diginetica"])
    parser.add_argument("--losses", nargs="*", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of each SASRec")
    parser.add_argument("--patience", type=int, default=30, help="epochs without a better validation NDCG@10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--fresh", action="store_true", help="drop the other datasets' earlier results")
    args = parser.parse_args()
    command = (".venv/bin/python benchmarks/sasrec_gbce.py " + " ".join(sys.argv[1:])).strip()
    path = args.out / "sasrec-gbce.json"
    kept = [] if args.fresh else earlier(path, args.datasets)
    reports = []
    for name in args.datasets:
        started = time.perf_counter()
        report = run_dataset(name, args)
        report["command"], report["seconds"] = command, round(time.perf_counter() - started, 1)
        report["load_average"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
        reports.append(report)
        args.out.mkdir(parents=True, exist_ok=True)
        every = [*kept, *reports]
        path.write_text(json.dumps({"command": command, "reports": every}, indent=1, default=str) + "\n")
        (args.out / "sasrec-gbce.md").write_text(markdown(every) + "\n")
        print(f"wrote {args.out / 'sasrec-gbce.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
