"""RecBole peer worker: fits RecBole 1.2.1 models on a benchmark job and writes their top-k lists.

It runs inside the isolated RecBole virtualenv made by ``recbole_peer.ensure_env`` on a job directory written by
``cornac_runner.write_job`` (see README.md beside it), and shares ``peer_worker``'s job reader, event reader, top-k
writer and child-process-per-model loop with ``cornac_worker.py`` (it sits in this folder, which Python puts on the
path of a script). ``python recbole_worker.py
JOB`` runs every model named in ``JOB/meta.json``, each in a child process of its own (``--model NAME``) under the
job's wall-clock budget.

RecBole re-splits a dataset itself; here the harness owns the split, so every training event is written to RecBole's
atomic ``.inter`` file and the only carve-out is RecBole's leave-one-out ``valid_only`` split (each user's last event)
that early-stops the epoch-trained models (LightGCN, SASRec, BERT4Rec). EASE, closed form, is built on every event.
Scoring does not go through RecBole's evaluator: the worker ranks the whole catalogue itself, with sequence models
reading each user's full training history, and maps RecBole's internal ids back to the job's dense indices.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from peer_worker import Events, Job, main, peak_rss_mb, rss_mb, seed_everything, top_k

SEQUENCE_MODELS = ("SASRec", "BERT4Rec")
TRAINED_MODELS = ("LightGCN", *SEQUENCE_MODELS)
"""Models trained by epochs, early-stopped on the leave-one-out carve-out; others (EASE) are fitted on everything."""
TRAIN_SHARE = 0.75
"""Training stops starting epochs past this share of the budget, leaving the rest for loading and ranking."""
SCORE_CHUNK = 512


def log(message: str) -> None:
    print(f"[recbole] {message}", file=sys.stderr, flush=True)


def model_folder(job: Job, name: str) -> Path:
    """Where a model's RecBole files go; also its process's cwd, where RecBole writes its logs."""
    return job.path / f"recbole_{name}"


def write_atomic(events: Events, model: str, folder: Path) -> Path:
    """``folder/job/job.inter``: sequence models get every event in time order; the others one row per (user, item)
    with the summed weight and the last timestamp (what RecBole's general models expect)."""
    user, item, weight, stamp = events.user, events.item, events.weight, events.timestamp.astype(np.float64)
    if model not in SEQUENCE_MODELS:
        pair = user * (int(item.max()) + 1 if len(item) else 1) + item
        keys, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
        weight = np.bincount(inverse, weights=weight)
        last = np.full(len(keys), -np.inf)
        np.maximum.at(last, inverse, stamp)
        user, item, stamp = user[first], item[first], last
    path = folder / "job" / "job.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        out.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u, i, w, t in zip(user.tolist(), item.tolist(), weight.tolist(), stamp.tolist(), strict=True):
            out.write(f"{u}\t{i}\t{w!r}\t{t!r}\n")
    return path


def config_dict(job: Job, model: str, folder: Path) -> dict[str, Any]:
    """RecBole's documented defaults for the model, except what the protocol needs (no test split, CPU, quiet)."""
    settings: dict[str, Any] = {
        "data_path": str(folder),
        "checkpoint_dir": str(folder / "saved"),
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_only"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "seed": job.seed,
        "reproducibility": True,
        "device": "cpu",
        "use_gpu": False,
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "worker": 0,
    }
    if model in SEQUENCE_MODELS:  # their default loss is cross-entropy over all items, which takes no sampling
        settings["train_neg_sample_args"] = None
    return settings


def train(trainer: Any, train_data: Any, valid_data: Any, deadline: float) -> dict[str, Any]:
    """RecBole's fit loop (``epochs``, early stopping after ``stopping_step`` epochs without a better validation
    NDCG@10, the best epoch's weights kept), also stopped before an epoch that would pass ``deadline``."""
    model, config = trainer.model, trainer.config
    trainer.eval_collector.data_collect(train_data)
    best_score, best_state, best_epoch, bad, epoch_seconds = -np.inf, None, -1, 0, 0.0
    epoch = 0
    stop = "epochs"
    for epoch in range(config["epochs"]):
        if time.perf_counter() + epoch_seconds > deadline:
            stop = "time budget"
            break
        started = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        trained = time.perf_counter()
        score, _ = trainer._valid_epoch(valid_data, show_progress=False)
        epoch_seconds = max(epoch_seconds, time.perf_counter() - started)
        loss_value = float(sum(loss) if isinstance(loss, tuple) else loss)
        log(
            f"epoch {epoch}: loss {loss_value:.4f}, carve-out NDCG@10 {score:.4f} "
            f"(train {trained - started:.1f}s, validate {time.perf_counter() - trained:.1f}s)"
        )
        if score > best_score:
            best_score, best_state, best_epoch, bad = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            bad += 1
            if bad > config["stopping_step"]:
                stop = "early stopping"
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"epochs_run": epoch + 1 if stop != "time budget" else epoch, "best_epoch": best_epoch + 1, "stop": stop}


