// shopsense dashboard: draws every .chart from its JSON, and small helpers the pages share.
"use strict";

const shopsense = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function draw(div, figure) {
    const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"] };
    return Plotly.react(div, figure.data || [], figure.layout || {}, config);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("div.chart[data-figure]").forEach((div) => {
      const data = document.getElementById(div.dataset.figure);
      if (data && !div.dataset.drawn) {
        div.dataset.drawn = "1";
        draw(div, JSON.parse(data.textContent));
      }
    });
  }

  // fetch JSON from the dashboard (same origin, cookie session, CSRF header on writes)
  async function json(url, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: "application/json", "X-CSRF-Token": csrf() }, opts.headers);
    opts.credentials = "same-origin";
    const response = await fetch(url, opts);
    if (response.status === 401) {
      window.location.assign("/signin?next=" + encodeURIComponent(window.location.pathname + window.location.search));
      throw new Error("signed out");
    }
    const body = await response.json();
    if (!response.ok) {
      throw new Error((body.error && body.error.message) || response.statusText);
    }
    return body;
  }

  document.addEventListener("DOMContentLoaded", () => drawAll(document));
  return { csrf, draw, drawAll, json };
})();
window.shopsense = shopsense;
