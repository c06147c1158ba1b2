// Filtering and sorting of the model table, and dimming plot points that the filter hides. No dependencies.
(function () {
  "use strict";
  const table = document.getElementById("models");
  if (!table) return;  // card pages have no table
  const tbody = table.tBodies[0];
  const filter = document.getElementById("filter");
  const count = document.getElementById("count");

  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const visible = new Set();
    for (const row of tbody.rows) {
      const haystack = row.dataset.search + " " + row.textContent.toLowerCase();
      const show = words.every((w) => haystack.includes(w));
      row.hidden = !show;
      if (show) visible.add(row.dataset.name);
    }
    count.textContent = visible.size + (visible.size === 1 ? " model" : " models");
    for (const point of document.querySelectorAll("svg.plot .point")) {
      point.classList.toggle("dimmed", !visible.has(point.dataset.name));
    }
  }

  function sortBy(th) {
    const index = Array.prototype.indexOf.call(th.parentNode.children, th);
    const numeric = th.dataset.type === "num";
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    for (const other of th.parentNode.children) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const rows = Array.from(tbody.rows);
    rows.sort((a, b) => {
      const x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
      if (x === "" || y === "") return (x === "") - (y === "");  // missing values last
      const order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    for (const row of rows) tbody.appendChild(row);
  }

  filter.addEventListener("input", applyFilter);
  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", () => sortBy(th));
    th.addEventListener("keydown", (event) => { if (event.key === "Enter") sortBy(th); });
  }
  const query = new URLSearchParams(window.location.search).get("q");
  if (query) { filter.value = query; }
  applyFilter();
})();
