// The audit log (SPEC 13): who read which conversation, newest first, for people with the
// `audit` permission. Filters in the hash (ids only), keyset paging.

import { get, withQuery } from "../api.mjs";
import { h, replace, scroller } from "../dom.mjs";
import { dateTime } from "../format.mjs";
import { wirePager } from "../pager.mjs";

const FILTERS = ["conversationId", "actor", "botId"];
/** What each audited route reads, by its template's last segment. */
const READS = {
  events: "events",
  "transfer-data": "transfer data",
  stints: "an agent's stints",
  changes: "change feed",
  stream: "live stream",
  stats: "stats",
  now: "stats now",
};

function readName(route) {
  const last = route.split("/").pop();
  return READS[last] ?? "conversation";
}

export async function auditPage(context) {
  context.setTitle("Audit log");
  const filters = Object.fromEntries(FILTERS.map((name) => [name, context.query.get(name) ?? ""]));
  const page = {
    context,
    filters,
    view: renderFrame(context, filterForm(context, filters)),
    cursors: [null],
    pageIndex: 0,
    nextCursor: null,
  };
  context.focusHeading();
  wirePager(page, page.view, load);
  await load(page);
}

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

function filterForm(context, filters) {
  const inputs = {
    conversationId: h("input", { id: "audit-conversation", type: "text", value: filters.conversationId }),
    actor: h("input", {
      id: "audit-actor",
      type: "text",
      value: filters.actor,
      placeholder: "user:… or app:…",
      spellcheck: "false",
    }),
    botId: h("input", { id: "audit-bot", type: "text", value: filters.botId, spellcheck: "false" }),
  };
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter the audit log", testid: "audit-filters" },
    field("audit-conversation", "Conversation", inputs.conversationId),
    field("audit-actor", "Who (exactly)", inputs.actor),
    field("audit-bot", "Bot", inputs.botId),
    h(
      "div",
      { class: "filters__actions" },
      h("button", { type: "submit", class: "button" }, "Apply filters"),
      h(
        "button",
        { type: "button", class: "button button--quiet", on: { click: () => context.navigate(["audit"]) } },
        "Clear",
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    context.navigate(["audit"], Object.fromEntries(FILTERS.map((name) => [name, inputs[name].value.trim()])));
  });
  return form;
}

function renderFrame(context, form) {
  const message = h("div", { "aria-live": "polite" });
  const results = h("div");
  const first = h("button", { type: "button", class: "button button--quiet", disabled: true }, "Newest");
  const previous = h("button", { type: "button", class: "button button--quiet", disabled: true }, "Newer");
  const next = h("button", { type: "button", class: "button button--quiet", disabled: true }, "Older");
  replace(
    context.main,
    h("section", { class: "panel" }, h("h1", { tabindex: "-1" }, "Audit log"), form),
    h(
      "section",
      { class: "panel", "aria-label": "Reads" },
      message,
      results,
      h("nav", { class: "pager", "aria-label": "Pages of the audit log" }, first, previous, next),
    ),
  );
  return { message, results, first, previous, next };
}

async function load(page) {
  const { context, filters, view } = page;
  let answer;
  try {
    answer = await get(withQuery("/api/v1/audit", { ...filters, cursor: page.cursors[page.pageIndex] }), {
      signal: context.signal,
    });
  } catch (error) {
    if (error.name === "AbortError") return;
    const text =
      error.status === 403
        ? "Reading the audit log needs the audit permission, which you do not have."
        : error.describe();
    replace(view.message, h("p", { class: "notice notice--error", role: "alert" }, text));
    replace(view.results);
    return;
  }
  replace(view.message);
  page.nextCursor = answer.nextCursor ?? null;
  const items = answer.items ?? [];
  replace(
    view.results,
    items.length ? auditTable(context, items) : h("p", { class: "notice" }, "No reads match these filters."),
  );
  view.first.disabled = page.pageIndex === 0;
  view.previous.disabled = page.pageIndex === 0;
  view.next.disabled = !page.nextCursor;
}

function auditTable(context, items) {
  const conversation = (item) =>
    item.conversationId && item.botId
      ? h("a", { href: context.href(["bots", item.botId, "conversations", item.conversationId]) }, item.conversationId)
      : (item.conversationId ?? "—");
  const rows = items.map((item) =>
    h(
      "tr",
      { testid: "audit-row" },
      h("td", { "data-label": "When" }, h("time", { datetime: item.at }, dateTime(item.at))),
      h(
        "td",
        { "data-label": "Who" },
        item.actorName ? `${item.actorName} (${item.actor})` : item.actor,
        item.actorEmail ? h("div", { class: "muted" }, item.actorEmail) : null,
      ),
      h("td", { "data-label": "Read", title: `${item.method} ${item.route}` }, readName(item.route)),
      h("td", { "data-label": "Bot" }, item.botId ?? "—"),
      h("td", { "data-label": "Conversation" }, conversation(item)),
      h("td", { "data-label": "Agent" }, item.participant ?? "—"),
      h("td", { class: "num", "data-label": "Status" }, String(item.status)),
      h("td", { "data-label": "From" }, item.clientAddress ?? "—"),
    ),
  );
  return scroller(
    "Audit log table",
    h(
      "table",
      { class: "table table--cards", testid: "audit-table" },
      h("caption", { class: "visually-hidden" }, "Reads of conversation data, newest first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["When (UTC)", "Who", "Read", "Bot", "Conversation", "Agent", "Status", "From"].map((text) =>
            h("th", { scope: "col", class: text === "Status" ? "num" : null }, text),
          ),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}
