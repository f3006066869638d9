// Models page: once a training job (followed by jobs.js) succeeds, show the new bundle.
"use strict";

shopsense.followJob((job, status) => {
  status.textContent = "Trained " + job.result.version + " in " + job.result.seconds + " s.";
  setTimeout(() => window.location.assign("/models?message=" + encodeURIComponent(status.textContent)), 600);
});