def scorer(model: Any, dataset: Any, name: str, events: Events, job: Job) -> Any:
    """``scores(dense users) -> (users, n_items)`` over the job's dense items; RecBole's padding id 0 and items
    without a training event stay -inf, and so do users RecBole has no training event for."""
    import torch
    from recbole.data.interaction import Interaction

    item_tokens = dataset.field2id_token["item_id"]
    dense_item = np.array([-1, *(int(token) for token in item_tokens[1:])], dtype=np.int64)
    internal_item = np.zeros(job.n_items, dtype=np.int64)
    internal_item[dense_item[1:]] = np.arange(1, len(dense_item))
    user_ids = dataset.field2token_id["user_id"]
    internal_user = np.array([user_ids.get(str(user), 0) for user in range(job.n_users)], dtype=np.int64)
    max_length = int(dataset.config["MAX_ITEM_LIST_LENGTH"] or 50)

    def scores(users: np.ndarray) -> np.ndarray:
        known = internal_user[users] > 0
        if name in SEQUENCE_MODELS:
            sequences = np.zeros((len(users), max_length), dtype=np.int64)
            lengths = np.ones(len(users), dtype=np.int64)
            for row, user in enumerate(users.tolist()):
                history = internal_item[events.item[events.span(user)]][-max_length:]
                sequences[row, : len(history)] = history
                lengths[row] = max(len(history), 1)
            batch = Interaction({"item_id_list": torch.from_numpy(sequences), "item_length": torch.from_numpy(lengths)})
        else:
            batch = Interaction({"user_id": torch.from_numpy(internal_user[users])})
        with torch.no_grad():
            internal = model.full_sort_predict(batch).reshape(len(users), -1).double().numpy()
        block = np.full((len(users), job.n_items), -np.inf)
        block[:, dense_item[1:]] = internal[:, 1 : len(dense_item)]
        block[~known] = -np.inf
        return block

    return scores


def recommend(scores: Any, events: Events, users: np.ndarray, job: Job, exclude_seen: bool) -> np.ndarray:
    """Top-k for each user over the full catalogue, the user's training items excluded iff ``exclude_seen``."""
    seen = events.seen(job.n_users, job.n_items)
    out = [np.empty((0, job.k), dtype=np.int32)]
    for lo in range(0, len(users), SCORE_CHUNK):
        chunk = users[lo : lo + SCORE_CHUNK]
        block = scores(chunk)
        blocked = seen[chunk].toarray() > 0 if exclude_seen else np.zeros(block.shape, dtype=bool)
        out.append(top_k(block, blocked, job.k))
    return np.concatenate(out)


def run_model(job: Job, name: str) -> dict[str, Any]:
    """Build RecBole's dataset from train.parquet, fit (early-stopped within the budget), write the lists."""
    started = time.perf_counter()
    deadline = started + TRAIN_SHARE * (job.time_budget_s or float("inf"))
    if not hasattr(np, "float"):  # recbole 1.2.1's Interaction still tests isinstance(x, np.float), gone in numpy 1.24
        np.float = float  # type: ignore[attr-defined]
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(job.threads or 1)
    seed_everything(job.seed)
    baseline = rss_mb()
    events = Events.read(job.path / "train.parquet")
    folder = model_folder(job, name)
    write_atomic(events, name, folder)
    sys.argv = sys.argv[:1]  # RecBole's Config parses the command line as overrides
    config = Config(model=name, dataset="job", config_dict=config_dict(job, name, folder))
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(job.threads or 1)  # init_seed leaves threads alone, but be explicit after recbole's setup
    dataset = create_dataset(config)
    prep_seconds = time.perf_counter() - started
    fit_started = time.perf_counter()
    info: dict[str, Any] = {}
    if name in TRAINED_MODELS:
        train_data, valid_data, _ = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        info = train(trainer, train_data, valid_data, deadline)
    else:  # closed form: built on every training event, no carve-out
        model = get_model(config["model"])(config, dataset).to(config["device"])
        model.eval()
    fit_seconds = time.perf_counter() - fit_started
    log(f"{name}: fitted in {fit_seconds:.1f}s {info}")
    scoring = time.perf_counter()
    scores = scorer(model, dataset, name, events, job)
    for output, exclude_seen in job.outputs.items():
        users = np.load(job.path / f"users_{output}.npy").astype(np.int64)
        np.save(job.path / f"recs_{name}_{output}.npy", recommend(scores, events, users, job, exclude_seen))
    shown = ["reg_weight", "embedding_size", "n_layers", "hidden_size"]  # those the model's own defaults set
    if name in TRAINED_MODELS:
        shown += ["epochs", "stopping_step", "learning_rate", "train_batch_size"]
    if name in SEQUENCE_MODELS:
        shown += ["MAX_ITEM_LIST_LENGTH"]
    params = {key: config[key] for key in shown if key in config}
    return {
        "fit_seconds": fit_seconds,
        "peak_mb": peak_rss_mb() - baseline,
        "peak_rss_mb": peak_rss_mb(),
        "params": {**params, **info},
        "valid_ndcg@10": None,
        "error": None,
        "prep_seconds": prep_seconds,
        "score_seconds": time.perf_counter() - scoring,
    }


if __name__ == "__main__":
    # RecBole 1.2.1 on pandas 2.2 / torch 2.13 repeats FutureWarnings and deprecation notices that change nothing here.
    # Each model runs with its folder as cwd, where RecBole writes its logs.
    quiet = {"PYTHONWARNINGS": "ignore::FutureWarning,ignore::UserWarning"}
    main(__doc__.splitlines()[0], Path(__file__), run_model, log, env=quiet, workdir=model_folder)
