// Keyset paging (SPEC 4: lists paged by an opaque cursor): the buttons of a list page.

/**
 * Wires "First" (optional), "Previous" and "Next" to `page`, which holds the cursors of the
 * pages seen so far (so that "Previous" can go back), the index of the one shown and the
 * cursor after it; `load(page)` shows `page.cursors[page.pageIndex]`.
 */
export function wirePager(page, { first, previous, next }, load) {
  first?.addEventListener("click", () => {
    page.pageIndex = 0;
    page.cursors.length = 1;
    load(page);
  });
  previous.addEventListener("click", () => {
    if (page.pageIndex > 0) page.pageIndex -= 1;
    load(page);
  });
  next.addEventListener("click", () => {
    if (!page.nextCursor) return;
    page.cursors[page.pageIndex + 1] = page.nextCursor;
    page.cursors.length = page.pageIndex + 2;
    page.pageIndex += 1;
    load(page);
  });
}
