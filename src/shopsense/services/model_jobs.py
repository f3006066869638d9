"""Training a pipeline as a job, then serving the new bundle: the work the API (``POST /v1/models/train``) and
the dashboard (``/models``) both submit, so the two shells start the same job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopsense.services.jobs import JobContext, Work

if TYPE_CHECKING:
    from shopsense.services.serving import ServingService

__all__ = ["TRAIN_JOB", "train_work"]

TRAIN_JOB = "train"
"""The kind of the jobs :func:`train_work` does."""


def train_work(svc: ServingService, pipeline: str) -> Work:
    """A job training ``pipeline`` on every stored event, then serving the new bundle when ``pipeline`` is the
    served one (unless another version is pinned).

    Args:
        svc: The server's serving service (reloaded after training the served pipeline).
        pipeline: A configured pipeline's name (check it first: an unknown one fails the job).

    Returns:
        The work for ``Jobs.submit(TRAIN_JOB, …)``; its result: pipeline, version, seconds and the heads'
        held-out scores.
    """

    def work(job: JobContext) -> dict[str, Any]:
        job.progress(0.0, f"training pipeline {pipeline!r}")
        trained = job.recommendations.train(pipeline)
        if pipeline == svc.settings.serve.pipeline:
            job.progress(0.95, "serving the new bundle")
            svc.reload()
        info = trained.bundle
        return {
            "pipeline": info.pipeline,
            "version": info.version,
            "seconds": round(trained.seconds, 1),
            "heads": trained.head_scores(),
        }

    return work
