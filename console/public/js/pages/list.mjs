// A bot's conversations: the SPEC 4.3 filters (in the hash, so a view can be shared: ids
// and filters only, never the token), keyset paging, and live refreshes from the stream.

import { apiPath, get, serverNow, withQuery } from "../api.mjs";
import { h, replace, scroller } from "../dom.mjs";
import { dateTime, duration, localInputToRfc3339, parseTime, rfc3339ToLocalInput } from "../format.mjs";
import { coalesce, subscribe } from "../live.mjs";
import { wirePager } from "../pager.mjs";

const FILTERS = ["status", "participant", "service", "from", "to", "limit"];
const PAGE_SIZES = ["25", "50", "100", "200"];
const LIVE_REFRESH_MS = 200;

export function statusBadge(status) {
  return h("span", { class: ["badge", `badge--${status}`], testid: "status-badge" }, status);
}

export function transfersText(transfers) {
  if (!transfers) return "—";
  const parts = [];
  if (transfers.cold) parts.push(`${transfers.cold} cold`);
  if (transfers.warm) parts.push(`${transfers.warm} warm`);
  if (transfers.redial) parts.push(`${transfers.redial} redial`);
  if (transfers.escalated) parts.push(`${transfers.escalated} escalated`);
  if (transfers.failed) parts.push(`${transfers.failed} failed`);
  return parts.length ? parts.join(", ") : "none";
}

export async function listPage(context, { botId }) {
  context.setTitle(`Conversations of ${botId}`);
  const filters = Object.fromEntries(FILTERS.map((name) => [name, context.query.get(name) ?? ""]));
  const page = {
    context,
    botId,
    filters,
    view: renderFrame(context, botId, filterForm(context, botId, filters)),
    // Keyset paging: the cursors of the pages seen so far, so that "Previous" can go back.
    cursors: [null],
    pageIndex: 0,
    nextCursor: null,
    /** Each conversation's event count as last shown, to mark the rows that changed. */
    previousCounts: new Map(),
  };
  context.focusHeading();
  wirePager(page, page.view, load);

  await load(page);
  if (context.signal.aborted) return;
  followChanges(page);
}

// ---- the frame ----------------------------------------------------------------------------

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

/** The filter form, filled from the hash; applying it navigates to the filtered list. */
function filterForm(context, botId, filters) {
  const status = h(
    "select",
    { id: "filter-status" },
    [
      ["", "Any"],
      ["active", "active"],
      ["idle", "idle"],
      ["ended", "ended"],
    ].map(([value, text]) => h("option", { value, selected: filters.status === value }, text)),
  );
  const participant = h("input", {
    id: "filter-participant",
    type: "text",
    value: filters.participant,
    autocomplete: "off",
    spellcheck: "false",
  });
  const service = h("input", { id: "filter-service", type: "text", value: filters.service, autocomplete: "off" });
  const from = h("input", {
    id: "filter-from",
    type: "datetime-local",
    step: "1",
    value: rfc3339ToLocalInput(filters.from),
    "aria-describedby": "filter-window-help",
  });
  const to = h("input", {
    id: "filter-to",
    type: "datetime-local",
    step: "1",
    value: rfc3339ToLocalInput(filters.to),
    "aria-describedby": "filter-window-help",
  });
  const limit = h(
    "select",
    { id: "filter-limit" },
    PAGE_SIZES.map((size) => h("option", { value: size, selected: (filters.limit || "50") === size }, size)),
  );
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter conversations", testid: "filters" },
    field("filter-status", "Status", status),
    field("filter-participant", "Participant (identity)", participant),
    field("filter-service", "Service", service),
    field("filter-from", "From (UTC)", from),
    field("filter-to", "To (UTC)", to),
    field("filter-limit", "Per page", limit),
    h(
      "p",
      { class: "filters__note", id: "filter-window-help" },
      "From and To (UTC) keep the conversations that were alive at any time between them.",
    ),
    h(
      "div",
      { class: "filters__actions" },
      h("button", { type: "submit", class: "button" }, "Apply filters"),
      h(
        "button",
        {
          type: "button",
          class: "button button--quiet",
          on: { click: () => context.navigate(["bots", botId, "conversations"]) },
        },
        "Clear",
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    context.navigate(["bots", botId, "conversations"], {
      status: status.value,
      participant: participant.value.trim(),
      service: service.value.trim(),
      from: localInputToRfc3339(from.value),
      to: localInputToRfc3339(to.value),
      limit: limit.value === "50" ? "" : limit.value,
    });
  });
  return form;
}

