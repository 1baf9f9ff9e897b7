// One agent (any participant identity): their stints across conversations on one time
// axis, a row per conversation, newest first, with the 4.4 time window and paging.

import { apiPath, get, serverNow, withQuery } from "../api.mjs";
import { botBreadcrumbs, h, replace, scroller } from "../dom.mjs";
import { dateTime, duration, localInputToRfc3339, parseTime, plural, rfc3339ToLocalInput } from "../format.mjs";
import { coalesce, subscribe } from "../live.mjs";
import { wirePager } from "../pager.mjs";
import { stintName, timeline } from "../timeline.mjs";

const PAGE_SIZES = ["50", "100", "200", "500"];
const LIVE_REFRESH_MS = 250;
const TICK_MS = 1000;

export async function agentPage(context, { botId, identity }) {
  context.setTitle(`${identity} — ${botId}`);
  const filters = {
    from: context.query.get("from") ?? "",
    to: context.query.get("to") ?? "",
    limit: context.query.get("limit") ?? "",
  };
  const view = renderFrame(context, botId, identity, windowForm(context, botId, identity, filters));
  context.focusHeading();

  const chart = timeline(view.chartHost, { hops: false });
  context.onCleanup(() => chart.destroy());

  const page = {
    context,
    botId,
    identity,
    filters,
    view,
    chart,
    cursors: [null],
    pageIndex: 0,
    nextCursor: null,
    stints: [],
  };
  wirePager(page, page.view, load);

  await load(page);
  if (context.signal.aborted) return;
  followChanges(page);
}

// ---- the frame ----------------------------------------------------------------------------

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

/** The time window and page size, filled from the hash; applying them navigates. */
function windowForm(context, botId, identity, filters) {
  const from = h("input", {
    id: "agent-from",
    type: "datetime-local",
    step: "1",
    value: rfc3339ToLocalInput(filters.from),
  });
  const to = h("input", { id: "agent-to", type: "datetime-local", step: "1", value: rfc3339ToLocalInput(filters.to) });
  const limit = h(
    "select",
    { id: "agent-limit" },
    PAGE_SIZES.map((size) => h("option", { value: size, selected: (filters.limit || "100") === size }, size)),
  );
  const form = h(
    "form",
    { class: "filters", "aria-label": "Time window" },
    field("agent-from", "From (UTC)", from),
    field("agent-to", "To (UTC)", to),
    field("agent-limit", "Per page", limit),
    h(
      "div",
      { class: "filters__actions" },
      h("button", { type: "submit", class: "button" }, "Apply"),
      h(
        "button",
        {
          type: "button",
          class: "button button--quiet",
          on: { click: () => context.navigate(["bots", botId, "agents", identity]) },
        },
        "Clear",
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    context.navigate(["bots", botId, "agents", identity], {
      from: localInputToRfc3339(from.value),
      to: localInputToRfc3339(to.value),
      limit: limit.value === "100" ? "" : limit.value,
    });
  });
  return form;
}

/** Puts the page's sections in `main`; returns the parts that later renders fill. */
function renderFrame(context, botId, identity, form) {
  const summary = h("p", { class: "section__summary", testid: "agent-summary" });
  const message = h("div", { "aria-live": "polite" });
  const chartHost = h("div", { testid: "agent-timeline" });
  const tableHost = h("div");
  const previous = h("button", { type: "button", class: "button button--quiet", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "button button--quiet", disabled: true }, "Next page");
  const pager = h("nav", { class: "pager", "aria-label": "Pages of stints" }, previous, next);

  replace(
    context.main,
    botBreadcrumbs(context, botId, identity),
    h(
      "section",
      { class: "panel" },
      h("p", { class: "eyebrow" }, "Participant"),
      h("h1", { tabindex: "-1", class: "break", testid: "agent-title" }, identity),
      form,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "agent-timeline-title" },
      h("h2", { id: "agent-timeline-title" }, "Stints across conversations"),
      summary,
      message,
      chartHost,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "agent-stints-title" },
      h("h2", { id: "agent-stints-title" }, "Stints"),
      tableHost,
      pager,
    ),
  );
  return { summary, message, chartHost, tableHost, previous, next };
}

// ---- loading ------------------------------------------------------------------------------

async function load(page, { live = false } = {}) {
  const { context, botId, identity, filters, view } = page;
  let answer;
  try {
    answer = await get(
      withQuery(apiPath("bots", botId, "participants", identity, "stints"), {
        from: filters.from,
        to: filters.to,
        limit: filters.limit,
        cursor: page.cursors[page.pageIndex],
      }),
      { signal: context.signal },
    );
  } catch (error) {
    if (error.name === "AbortError" || live) return;
    replace(
      view.message,
      h(
        "p",
        { class: "notice notice--error", role: "alert" },
        error.status === 404 ? `No bot ${botId} that this token may read.` : error.describe(),
      ),
    );
    return;
  }
  replace(view.message);
  page.stints = answer.items ?? [];
  page.nextCursor = answer.nextCursor ?? null;
  view.previous.disabled = page.pageIndex === 0;
  view.next.disabled = !page.nextCursor;
  render(page);
}

