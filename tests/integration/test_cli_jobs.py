"""``shopsense jobs``: list, show and watch jobs recorded by a runner that has since stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from shopsense.cli import app
from shopsense.errors import ShopsenseError
from shopsense.services.jobs import JobContext, JobStatus
from shopsense.services.shop import Shop
from shopsense.settings import load_settings

runner = CliRunner()


def _run(data: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data), *args])
    return result.exit_code, result.stdout, result.stderr


def _finished_jobs(data: Path) -> tuple[str, str]:
    """A succeeded and a failed job, run in-process by a shop that is closed afterwards."""

    def count(job: JobContext) -> dict[str, int]:
        job.progress(0.5, "counting")
        return {"counted": 3}

    def fail(job: JobContext) -> None:
        raise ShopsenseError("the store has no events: import some first")

    with Shop(load_settings(None, data_dir=data)) as shop:
        done, failed = shop.jobs.submit("count", count), shop.jobs.submit("count", fail)
        deadline = time.monotonic() + 30
        while any(
            (j := shop.jobs.get(i)) is None or j.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED)
            for i in (done.job_id, failed.job_id)
        ):
            assert time.monotonic() < deadline, "the jobs did not end"
            time.sleep(0.02)
    return done.job_id, failed.job_id


def test_watch_list_and_show_jobs_that_ended(tmp_path: Path) -> None:
    data = tmp_path / "d"
    done, failed = _finished_jobs(data)
    code, out, _ = _run(data, "jobs", "watch", done)
    assert code == 0 and json.loads(out) == {"counted": 3}
    code, out, err = _run(data, "jobs", "watch", failed)
    assert code == 1 and "the store has no events" in err and "Traceback" not in err
    code, out, _ = _run(data, "jobs", "list", "--json")
    assert code == 0 and [(j["job_id"], j["status"]) for j in json.loads(out)] == [
        (failed, "failed"),
        (done, "succeeded"),
    ]
    code, out, _ = _run(data, "jobs", "show", done, "--json")
    assert code == 0 and json.loads(out)["result"] == {"counted": 3} and json.loads(out)["progress"] == 1.0
    code, _, err = _run(data, "jobs", "show", "nope")
    assert code == 2 and "no job 'nope'" in err
