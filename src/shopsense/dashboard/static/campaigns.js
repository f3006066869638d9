// Campaigns page: the MDE / sample-size calculator answers as its inputs change.
"use strict";

(() => {
  const form = document.getElementById("design-form");
  if (!form) return;
  const field = (id) => document.getElementById(id);
  const answer = field("design-answer");
  let timer = null;

  async function solve() {
    const params = new URLSearchParams({
      baseline: String(Number(field("design-baseline").value) / 100),
      alpha: field("design-alpha").value,
      power: field("design-power").value,
    });
    const mde = field("design-mde").value;
    if (mde) params.set("mde", String(Number(mde) / 100));
    else params.set("n", field("design-n").value);
    let found;
    try {
      found = await shopsense.json("/campaign-design?" + params.toString());
    } catch (error) {
      answer.textContent = error.message;
      answer.className = "error";
      return;
    }
    if (found.problem) {
      answer.textContent = found.problem;
      answer.className = "error";
      return;
    }
    answer.className = "";
    const pp = (100 * found.mde_abs).toFixed(2);
    const relative = (100 * found.relative).toFixed(1);
    answer.textContent = mde
      ? `Detecting +${pp} pp (${relative}% relative) needs ${found.n_per_arm.toLocaleString()} users per arm.`
      : `${found.n_per_arm.toLocaleString()} users per arm detect a lift of +${pp} pp (${relative}% relative) or more.`;
    shopsense.draw(field("design-chart"), found.chart);
  }

  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(solve, 250);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  solve();
})();
