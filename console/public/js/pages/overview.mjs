// A bot's overview (SPEC 11.3): what is happening now (SPEC 11.2, kept live by the change
// stream and a slow poll), and for a chosen range and time zone (SPEC 11.1): conversations
// started and transfers by kind per hour (or day), stint durations per participant and
// per queue (sortable), escalation outcomes and anomalies by code.
//
// The range and the zone are in the hash query (`?range=24h&tz=Asia/Kathmandu`, dates for
// `range=custom`), so a view can be shared; the zone defaults to the browser's.

import { apiPath, get, serverNow, withQuery } from "../api.mjs";
import { barChart } from "../bars.mjs";
import { botBreadcrumbs, h, replace, scroller } from "../dom.mjs";
import { ANOMALY_TEXT, count, dateTime, parseTime, percent, plural, shortDuration } from "../format.mjs";
import { coalesce, subscribe } from "../live.mjs";
import { sortableTable } from "../sortable.mjs";
import {
  addDays,
  browserZone,
  DAY_MS,
  dateStart,
  HOUR_MS,
  isZone,
  knownZones,
  localDate,
  localRfc3339,
  offsetMs,
  offsetText,
  readLocal,
  startOfDay,
  startOfHour,
  startOfWeek,
} from "../zones.mjs";

/** A change on the stream refreshes the "now" figures this long after it (bursts coalesce). */
const NOW_REFRESH_MS = 400;
/** Without the stream (or with nothing happening), the "now" figures are fetched this often. */
const NOW_POLL_MS = 10000;
/** Changes refresh the range's figures at most this often (four queries each time). */
const RANGE_REFRESH_MS = 5000;
const TICK_MS = 1000;
/** The service's limit on a range (SPEC 11.1). */
const MAX_RANGE_DAYS = 400;
/** Hourly bars up to this many days, daily bars up to MAX_DAILY_DAYS, weekly bars beyond. */
const MAX_HOURLY_DAYS = 3;
const MAX_DAILY_DAYS = 120;

const RANGES = [
  ["24h", "Last 24 hours"],
  ["today", "Today"],
  ["yesterday", "Yesterday"],
  ["7d", "Last 7 days"],
  ["30d", "Last 30 days"],
  ["custom", "Between dates"],
];

const COMMON_ZONES = [
  "UTC",
  "Europe/London",
  "Europe/Berlin",
  "America/New_York",
  "America/Chicago",
  "America/Los_Angeles",
  "America/Sao_Paulo",
  "Africa/Johannesburg",
  "Asia/Dubai",
  "Asia/Kolkata",
  "Asia/Kathmandu",
  "Asia/Singapore",
  "Asia/Tokyo",
  "Australia/Sydney",
  "Pacific/Auckland",
];

const SERIES = [
  { key: "started", label: "Conversations started", className: "series--started" },
  { key: "cold", label: "Cold transfers", className: "series--cold" },
  { key: "warm", label: "Warm transfers", className: "series--warm" },
  { key: "redial", label: "Redials", className: "series--redial" },
  { key: "escalated", label: "Escalations", className: "series--escalated" },
];

const BUCKET = {
  PT1H: { one: "hour", every: "per hour" },
  P1D: { one: "day", every: "per day" },
  P7D: { one: "week", every: "per week (weeks start on Monday)" },
};

const iso = (ms) => new Date(ms).toISOString();

/** The instants `[from, to)` of a range in a zone, and the bucket size its chart uses. */
function rangeOf({ range, from, to }, zone, now) {
  const hourly = (start, end) => ({ from: start, to: end, granularity: "PT1H" });
  const daily = (start, end) => ({ from: start, to: end, granularity: "P1D" });
  switch (range) {
    case "today":
      return hourly(startOfDay(now, zone), addDays(now, 1, zone));
    case "yesterday":
      return hourly(addDays(now, -1, zone), startOfDay(now, zone));
    case "7d":
      return daily(addDays(now, -6, zone), addDays(now, 1, zone));
    case "30d":
      return daily(addDays(now, -29, zone), addDays(now, 1, zone));
    case "custom": {
      const start = dateStart(from, zone);
      const lastDay = dateStart(to, zone);
      if (start === null || lastDay === null) return { error: "Choose a first and a last day." };
      const end = addDays(lastDay, 1, zone);
      if (end <= start) return { error: "The last day is before the first." };
      const days = (end - start) / DAY_MS;
      if (days > MAX_RANGE_DAYS + 1)
        return {
          error: `The range is ${Math.round(days)} days long; the service counts at most ${MAX_RANGE_DAYS} days at once.`,
        };
      const granularity = days <= MAX_HOURLY_DAYS + 0.1 ? "PT1H" : days <= MAX_DAILY_DAYS ? "P1D" : "P7D";
      return { from: start, to: end, granularity };
    }
    default: {
      // The last 24 hours: the current hour (so far) and the 23 before it.
      const end = startOfHour(now, zone) + HOUR_MS;
      return hourly(end - 24 * HOUR_MS, end);
    }
  }
}

