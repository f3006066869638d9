// Follows a job named by #job[data-job] until it ends (polling data-poll + id), then shows its result, or
// hands the finished job to the page's hook: a page whose box has data-follow="page" calls
// shopsense.followJob(onSuccess) itself, onSuccess(job, statusElement) running once the job succeeded.
"use strict";

(() => {
  function followJob(onSuccess) {
    const box = document.getElementById("job");
    if (!box) return;
    const bar = document.getElementById("job-bar");
    const status = document.getElementById("job-status");
    const result = document.getElementById("job-result");
    const url = (box.dataset.poll || "/models/jobs/") + encodeURIComponent(box.dataset.job);

    async function poll() {
      try {
        const job = await shopsense.json(url);
        bar.style.width = Math.round(100 * job.progress) + "%";
        status.textContent = job.status + (job.message ? ": " + job.message : "");
        if (job.status === "succeeded" || job.status === "failed") {
          box.dataset.done = job.status;
          if (job.status === "failed") {
            status.textContent = "Failed: " + job.error;
            status.className = "error";
          } else {
            bar.style.width = "100%";
            if (result) result.textContent = JSON.stringify(job.result, null, 2);
            if (onSuccess) onSuccess(job, status);
          }
          return;
        }
      } catch (err) {
        status.textContent = "Could not read the job: " + err.message;
      }
      setTimeout(poll, 1000);
    }
    poll();
  }

  shopsense.followJob = followJob;
  const box = document.getElementById("job");
  if (box && box.dataset.follow !== "page") followJob(null);
})();