/** Puts the page's sections in `main`; returns the parts that later renders fill. */
function renderFrame(context, botId, form) {
  const message = h("div", { class: "list__message", "aria-live": "polite" });
  const results = h("div", { class: "list__results" });
  const summary = h("p", { class: "list__summary", testid: "list-summary" });
  const previous = h("button", { type: "button", class: "button button--quiet", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "button button--quiet", disabled: true }, "Next page");
  const first = h("button", { type: "button", class: "button button--quiet", disabled: true }, "First page");
  const pager = h("nav", { class: "pager", "aria-label": "Pages of conversations" }, first, previous, next);

  replace(
    context.main,
    h(
      "section",
      { class: "panel" },
      h("p", { class: "eyebrow" }, `Bot ${botId}`),
      h("h1", { tabindex: "-1" }, "Conversations"),
      form,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "results-title" },
      h("h2", { id: "results-title", class: "visually-hidden" }, "Results"),
      summary,
      message,
      results,
      pager,
    ),
  );
  return { message, results, summary, first, previous, next };
}

// ---- loading ------------------------------------------------------------------------------

function pageQuery({ filters, cursors, pageIndex }) {
  return {
    status: filters.status,
    participant: filters.participant,
    service: filters.service,
    from: filters.from,
    to: filters.to,
    limit: filters.limit,
    cursor: cursors[pageIndex],
  };
}

async function load(page, { live = false } = {}) {
  const { context, botId, view } = page;
  let answer;
  try {
    answer = await get(withQuery(apiPath("bots", botId, "conversations"), pageQuery(page)), {
      signal: context.signal,
    });
  } catch (error) {
    if (error.name === "AbortError") return;
    if (live) return; // keep what is shown; the next change tries again
    showLoadError(page, error);
    return;
  }
  replace(view.message);
  page.nextCursor = answer.nextCursor ?? null;
  renderResults(page, answer.items ?? [], live);
  view.first.disabled = page.pageIndex === 0;
  view.previous.disabled = page.pageIndex === 0;
  view.next.disabled = !page.nextCursor;
}

function showLoadError({ botId, view }, error) {
  replace(
    view.message,
    h(
      "p",
      { class: "notice notice--error", role: "alert" },
      error.status === 404 ? `No bot ${botId} that this token may read.` : error.describe(),
    ),
  );
  replace(view.results);
  view.summary.textContent = "";
}

// ---- the results --------------------------------------------------------------------------

function summaryText({ filters, pageIndex }, items) {
  const active = [
    filters.status && `status ${filters.status}`,
    filters.participant && `participant ${filters.participant}`,
    filters.service && `service ${filters.service}`,
    filters.from && `from ${dateTime(filters.from)}`,
    filters.to && `to ${dateTime(filters.to)}`,
  ].filter(Boolean);
  return `Page ${pageIndex + 1}: ${items.length} conversation${items.length === 1 ? "" : "s"}, newest activity first${active.length ? ` (${active.join(", ")})` : ""}.`;
}