/** The starts of the buckets the service makes for `[from, to)` (to show empty ones too). */
function bucketStarts({ from, to, granularity }, zone) {
  let start =
    granularity === "PT1H"
      ? startOfHour(from, zone)
      : granularity === "P1D"
        ? startOfDay(from, zone)
        : startOfWeek(from, zone);
  const next = (ms) => (granularity === "PT1H" ? ms + HOUR_MS : addDays(ms, granularity === "P1D" ? 1 : 7, zone));
  const starts = [];
  while (start < to && starts.length < 2000) {
    starts.push(Math.max(start, from));
    start = next(start);
  }
  return starts;
}

/** `Mon 7 Dec 09:00` in the zone of the RFC 3339 string. */
function localText(text) {
  const local = readLocal(text);
  return local ? `${local.dayLabel} ${local.time}` : text;
}

function bucketLabel(text, granularity) {
  const local = readLocal(text);
  if (!local) return text;
  if (granularity === "PT1H") return `${local.dayLabel} ${local.time}`;
  if (granularity === "P1D") return local.dayLabel;
  return `week of ${local.dayLabel}`;
}

const transfersOf = (bucket) => bucket?.transfers ?? {};
/** A series' count in a bucket (none: 0). */
const seriesValue = (bucket, key) =>
  key === "started" ? (bucket?.conversations?.started ?? 0) : (transfersOf(bucket)[key] ?? 0);

/** `Hour` from `hour`. */
const capitalized = (text) => `${text[0].toUpperCase()}${text.slice(1)}`;

/** What a failed stats request says to the user. */
function failureText(botId, error) {
  if (error.status === 404) return `No bot ${botId} that this token may read.`;
  return error.describe ? error.describe() : String(error);
}

function field(id, label, control, help) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    help ? h("p", { class: "field__help", id: `${id}-help` }, help) : null,
  );
}

function tile(label, value, { wide = false, testid } = {}) {
  return h(
    "div",
    { class: ["tile", wide && "tile--wide"] },
    h("dt", { class: "tile__label" }, label),
    h("dd", { class: "tile__value", testid }, value),
  );
}

function facts(items) {
  return h(
    "dl",
    { class: "facts facts--compact" },
    items.map(([label, value, testid]) => [h("dt", {}, label), h("dd", { testid }, value)]),
  );
}

export async function overviewPage(context, { botId }) {
  context.setTitle(`Overview of ${botId}`);
  const { ownZone, state, zoneNotice } = stateFromQuery(context.query);

  const now = nowSection();
  const controls = controlsForm(ownZone, state);
  const range = rangeSection(context, botId);
  renderFrame(context, botId, zoneNotice, controls.form, now.section, range.root);
  context.focusHeading();

  const chart = barChart(range.chartHost, { series: SERIES, testid: "overview-chart" });
  context.onCleanup(() => chart.destroy());

  const page = {
    context,
    botId,
    ownZone,
    state,
    controls,
    now,
    range,
    chart,
    /** Updates of the "for 3 min" texts in the tiles, run every second. */
    tickers: [],
    nowShown: false,
    /** The latest range request: an older one's answer is dropped. */
    rangeSeq: 0,
    rangeController: null,
    rangeShown: false,
    shownRange: null,
  };
  wireControls(page);

  await Promise.all([loadNow(page), loadRange(page)]);
  if (context.signal.aborted) return;
  followChanges(page);
}

// ---- state: the range and the zone, from the hash ------------------------------------------

function stateFromQuery(query) {
  const ownZone = browserZone();
  const askedZone = query.get("tz");
  const askedRange = query.get("range");
  const state = {
    range: RANGES.some(([value]) => value === askedRange) ? askedRange : "24h",
    zone: askedZone && isZone(askedZone) ? askedZone : ownZone,
    from: query.get("from") ?? "",
    to: query.get("to") ?? "",
  };
  const zoneNotice =
    askedZone && !isZone(askedZone)
      ? `This browser does not know the time zone ${askedZone}; showing ${ownZone}.`
      : null;
  return { ownZone, state, zoneNotice };
}

