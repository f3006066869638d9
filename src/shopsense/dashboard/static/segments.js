// Segments page: the expression editor checks as one types; the clusters load after the page.
"use strict";

(() => {
  const editor = document.getElementById("expression");
  const status = document.getElementById("check");
  const caret = document.getElementById("caret");
  const save = document.getElementById("save-segment");
  let timer = null;
  let asked = 0;

  const percent = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");

  async function check() {
    const text = editor.value;
    const mine = ++asked;
    if (!text.trim()) {
      status.textContent = "Type an expression: it is checked against the customer profiles as you type.";
      status.className = "muted";
      caret.hidden = true;
      return;
    }
    let found;
    try {
      found = await shopsense.json("/segments/check?expression=" + encodeURIComponent(text));
    } catch (error) {
      if (mine === asked) {
        status.textContent = error.message;
        status.className = "error";
      }
      return;
    }
    if (mine !== asked) return; // a newer keystroke is being checked
    if (found.ok) {
      status.textContent = `Valid: ${found.customers.toLocaleString()} customers (${percent(found.share)}), ` +
        `${percent(found.revenue_share)} of revenue.`;
      status.className = "ok";
      caret.hidden = true;
    } else {
      status.textContent = `Column ${found.position + 1}: ${found.message}`;
      status.className = "error";
      caret.textContent = found.caret || "";
      caret.hidden = !found.caret;
    }
    if (save) save.disabled = !found.ok;
  }

  if (editor) {
    editor.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(check, 200);
    });
    if (editor.value.trim()) check();
  }

  async function clusters() {
    const note = document.getElementById("clusters-status");
    if (!note) return;
    let found;
    try {
      found = await shopsense.json("/segments/clusters");
    } catch (error) {
      note.textContent = "No clusters: " + error.message;
      return;
    }
    note.textContent = `${found.clusters.length} groups found by k-means on the profiles, largest first.`;
    const body = document.querySelector("#clusters-table tbody");
    for (const c of found.clusters) {
      const row = body.insertRow();
      const name = document.createElement("strong");
      name.textContent = c.name;
      row.insertCell().append(name);
      row.insertCell().textContent = c.description;
      const size = row.insertCell();
      size.className = "num";
      size.textContent = `${c.customers.toLocaleString()} (${percent(c.share)})`;
    }
    document.getElementById("clusters-table").hidden = false;
    const plot = document.getElementById("clusters-chart");
    plot.hidden = false;
    shopsense.draw(plot, found.chart);
  }

  clusters();
})();