function renderResults(page, items, live) {
  const { results, summary } = page.view;
  summary.textContent = summaryText(page, items);
  if (!items.length) {
    replace(
      results,
      h(
        "p",
        { class: "notice", testid: "list-empty" },
        page.pageIndex === 0 ? "No conversation matches." : "No more conversations.",
      ),
    );
    return;
  }
  const focusedKey = results.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  const now = serverNow();
  const counts = new Map();
  const rows = items.map((item) => {
    counts.set(item.conversationId, item.eventCount);
    const changed = live && page.previousCounts.get(item.conversationId) !== item.eventCount;
    return conversationRow(page, item, { now, changed });
  });
  page.previousCounts = counts;
  replace(results, conversationsTable(rows));
  if (focusedKey) restoreFocus(results, focusedKey);
}

function conversationRow({ context, botId }, item, { now, changed }) {
  const link = context.href(["bots", botId, "conversations", item.conversationId]);
  const ended = parseTime(item.endedAt);
  const lifetime = ((ended ?? now) - parseTime(item.startedAt)) / 1000;
  const row = h(
    "tr",
    {
      class: ["list__row", changed && "list__row--updated"],
      testid: "conversation-row",
      dataset: { conversationId: item.conversationId, status: item.status },
    },
    h(
      "th",
      { scope: "row", "data-label": "Conversation" },
      h(
        "a",
        { href: link, class: "list__link", testid: "conversation-link", dataset: { key: item.conversationId } },
        item.conversationId,
      ),
    ),
    h("td", { "data-label": "Status" }, statusBadge(item.status)),
    h(
      "td",
      { "data-label": "Present now" },
      item.participantsPresent?.length ? item.participantsPresent.join(", ") : "—",
    ),
    h("td", { "data-label": "Started" }, h("time", { datetime: item.startedAt }, dateTime(item.startedAt))),
    h("td", { "data-label": "Last event" }, h("time", { datetime: item.lastEventAt }, dateTime(item.lastEventAt))),
    h("td", { class: "num", "data-label": "Duration" }, duration(lifetime)),
    h("td", { class: "num", "data-label": "Events" }, String(item.eventCount)),
    h("td", { class: ["num", item.anomalyCount && "warn"], "data-label": "Anomalies" }, String(item.anomalyCount)),
    h("td", { "data-label": "Transfers" }, transfersText(item.transfers)),
    h(
      "td",
      { class: "nowrap", "data-label": "Channel" },
      [item.experience, item.language].filter(Boolean).join(" · ") || "—",
    ),
  );
  // The whole row opens the conversation on a click; the link is what Tab and Enter reach.
  row.addEventListener("click", (event) => {
    if (event.target.closest("a") || window.getSelection()?.toString()) return;
    location.hash = link;
  });
  return row;
}

function conversationsTable(rows) {
  return scroller(
    "Conversations table",
    h(
      "table",
      { class: "table table--cards table--conversations", testid: "conversations-table" },
      h("caption", { class: "visually-hidden" }, "Conversations, newest activity first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          [
            "Conversation",
            "Status",
            "Present now",
            "Started (UTC)",
            "Last event (UTC)",
            "Duration",
            "Events",
            "Anomalies",
            "Transfers",
            "Channel",
          ].map((text, index) => h("th", { scope: "col", class: index >= 5 && index <= 7 ? "num" : null }, text)),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

/** After a live refresh, the link that had focus gets it back (the rows are new nodes). */
function restoreFocus(results, focusedKey) {
  [...results.querySelectorAll("a[data-key]")]
    .find((node) => node.dataset.key === focusedKey)
    ?.focus({ preventScroll: true });
}

// ---- paging and live updates --------------------------------------------------------------

/**
 * Any change of the bot refreshes the page shown (a conversation with news moves to the
 * front of the list, as the API orders it).
 */
function followChanges(page) {
  const { context, botId } = page;
  const refresh = coalesce(() => load(page, { live: true }), LIVE_REFRESH_MS);
  context.onCleanup(refresh.cancel);
  context.onCleanup(subscribe(botId, () => refresh()));
}