/** The hash query of a state: defaults left out. */
function queryOfState(state, ownZone) {
  return {
    range: state.range === "24h" ? "" : state.range,
    tz: state.zone === ownZone ? "" : state.zone,
    from: state.range === "custom" ? state.from : "",
    to: state.range === "custom" ? state.to : "",
  };
}

// ---- the page's frame ----------------------------------------------------------------------

function renderFrame(context, botId, zoneNotice, form, nowSectionElement, rangeRoot) {
  replace(
    context.main,
    botBreadcrumbs(context, botId, "Overview"),
    h(
      "section",
      { class: "panel" },
      h("p", { class: "eyebrow" }, `Bot ${botId}`),
      h("h1", { tabindex: "-1", class: "break", testid: "overview-title" }, "Overview"),
      zoneNotice ? h("p", { class: "notice", role: "status" }, zoneNotice) : null,
      form,
    ),
    nowSectionElement,
    rangeRoot,
  );
}

/** The "Now" section, empty until the figures come. */
function nowSection() {
  const message = h("div", { "aria-live": "polite" });
  const asOf = h("p", { class: "section__summary", testid: "now-as-of" });
  const tiles = h("dl", { class: "tiles", testid: "now-tiles" });
  const queues = h("div", { class: "overview__queues" });
  const section = h(
    "section",
    { class: "panel", "aria-labelledby": "now-title", testid: "overview-now" },
    h("h2", { id: "now-title" }, "Now"),
    asOf,
    message,
    tiles,
    queues,
  );
  return { section, message, asOf, tiles, queues };
}

/** The range and time zone controls, set from the state. */
function controlsForm(ownZone, state) {
  const rangeSelect = h(
    "select",
    { id: "overview-range" },
    RANGES.map(([value, text]) => h("option", { value, selected: state.range === value }, text)),
  );
  const zoneSelect = h(
    "select",
    { id: "overview-zone", "aria-describedby": "overview-zone-help" },
    zoneOptions(ownZone, state.zone),
  );
  const fromDate = h("input", { id: "overview-from", type: "date", value: state.from });
  const toDate = h("input", { id: "overview-to", type: "date", value: state.to });
  const dates = h(
    "div",
    { class: "overview__dates", hidden: state.range !== "custom" },
    field("overview-from", "First day", fromDate),
    field("overview-to", "Last day", toDate),
    h("div", { class: "filters__actions" }, h("button", { type: "submit", class: "button" }, "Show")),
  );
  const form = h(
    "form",
    { class: "filters overview__controls", "aria-label": "Range and time zone", testid: "overview-controls" },
    field("overview-range", "Range", rangeSelect),
    h("div", { class: "field field--zone" }, h("label", { for: "overview-zone" }, "Time zone"), zoneSelect),
    dates,
    h(
      "p",
      { class: "filters__note", id: "overview-zone-help" },
      `Hours and days start in the chosen time zone (this browser's is ${ownZone}). The figures below count what happened in the range; “Now” does not depend on it.`,
    ),
  );
  return { form, rangeSelect, zoneSelect, fromDate, toDate, dates };
}

/** The time zone list: the browser's, the chosen one and common ones first, then all. */
function zoneOptions(ownZone, chosenZone) {
  const now = serverNow();
  const withOffset = (zone) => {
    try {
      const offset = offsetMs(now, zone);
      return zone === "UTC" ? zone : `${zone} (UTC${offset ? offsetText(offset) : ""})`;
    } catch {
      return zone;
    }
  };
  const common = [...new Set([ownZone, chosenZone, ...COMMON_ZONES])].filter(isZone);
  const option = (zone, text = withOffset(zone)) => h("option", { value: zone, selected: zone === chosenZone }, text);
  const all = knownZones().filter((zone) => !common.includes(zone));
  return [
    h(
      "optgroup",
      { label: "Common" },
      common.map((zone) => option(zone, zone === ownZone ? `${withOffset(zone)} · this browser` : withOffset(zone))),
    ),
    all.length
      ? h(
          "optgroup",
          { label: "All time zones" },
          all.map((zone) => option(zone, zone)),
        )
      : null,
  ];
}

