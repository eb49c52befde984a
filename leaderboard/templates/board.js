/* robench board page: sort by any column (numeric-aware), filter by text, and read every
 * model's robust accuracy at another eps from its embedded robustness curve.
 * Plain JavaScript, no library, no network request. */
(function () {
  "use strict";
  var table = document.getElementById("board");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  /* rows by a stable number (their order in the page as built); `order` is the order shown */
  var rows = Array.prototype.slice.call(tbody.rows);
  var order = rows.map(function (_, i) { return i; });
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  var searchText = [];
  var keyCache = {};
  var state = { column: -1, direction: "asc" };

  function refreshSearchText() {
    searchText = rows.map(function (row) { return row.textContent.toLowerCase(); });
  }

  function cellValue(row, column) {
    var cell = row.cells[column];
    var value = cell.getAttribute("data-value");
    return value === null ? cell.textContent.trim() : value;
  }

  /* Numeric keys when every non-empty value of the column is a number, else text; "" means missing. */
  function sortKeys(column) {
    if (keyCache[column]) { return keyCache[column]; }
    var values = rows.map(function (row) { return cellValue(row, column); });
    var numeric = values.every(function (v) { return v === "" || isFinite(Number(v)); });
    keyCache[column] = {
      numeric: numeric,
      values: numeric ? values.map(function (v) { return v === "" ? null : Number(v); }) : values
    };
    return keyCache[column];
  }

  /* Missing values go last in both directions; equal keys keep their current order (stable sort). */
  function comparator(keys, sign) {
    return function (a, b) {
      var x = keys.values[a], y = keys.values[b];
      var xMissing = x === null || x === "", yMissing = y === null || y === "";
      if (xMissing || yMissing) { return xMissing === yMissing ? 0 : (xMissing ? 1 : -1); }
      var result = keys.numeric ? (x < y ? -1 : x > y ? 1 : 0) : collator.compare(x, y);
      return sign * result;
    };
  }

  function sortBy(column, direction) {
    var started = performance.now();
    order = order.slice().sort(comparator(sortKeys(column), direction === "asc" ? 1 : -1));
    var fragment = document.createDocumentFragment();
    order.forEach(function (i) { fragment.appendChild(rows[i]); });
    tbody.appendChild(fragment);
    headers.forEach(function (th, i) {
      th.setAttribute("aria-sort", i === column ? (direction === "asc" ? "ascending" : "descending") : "none");
    });
    state.column = column;
    state.direction = direction;
    void tbody.offsetHeight; /* include the layout the new order causes */
    table.setAttribute("data-sort-ms", (performance.now() - started).toFixed(3));
  }

  headers.forEach(function (th, column) {
    th.addEventListener("click", function () {
      var first = th.getAttribute("data-dir") || "asc";
      var direction = state.column === column ? (state.direction === "asc" ? "desc" : "asc") : first;
      sortBy(column, direction);
    });
  });

  var filter = document.getElementById("filter");
  var count = document.getElementById("count");
  var extraData = document.getElementById("extra-data");
  function applyFilter() {
    var terms = filter.value.toLowerCase().split(/\s+/).filter(function (t) { return t.length > 0; });
    var withExtra = !extraData || extraData.checked;
    var shown = 0;
    rows.forEach(function (row, i) {
      var match = terms.every(function (t) { return searchText[i].indexOf(t) !== -1; }) &&
        (withExtra || !row.hasAttribute("data-extra-data"));
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " models";
  }
  if (filter) { filter.addEventListener("input", applyFilter); }
  if (extraData) { extraData.addEventListener("change", applyFilter); }

  /* Robust accuracy at any eps, linear between the measured points of each curve. */
  var curvesNode = document.getElementById("curves");
  var curves = curvesNode ? JSON.parse(curvesNode.textContent) : {};
  var epsInput = document.getElementById("eps-view");
  var atEpsColumn = headers.findIndex(function (th) { return th.getAttribute("data-column") === "at_eps"; });

  /* "0.03", "8/255" or " 8 / 255 ": the eps a reader typed, or NaN */
  function parseEps(text) {
    var parts = text.split("/");
    if (parts.length > 2 || text.trim() === "") { return NaN; }
    var value = parts.length === 2 ? Number(parts[0]) / Number(parts[1]) : Number(parts[0]);
    return isFinite(value) && value >= 0 ? value : NaN;
  }

  function accuracyAt(curve, eps) {
    if (!curve || curve.length === 0 || eps < curve[0][0]) { return null; }
    for (var i = 1; i < curve.length; i += 1) {
      if (eps <= curve[i][0]) {
        var e0 = curve[i - 1][0], a0 = curve[i - 1][1], e1 = curve[i][0], a1 = curve[i][1];
        return e1 === e0 ? a1 : a0 + (a1 - a0) * (eps - e0) / (e1 - e0);
      }
    }
    var last = curve[curve.length - 1];
    return eps === last[0] || last[1] === 0 ? last[1] : null;
  }

  function updateAtEps() {
    var eps = parseEps(epsInput.value);
    var valid = !isNaN(eps);
    epsInput.setAttribute("aria-invalid", valid ? "false" : "true");
    rows.forEach(function (row) {
      var cell = row.cells[atEpsColumn];
      var acc = valid ? accuracyAt(curves[row.getAttribute("data-model")], eps) : null;
      cell.setAttribute("data-value", acc === null ? "" : String(acc));
      cell.textContent = acc === null ? "–" : (100 * acc).toFixed(2);
    });
    delete keyCache[atEpsColumn];
    refreshSearchText();
    if (filter) { applyFilter(); }
    if (state.column === atEpsColumn) { sortBy(state.column, state.direction); }
  }
  if (epsInput) {
    epsInput.addEventListener("input", updateAtEps);
    updateAtEps();
  } else {
    refreshSearchText();
  }
}());