// ---- rendering ----------------------------------------------------------------------------

/** A stint's length so far: to when it ended, or to the service's now while it is open. */
function stintSeconds(stint, now) {
  return stint.leftAt ? stint.durationSeconds : (now - parseTime(stint.joinedAt)) / 1000;
}

function render(page) {
  const { stints, view } = page;
  const now = serverNow();
  const conversations = new Set(stints.map((stint) => stint.conversationId));
  const total = stints.reduce((sum, stint) => sum + stintSeconds(stint, now), 0);
  const open = stints.filter((stint) => stint.leftAt === null).length;
  view.summary.textContent = `Page ${page.pageIndex + 1}: ${plural(stints.length, "stint")} in ${plural(conversations.size, "conversation")}, ${duration(total)} in all${open ? `, present in ${open} now` : ""}. Activate a bar to open its conversation.`;
  page.chart.render(chartModel(page));
  if (!stints.length) {
    replace(view.tableHost, h("p", { class: "muted" }, "No stints."));
    return;
  }
  replace(view.tableHost, stintsTable(page, now));
}

/** The timeline's rows: one per conversation, in the order of their newest stint (the API's). */
function chartModel({ context, botId, identity, stints }) {
  const now = serverNow();
  const rows = new Map();
  stints.forEach((stint, index) => {
    if (!rows.has(stint.conversationId)) {
      rows.set(stint.conversationId, {
        key: stint.conversationId,
        label: stint.conversationId,
        href: context.href(["bots", botId, "conversations", stint.conversationId]),
        bars: [],
      });
    }
    rows.get(stint.conversationId).bars.push({
      key: JSON.stringify(["stint", stint.conversationId, stint.joinedAt, index]),
      start: parseTime(stint.joinedAt),
      end: stint.leftAt ? parseTime(stint.leftAt) : null,
      entryType: stint.entryType,
      exitType: stint.exitType,
      name: stintName(`${identity} in ${stint.conversationId}`, stint, now),
      data: { conversationId: stint.conversationId },
    });
  });
  for (const row of rows.values()) row.sublabel = plural(row.bars.length, "stint");
  return {
    label: `Stints of ${identity} across conversations`,
    rows: [...rows.values()],
    now,
    emptyText: "No stints in this time window.",
    onActivate: (bar) => context.navigate(["bots", botId, "conversations", bar.data.conversationId]),
  };
}

function stintsTable(page, now) {
  return scroller(
    "Stints table",
    h(
      "table",
      { class: "table table--cards", testid: "agent-stints-table" },
      h("caption", { class: "visually-hidden" }, `Stints of ${page.identity}, newest first`),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Conversation", "Entered (UTC)", "Left (UTC)", "Duration", "Entry", "Exit"].map((text) =>
            h("th", { scope: "col" }, text),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        page.stints.map((stint) => stintRow(page, stint, now)),
      ),
    ),
  );
}

function stintRow({ context, botId }, stint, now) {
  return h(
    "tr",
    { testid: "agent-stint-row" },
    h(
      "th",
      { scope: "row", "data-label": "Conversation", class: "break" },
      h("a", { href: context.href(["bots", botId, "conversations", stint.conversationId]) }, stint.conversationId),
    ),
    h("td", { "data-label": "Entered" }, h("time", { datetime: stint.joinedAt }, dateTime(stint.joinedAt))),
    h(
      "td",
      { "data-label": "Left" },
      stint.leftAt ? h("time", { datetime: stint.leftAt }, dateTime(stint.leftAt)) : "still present",
    ),
    h("td", { class: "num", "data-label": "Duration" }, duration(stintSeconds(stint, now))),
    h("td", { "data-label": "Entry" }, stint.entryType),
    h("td", { "data-label": "Exit" }, stint.exitType ?? "—"),
  );
}

// ---- paging and live updates --------------------------------------------------------------

/**
 * A change to this participant, or to a conversation shown, reloads the page shown; while
 * a stint is open, its bar grows every second.
 */
function followChanges(page) {
  const { context, botId, identity, chart } = page;
  const refresh = coalesce(() => load(page, { live: true }), LIVE_REFRESH_MS);
  context.onCleanup(refresh.cancel);
  context.onCleanup(
    subscribe(botId, (item) => {
      const shown = page.stints.some((stint) => stint.conversationId === item.conversationId);
      if (item.participant?.identity === identity || shown) refresh();
    }),
  );
  const timer = setInterval(() => {
    if (!document.hidden && page.stints.some((stint) => stint.leftAt === null)) chart.render(chartModel(page));
  }, TICK_MS);
  context.onCleanup(() => clearInterval(timer));
}