/** The range's sections: the chart, the stints by participant and by queue, the totals. */
function rangeSection(context, botId) {
  const message = h("div", { "aria-live": "polite" });
  const chartSummary = h("p", { class: "section__summary", testid: "chart-summary" });
  const chartHost = h("div", { class: "bars" });
  const chartTableHost = h("div");
  const chartDetails = h(
    "details",
    { class: "overview__data", testid: "chart-data" },
    h("summary", {}, "The chart's numbers as a table"),
    chartTableHost,
  );
  const chartTitle = h("h2", { id: "chart-title" }, "Conversations and transfers");

  const { participantTable, queueTable } = groupTables(context, botId);
  const participantsHost = h("div", {}, scroller("Stints by participant", participantTable.element));
  const queuesHost = h("div", {}, scroller("Stints by queue", queueTable.element));

  const totalsHost = h("div", { testid: "range-totals" });
  const escalationsHost = h("div", { testid: "escalations" });
  const anomaliesHost = h("div", { testid: "anomalies" });
  const asOf = h("p", { class: "section__summary", testid: "range-as-of" });

  const root = h(
    "div",
    { class: "overview__range", testid: "overview-range", dataset: { state: "loading" } },
    h(
      "section",
      { class: "panel", "aria-labelledby": "chart-title" },
      chartTitle,
      chartSummary,
      message,
      chartHost,
      chartDetails,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "participants-title" },
      h("h2", { id: "participants-title" }, "Stint durations by participant"),
      h(
        "p",
        { class: "section__summary" },
        "Stints counted in the range (a stint counts when it ends), with the quantiles of their durations, and the transfers each participant gave (out) and took (in). Sort by any column with its header button.",
      ),
      participantsHost,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "queues-title" },
      h("h2", { id: "queues-title" }, "Stint durations by queue"),
      h(
        "p",
        { class: "section__summary" },
        "The same, by the queue the participant came from (their entry's customFields.queueName, else queueId).",
      ),
      queuesHost,
    ),
    h(
      "div",
      { class: "columns overview__columns" },
      h(
        "section",
        { class: "panel", "aria-labelledby": "escalations-title" },
        h("h2", { id: "escalations-title" }, "Escalations"),
        escalationsHost,
        h("h3", {}, "In all"),
        totalsHost,
      ),
      h(
        "section",
        { class: "panel", "aria-labelledby": "anomalies-title" },
        h("h2", { id: "anomalies-title" }, "Anomalies by code"),
        anomaliesHost,
      ),
    ),
    asOf,
  );
  return {
    root,
    message,
    chartTitle,
    chartSummary,
    chartHost,
    chartTableHost,
    participantTable,
    queueTable,
    participantsHost,
    queuesHost,
    totalsHost,
    escalationsHost,
    anomaliesHost,
    asOf,
  };
}

function groupTables(context, botId) {
  const participantTable = sortableTable({
    caption: "Stints counted in the range (at their end), by participant; transfers they gave (out) and took (in)",
    testid: "participant-table",
    rowTestid: "participant-row",
    rowKey: (row) => row.group ?? "",
    sort: { key: "group", direction: "ascending" },
    columns: groupColumns("Participant", (row) =>
      row.group === null
        ? h("span", { class: "muted" }, "(unknown)")
        : h("a", { href: context.href(["bots", botId, "agents", row.group]), testid: "participant-link" }, row.group),
    ),
  });
  const queueTable = sortableTable({
    caption: "Stints counted in the range (at their end), by the queue the participant came from",
    testid: "queue-table",
    rowTestid: "queue-row",
    rowKey: (row) => row.group ?? "",
    sort: { key: "group", direction: "ascending" },
    columns: groupColumns("Queue", (row) =>
      row.group === null ? h("span", { class: "muted" }, "(no queue)") : row.group,
    ),
  });
  return { participantTable, queueTable };
}

function groupColumns(label, groupCell) {
  const stint = (row, key) => row.bucket?.stints?.[key] ?? null;
  const transfer = (row, key) => row.bucket?.transfers?.[key] ?? null;
  const quantile = (key, name) => ({
    key,
    label: key,
    numeric: true,
    value: (row) => stint(row, name),
    cell: (row) => shortDuration(stint(row, name)),
  });
  const transfers = (key, columnLabel) => ({
    key,
    label: columnLabel,
    numeric: true,
    value: (row) => transfer(row, key),
    cell: (row) => count(transfer(row, key)),
  });
  return [
    { key: "group", label, header: true, value: (row) => row.group, cell: groupCell },
    {
      key: "stints",
      label: "Stints",
      numeric: true,
      value: (row) => stint(row, "count") ?? 0,
      cell: (row) => String(stint(row, "count") ?? 0),
    },
    quantile("p50", "p50Seconds"),
    quantile("p90", "p90Seconds"),
    quantile("p99", "p99Seconds"),
    transfers("cold", "Cold"),
    transfers("warm", "Warm"),
    transfers("in", "In"),
    transfers("out", "Out"),
  ];
}

// ---- the controls --------------------------------------------------------------------------

