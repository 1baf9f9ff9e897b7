// A table sorted by its column headers: each header holds a real <button> (Tab reaches it,
// Enter or Space sorts, the same button again reverses), the sorted header says so with
// `aria-sort`, and a polite status tells screen reader users the new order. Only the body
// is redrawn, so the focused button keeps its focus.

import { h, replace } from "./dom.mjs";

const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

function compare(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return collator.compare(String(a), String(b));
}

/**
 * columns: [{key, label, numeric?, value: (row) => number|string|null (what sorts; null
 *           sorts last either way), cell: (row) => text|Node, header?: true (a row header)}]
 * Returns {element, update(rows)}.
 */
export function sortableTable({ caption, columns, sort, testid, rowTestid, rowKey }) {
  let rows = [];
  let current = { ...sort };
  const status = h("p", { class: "visually-hidden", role: "status" });
  const headers = columns.map((column) => {
    const button = h(
      "button",
      { type: "button", class: "sort", dataset: { column: column.key }, on: { click: () => sortBy(column.key) } },
      column.label,
    );
    return h("th", { scope: "col", class: column.numeric ? "num" : null, dataset: { column: column.key } }, button);
  });
  const body = h("tbody");
  const table = h(
    "table",
    { class: "table table--sortable", testid },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, headers)),
    body,
  );

  function sortBy(key) {
    current =
      current.key === key
        ? { key, direction: current.direction === "ascending" ? "descending" : "ascending" }
        : { key, direction: "ascending" };
    draw();
    const column = columns.find((item) => item.key === key);
    status.textContent = `Sorted by ${column.label}, ${current.direction}.`;
  }

  function sorted() {
    const column = columns.find((item) => item.key === current.key) ?? columns[0];
    const sign = current.direction === "descending" ? -1 : 1;
    const first = columns[0];
    return rows
      .map((row, index) => ({ row, index, value: column.value(row) }))
      .sort((a, b) => {
        const aMissing = a.value === null || a.value === undefined;
        const bMissing = b.value === null || b.value === undefined;
        if (aMissing || bMissing) return aMissing === bMissing ? a.index - b.index : aMissing ? 1 : -1;
        return (
          sign * compare(a.value, b.value) ||
          compare(first.value(a.row) ?? "", first.value(b.row) ?? "") ||
          a.index - b.index
        );
      })
      .map(({ row }) => row);
  }

  function draw() {
    headers.forEach((th, index) => {
      if (columns[index].key === current.key) th.setAttribute("aria-sort", current.direction);
      else th.removeAttribute("aria-sort");
    });
    replace(
      body,
      sorted().map((row) =>
        h(
          "tr",
          { testid: rowTestid, dataset: { key: rowKey?.(row) } },
          columns.map((column) => {
            const content = column.cell(row);
            return column.header
              ? h(
                  "th",
                  { scope: "row", class: ["break", column.numeric && "num"], dataset: { column: column.key } },
                  content,
                )
              : h("td", { class: column.numeric ? "num" : null, dataset: { column: column.key } }, content);
          }),
        ),
      ),
    );
  }

  return {
    element: h("div", { class: "sortable" }, table, status),
    update(next) {
      rows = next;
      draw();
    },
  };
}
