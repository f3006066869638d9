// Data preview: show the first value of the column each field is mapped to as the choice changes.
"use strict";

(() => {
  const data = document.getElementById("preview-data");
  if (!data) return;
  const preview = JSON.parse(data.textContent);
  document.querySelectorAll("select[data-field]").forEach((select) => {
    select.addEventListener("change", () => {
      const at = preview.columns.indexOf(select.value);
      const cell = document.querySelector('td[data-sample="' + select.dataset.field + '"]');
      if (cell) cell.textContent = at >= 0 && at < preview.first.length ? preview.first[at] : "";
    });
  });
})();