function wireControls(page) {
  const { rangeSelect, zoneSelect, fromDate, toDate, form } = page.controls;
  rangeSelect.addEventListener("change", () => {
    if (rangeSelect.value === "custom" && (!fromDate.value || !toDate.value)) {
      // Start from the range shown: its first and last day.
      const zone = page.state.zone;
      const shown = page.shownRange ?? rangeOf({ range: "7d" }, zone, serverNow());
      fromDate.value = localDate(shown.from, zone);
      toDate.value = localDate(shown.to - 1, zone);
    }
    applyControls(page);
  });
  zoneSelect.addEventListener("change", () => applyControls(page));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    applyControls(page);
  });
}

/** The controls' values become the state, the hash query and the range shown. */
function applyControls(page) {
  const { state, ownZone, controls } = page;
  state.range = controls.rangeSelect.value;
  state.zone = controls.zoneSelect.value || ownZone;
  state.from = controls.fromDate.value;
  state.to = controls.toDate.value;
  controls.dates.hidden = state.range !== "custom";
  page.context.replaceQuery(queryOfState(state, ownZone));
  loadRange(page);
}

// ---- now -----------------------------------------------------------------------------------

async function loadNow(page) {
  const { context, botId, now: view } = page;
  let now;
  try {
    now = await get(apiPath("bots", botId, "stats", "now"), { signal: context.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    const text = failureText(botId, error);
    // Keep figures already shown; say they may be stale.
    replace(
      view.message,
      h(
        "p",
        { class: ["notice", !page.nowShown && "notice--error"], role: page.nowShown ? null : "alert" },
        page.nowShown ? `Could not refresh: ${text}` : text,
      ),
    );
    return;
  }
  replace(view.message);
  page.nowShown = true;
  renderNow(page, now);
}

function renderNow(page, now) {
  const view = page.now;
  page.tickers = [];
  view.asOf.textContent = now.asOf
    ? `Counted up to ${dateTime(now.asOf)} UTC; kept up to date while this page is open.`
    : "Nothing counted yet.";
  const focused = view.tiles.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  replace(
    view.tiles,
    tile("Active conversations", String(now.conversations?.active ?? 0), { testid: "now-active" }),
    tile("Idle conversations", String(now.conversations?.idle ?? 0), { testid: "now-idle" }),
    tile("Participants present", String(now.participantsPresent ?? 0), { testid: "now-present" }),
    longestStintTile(page, now.longestOpenStint),
    oldestIdleTile(page, now.oldestIdleConversation),
  );
  if (focused) view.tiles.querySelector(`[data-key="${focused}"]`)?.focus({ preventScroll: true });
  const byQueue = now.byQueue ?? [];
  replace(
    view.queues,
    byQueue.length ? presentByQueueTable(byQueue) : h("p", { class: "muted" }, "Nobody is present in any queue."),
  );
  view.section.dataset.asOf = now.asOf ?? "";
}

/** "present for 3 min": a text that the page's ticker keeps up to date. */
function since(page, at, prefix) {
  const node = h("span", { class: "tile__since" });
  const update = () => {
    const ms = parseTime(at);
    node.textContent = ms === null ? "" : `${prefix} ${shortDuration(Math.max(0, serverNow() - ms) / 1000)}`;
  };
  update();
  page.tickers.push(update);
  return node;
}

function longestStintTile(page, longest) {
  const { context, botId } = page;
  return tile(
    "Longest open stint",
    longest
      ? [
          h(
            "a",
            {
              href: context.href(["bots", botId, "agents", longest.identity]),
              class: "tile__link break",
              testid: "now-longest-agent",
              dataset: { key: "longest-agent" },
            },
            longest.identity,
          ),
          h(
            "span",
            { class: "tile__detail" },
            "in ",
            h(
              "a",
              {
                href: context.href(["bots", botId, "conversations", longest.conversationId]),
                class: "break",
                testid: "now-longest-conversation",
                dataset: { key: "longest-conversation" },
              },
              longest.conversationId,
            ),
          ),
          h(
            "span",
            { class: "tile__detail" },
            since(page, longest.joinedAt, "present for"),
            `, since ${dateTime(longest.joinedAt)} UTC`,
          ),
        ]
      : h("span", { class: "muted tile__none" }, "Nobody is present."),
    { wide: true, testid: "now-longest" },
  );
}

function oldestIdleTile(page, idle) {
  const { context, botId } = page;
  return tile(
    "Oldest idle conversation",
    idle
      ? [
          h(
            "a",
            {
              href: context.href(["bots", botId, "conversations", idle.conversationId]),
              class: "tile__link break",
              testid: "now-oldest-idle-conversation",
              dataset: { key: "oldest-idle" },
            },
            idle.conversationId,
          ),
          h(
            "span",
            { class: "tile__detail" },
            since(page, idle.since, "idle for"),
            `, last event ${dateTime(idle.since)} UTC`,
          ),
        ]
      : h("span", { class: "muted tile__none" }, "No idle conversation."),
    { wide: true, testid: "now-oldest-idle" },
  );
}

function presentByQueueTable(byQueue) {
  return scroller(
    "Present now by queue",
    h(
      "table",
      { class: "table table--compact", testid: "now-queues" },
      h("caption", {}, "Present now, by the queue they came from"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Queue"),
          h("th", { scope: "col", class: "num" }, "Present"),
          h("th", { scope: "col", class: "num" }, "Active conversations"),
        ),
      ),
      h(
        "tbody",
        {},
        byQueue.map((row) =>
          h(
            "tr",
            { testid: "now-queue-row", dataset: { queue: row.queue ?? "" } },
            h(
              "th",
              { scope: "row", class: "break" },
              row.queue === null ? h("span", { class: "muted" }, "(no queue)") : row.queue,
            ),
            h("td", { class: "num", dataset: { column: "present" } }, count(row.present)),
            h("td", { class: "num", dataset: { column: "activeConversations" } }, count(row.activeConversations)),
          ),
        ),
      ),
    ),
  );
}

// ---- the range -----------------------------------------------------------------------------

async function loadRange(page, { live = false } = {}) {
  const { context, botId, state, range: view } = page;
  const { signal } = context;
  const range = rangeOf(state, state.zone, serverNow());
  page.rangeSeq += 1;
  const seq = page.rangeSeq;
  page.rangeController?.abort();
  const controller = new AbortController();
  page.rangeController = controller;
  if (range.error) {
    showRangeError(view, range.error);
    return;
  }
  const onAbort = () => controller.abort();
  signal.addEventListener("abort", onAbort, { once: true });
  if (!live) view.root.dataset.state = "loading";
  const base = { from: iso(range.from), to: iso(range.to), timeZone: state.zone };
  let answers;
  try {
    answers = await fetchRangeStats(botId, base, range.granularity, controller.signal);
  } catch (error) {
    if (error.name === "AbortError" || seq !== page.rangeSeq) return;
    if (live && page.rangeShown) return; // keep what is shown; the next change tries again
    showRangeError(view, failureText(botId, error));
    return;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (seq !== page.rangeSeq || signal.aborted) return;
  renderRange(page, range, base, answers);
}

/** The four queries of a range: its series, its totals, and the totals by participant and by queue. */
function fetchRangeStats(botId, base, granularity, signal) {
  const path = apiPath("bots", botId, "stats");
  const ask = (params) => get(withQuery(path, { ...base, ...params }), { signal });
  return Promise.all([
    ask({ granularity }),
    ask({ granularity: "all" }),
    ask({ granularity: "all", groupBy: "participant" }),
    ask({ granularity: "all", groupBy: "queue" }),
  ]);
}

function showRangeError(view, text) {
  replace(view.message, h("p", { class: "notice notice--error", role: "alert" }, text));
  view.root.dataset.state = "error";
}

function renderRange(page, range, base, [series, totals, byParticipant, byQueue]) {
  const view = page.range;
  replace(view.message);
  renderChart(page, range, series);
  renderGroups(byParticipant, "participant", view.participantTable, view.participantsHost);
  renderGroups(byQueue, "queue", view.queueTable, view.queuesHost);
  renderTotals(view, totals.results?.[0]?.buckets?.[0] ?? null);
  view.asOf.textContent = series.asOf ? `Counted up to ${dateTime(series.asOf)} UTC.` : "Nothing counted yet.";
  page.rangeShown = true;
  page.shownRange = range;
  Object.assign(view.root.dataset, {
    state: "ready",
    from: base.from,
    to: base.to,
    granularity: range.granularity,
    timeZone: page.state.zone,
  });
}

// ---- the chart -----------------------------------------------------------------------------

function renderChart(page, range, answer) {
  const view = page.range;
  const { granularity } = range;
  const zone = page.state.zone;
  const buckets = answer.results?.[0]?.buckets ?? [];
  const byInstant = new Map(buckets.map((bucket) => [parseTime(bucket.start), bucket]));
  const instants = [...new Set([...bucketStarts(range, zone), ...byInstant.keys()])]
    .filter((ms) => ms !== null)
    .sort((a, b) => a - b);
  const bucketText = BUCKET[granularity] ?? { one: granularity, every: `per ${granularity}` };
  const first = localRfc3339(range.from, zone);
  const last = localRfc3339(range.to, zone);
  view.chartTitle.textContent = `Conversations and transfers ${bucketText.every}`;
  view.chartSummary.textContent = `${localText(first)} to ${localText(last)} (${zone === "UTC" ? zone : `${zone}, UTC${readLocal(first)?.offset ?? ""}`}): one group of bars ${bucketText.every}, ${plural(instants.length, bucketText.one)}.`;
  page.chart.render({
    label: chartLabel(buckets, { granularity, zone, bucketText, first, last }),
    groups: chartGroups(instants, byInstant, granularity, zone),
    emptyText: "Nothing to show in this range.",
  });

  // The same numbers as a table, for screen readers and for reading exact values.
  replace(
    view.chartTableHost,
    buckets.length
      ? chartTable(buckets, { granularity, zone, bucketText })
      : h("p", { class: "muted" }, "Nothing happened in this range."),
  );
}

/** A group of bars per bucket, empty ones too, labelled with the bucket's local start. */
function chartGroups(instants, byInstant, granularity, zone) {
  let previousDate = null;
  let previousYear = null;
  return instants.map((ms) => {
    const bucket = byInstant.get(ms) ?? null;
    // The label is what the service wrote (its start in the zone's offset); an empty
    // bucket, which the service leaves out, gets the same text made here.
    const start = bucket?.start ?? localRfc3339(ms, zone);
    const local = readLocal(start);
    let main;
    let sub = null;
    if (!local) main = start;
    else if (granularity === "PT1H") {
      main = local.time;
      if (local.date !== previousDate) sub = local.dayLabel;
    } else {
      main = local.shortDay;
      if (granularity === "P1D") sub = local.dayLabel.slice(0, 3);
      else if (local.year !== previousYear) sub = String(local.year);
    }
    if (local) {
      previousDate = local.date;
      previousYear = local.year;
    }
    const values = Object.fromEntries(SERIES.map((item) => [item.key, seriesValue(bucket, item.key)]));
    const title = `${bucketLabel(start, granularity)}: ${SERIES.map((item) => `${values[item.key]} ${item.label.toLowerCase()}`).join(", ")}`;
    return { key: start, main, sub, title, values, data: { start, ...values } };
  });
}

/** The chart's name: what it shows, the totals and the busiest bucket. */
function chartLabel(buckets, { granularity, zone, bucketText, first, last }) {
  const sum = (key) => buckets.reduce((total, bucket) => total + seriesValue(bucket, key), 0);
  const totalsText = SERIES.map((item) => `${sum(item.key)} ${item.label.toLowerCase()}`).join(", ");
  const busiest = buckets.reduce(
    (best, bucket) => (seriesValue(bucket, "started") > seriesValue(best, "started") ? bucket : best),
    buckets[0] ?? null,
  );
  return (
    `Bar chart: conversations started and transfers by kind ${bucketText.every}, from ${localText(first)} to ${localText(last)}, ${zone}. ` +
    `In all: ${totalsText}.` +
    (busiest && seriesValue(busiest, "started") > 0
      ? ` Most conversations started in the ${bucketText.one} of ${bucketLabel(busiest.start, granularity)} (${seriesValue(busiest, "started")}).`
      : "") +
    " The numbers are in the table after the chart."
  );
}

function chartTable(buckets, { granularity, zone, bucketText }) {
  return scroller(
    "The chart's numbers",
    h(
      "table",
      { class: "table table--compact", testid: "chart-table" },
      h("caption", {}, `${capitalized(bucketText.every)}, in ${zone}; ${bucketText.one}s with nothing are left out.`),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, `${capitalized(bucketText.one)} (${zone})`),
          SERIES.map((item) => h("th", { scope: "col", class: "num" }, item.label)),
        ),
      ),
      h(
        "tbody",
        {},
        buckets.map((bucket) =>
          h(
            "tr",
            { testid: "chart-table-row", dataset: { start: bucket.start } },
            h(
              "th",
              { scope: "row", class: "nowrap" },
              h("time", { datetime: bucket.start }, bucketLabel(bucket.start, granularity)),
            ),
            SERIES.map((item) =>
              h("td", { class: "num", dataset: { series: item.key } }, String(seriesValue(bucket, item.key))),
            ),
          ),
        ),
      ),
    ),
  );
}

