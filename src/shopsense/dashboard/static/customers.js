// Customers page: re-rank the customer's recommendations live as the α slider and rule toggles change.
"use strict";

(() => {
  const section = document.getElementById("recommendations");
  const form = document.getElementById("rerank");
  if (!section || !form) return;
  const user = section.dataset.user;
  const slider = document.getElementById("alpha");
  const shown = document.getElementById("alpha-value");
  const status = document.getElementById("rec-status");
  const body = document.querySelector("#rec-table tbody");
  let asked = 0;

  const pct = (p) => (p === null || p === undefined ? "—" : (100 * p).toFixed(1) + "%");
  const cell = (text, cls) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  };

  async function load() {
    const mine = ++asked;
    const params = new URLSearchParams({ user: user, alpha: slider.value, k: "10" });
    form.querySelectorAll("input[data-rule]").forEach((box) => params.set(box.dataset.rule, box.checked ? "true" : "false"));
    shown.textContent = Number(slider.value).toFixed(2);
    status.textContent = "Ranking…";
    try {
      const answer = await shopsense.json("/customers/recommendations?" + params.toString());
      if (mine !== asked) return; // a newer request is on its way
      body.replaceChildren();
      answer.items.forEach((item, n) => {
        const tr = document.createElement("tr");
        tr.dataset.item = item.item_id;
        const link = document.createElement("a");
        link.href = "/items?item=" + encodeURIComponent(item.item_id);
        link.textContent = item.item_id;
        const first = cell("");
        first.appendChild(link);
        tr.append(cell(String(n + 1)), first, cell(item.title || ""), cell(pct(item.p_attention), "num"),
          cell(pct(item.p_purchase), "num"), cell(item.score === null ? "—" : item.score.toFixed(4), "num"), cell(item.reason || ""));
        body.appendChild(tr);
      });
      status.textContent = (answer.fallback ? "Fallback: " + answer.fallback + ". " : "") +
        "Model " + (answer.model_version || "none") + ", α = " + Number(answer.alpha).toFixed(2) + ".";
      section.dataset.ranked = String(mine);
    } catch (err) {
      if (mine === asked) status.textContent = "Could not rank: " + err.message;
    }
  }

  let timer = null;
  slider.addEventListener("input", () => {
    shown.textContent = Number(slider.value).toFixed(2);
    clearTimeout(timer);
    timer = setTimeout(load, 120);
  });
  form.addEventListener("change", load);
  form.addEventListener("submit", (event) => event.preventDefault());
  load();
})();
