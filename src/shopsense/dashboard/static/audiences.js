// Audiences page: follows a running audience job's progress, then shows the audience it built.
"use strict";

(() => {
  const card = document.getElementById("audience-job");
  if (!card || card.dataset.done === "yes") return;
  const bar = document.getElementById("job-bar");
  const message = document.getElementById("job-message");

  async function poll() {
    let job;
    try {
      job = await shopsense.json("/audiences/jobs/" + encodeURIComponent(card.dataset.job));
    } catch (error) {
      message.textContent = error.message;
      message.className = "error";
      return;
    }
    if (bar) bar.style.width = Math.round(100 * job.progress) + "%";
    if (message) message.textContent = job.message || job.status;
    if (job.done) {
      window.location.reload();
    } else {
      setTimeout(poll, 500);
    }
  }

  setTimeout(poll, 300);
})();