// ---- stints by participant and by queue, totals, anomalies ---------------------------------

function renderGroups(answer, dimension, table, host) {
  const rows = (answer.results ?? []).map((result) => ({
    group: result.group?.[dimension] ?? null,
    bucket: result.buckets?.[0] ?? null,
  }));
  table.update(rows);
  const empty = host.querySelector(".overview__empty");
  if (!rows.length && !empty) host.append(h("p", { class: "muted overview__empty" }, "Nothing counted in this range."));
  if (rows.length && empty) empty.remove();
}

function renderTotals(view, bucket) {
  replace(
    view.escalationsHost,
    escalationFacts(bucket),
    h(
      "p",
      { class: "field__help" },
      "An escalation counts as escalated when it is raised, and as completed or failed when its outcome arrives; the success rate is completed ÷ (completed + failed).",
    ),
  );
  replace(view.totalsHost, totalFacts(bucket));
  const anomalies = Object.entries(bucket?.anomalies ?? {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  replace(
    view.anomaliesHost,
    anomalies.length ? anomaliesTable(anomalies) : h("p", { class: "muted" }, "No anomaly in this range."),
  );
}

function escalationFacts(bucket) {
  const transfers = bucket?.transfers ?? {};
  return facts([
    ["Escalated", String(transfers.escalated ?? 0), "escalations-raised"],
    ["Completed", String(transfers.escalationsCompleted ?? 0), "escalations-completed"],
    ["Failed", String(transfers.escalationsFailed ?? 0), "escalations-failed"],
    ["Success rate", percent(bucket?.escalationSuccessRate ?? null), "escalations-success-rate"],
  ]);
}

function totalFacts(bucket) {
  const transfers = bucket?.transfers ?? {};
  const conversations = bucket?.conversations ?? {};
  const firstAgent = bucket?.timeToFirstAgent ?? {};
  return facts([
    ["Conversations started", String(conversations.started ?? 0), "total-started"],
    ["Conversations ended", String(conversations.ended ?? 0), "total-ended"],
    ["Conversations handled", String(conversations.handled ?? 0), "total-handled"],
    [
      "Transfers",
      `${transfers.cold ?? 0} cold, ${transfers.warm ?? 0} warm, ${transfers.redial ?? 0} redial`,
      "total-transfers",
    ],
    ["Transfer rate", percent(bucket?.transferRate ?? null), "total-transfer-rate"],
    [
      "Time to first agent",
      firstAgent.count
        ? `p50 ${shortDuration(firstAgent.p50Seconds)}, p90 ${shortDuration(firstAgent.p90Seconds)} (${plural(firstAgent.count, "conversation")})`
        : "—",
      "total-first-agent",
    ],
  ]);
}

function anomaliesTable(anomalies) {
  return scroller(
    "Anomalies by code",
    h(
      "table",
      { class: "table table--compact", testid: "anomalies-table" },
      h("caption", { class: "visually-hidden" }, "Anomalies in the range, by code"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Code"),
          h("th", { scope: "col" }, "What happened"),
          h("th", { scope: "col", class: "num" }, "Count"),
        ),
      ),
      h(
        "tbody",
        {},
        anomalies.map(([code, number]) =>
          h(
            "tr",
            { testid: "anomaly-row", dataset: { code } },
            h("th", { scope: "row", class: "break" }, h("code", {}, code)),
            h("td", {}, ANOMALY_TEXT[code] ?? "—"),
            h("td", { class: "num" }, String(number)),
          ),
        ),
      ),
    ),
  );
}

// ---- live updates --------------------------------------------------------------------------

/**
 * The change stream refreshes "now" soon and a range that reaches now at most every few
 * seconds; "now" is polled too, and the "for 3 min" texts tick every second.
 */
function followChanges(page) {
  const { context, botId } = page;
  const refreshNow = coalesce(() => loadNow(page), NOW_REFRESH_MS);
  const refreshRange = coalesce(() => loadRange(page, { live: true }), RANGE_REFRESH_MS);
  context.onCleanup(refreshNow.cancel);
  context.onCleanup(refreshRange.cancel);
  context.onCleanup(
    subscribe(botId, () => {
      refreshNow();
      // Only a range that reaches now can change.
      if (page.shownRange && page.shownRange.to > serverNow() - 60000) refreshRange();
    }),
  );
  const poll = setInterval(() => {
    if (!document.hidden) refreshNow();
  }, NOW_POLL_MS);
  const tick = setInterval(() => {
    if (!document.hidden) for (const update of page.tickers) update();
  }, TICK_MS);
  context.onCleanup(() => {
    clearInterval(poll);
    clearInterval(tick);
    page.rangeController?.abort();
  });
}
