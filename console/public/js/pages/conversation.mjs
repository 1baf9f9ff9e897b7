// One conversation: its summary, the timeline chart, the hand-overs, every event with its
// payload, the transfer data and the interaction, kept up to date from the change stream.

import { apiPath, get, getJson, nextLink, noteServerTime, serverNow, withQuery } from "../api.mjs";
import { botBreadcrumbs, h, jsonDetails, replace, scroller } from "../dom.mjs";
import { anomalyText, clock, dateTime, day, duration, parseTime, participantName, plural } from "../format.mjs";
import { coalesce, subscribe } from "../live.mjs";
import { stintName, timeline } from "../timeline.mjs";
import { statusBadge, transfersText } from "./list.mjs";

const EVENTS_PAGE = 200;
/** Participants come 1000 to a response; past this many pages the chart stops (and says so). */
const MAX_PARTICIPANT_PAGES = 10;
/** Pages of new events fetched per live refresh before leaving the rest to "Load more". */
const MAX_LIVE_EVENT_PAGES = 5;
const LIVE_REFRESH_MS = 150;
const TICK_MS = 1000;

function who(identity, name) {
  return name && name !== identity ? `${identity} (${name})` : identity;
}

export async function conversationPage(context, { botId, conversationId }) {
  context.setTitle(`${conversationId} — ${botId}`);
  const view = renderFrame(context, botId, conversationId);
  context.focusHeading();

  const chart = timeline(view.chartHost);
  context.onCleanup(() => chart.destroy());

  const page = {
    context,
    botId,
    conversationId,
    view,
    chart,
    conversation: null,
    events: [],
    eventsComplete: false,
    /** The events table's body, made with the first rows; rows are only ever added to it. */
    eventsBody: null,
    selectedKey: null,
    erased: false,
  };
  if (!(await loadFirst(page))) return;
  renderAll(page, page.events, false);
  renderTransferData(page, await fetchTransferData(page).catch(() => null));
  if (context.signal.aborted) return;

  wireMoreEvents(page);
  followChanges(page);
  tickOpenStints(page);
}

// ---- the frame ----------------------------------------------------------------------------

/** Puts the page's sections in `main`; returns the parts that later renders fill. */
function renderFrame(context, botId, conversationId) {
  const summary = h("div", { class: "summary", testid: "conversation-summary" });
  const notices = h("div", { class: "conversation__notices", "aria-live": "polite" });
  const chartHost = h("div", { testid: "timeline" });
  const selection = h("div", { class: "selection", "aria-live": "polite", testid: "stint-details" });
  const hopsHost = h("div");
  const eventsHost = h("div");
  const eventsSummary = h("p", { class: "section__summary", testid: "events-summary" });
  const moreEvents = h("button", { type: "button", class: "button button--quiet", hidden: true }, "Load more events");
  const transferHost = h("div", { testid: "transfer-data" });
  const interactionHost = h("div", { testid: "interaction" });

  replace(
    context.main,
    botBreadcrumbs(context, botId, conversationId),
    h(
      "section",
      { class: "panel" },
      h("p", { class: "eyebrow" }, "Conversation"),
      h("h1", { tabindex: "-1", class: "break", testid: "conversation-title" }, conversationId),
      notices,
      summary,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "timeline-title" },
      h("h2", { id: "timeline-title" }, "Timeline"),
      chartHost,
      selection,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "hops-title" },
      h("h2", { id: "hops-title" }, "Hand-overs"),
      hopsHost,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "events-title" },
      h("h2", { id: "events-title" }, "Events"),
      eventsSummary,
      eventsHost,
      moreEvents,
    ),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "panel", "aria-labelledby": "transfer-title" },
        h("h2", { id: "transfer-title" }, "Transfer data"),
        transferHost,
      ),
      h(
        "section",
        { class: "panel", "aria-labelledby": "interaction-title" },
        h("h2", { id: "interaction-title" }, "Interaction"),
        interactionHost,
      ),
    ),
  );
  return {
    summary,
    notices,
    chartHost,
    selection,
    hopsHost,
    eventsHost,
    eventsSummary,
    moreEvents,
    transferHost,
    interactionHost,
  };
}

// ---- fetching -----------------------------------------------------------------------------

/** The conversation and its first page of events; false (with the failure shown) if not. */
async function loadFirst(page) {
  try {
    [page.conversation] = await Promise.all([fetchConversation(page), fetchEvents(page, 1)]);
    return true;
  } catch (error) {
    if (error.name === "AbortError") return false;
    const text =
      error.status === 404
        ? `There is no conversation ${page.conversationId} of bot ${page.botId} that this token may read.`
        : error.describe();
    replace(
      page.view.summary,
      h("p", { class: "notice notice--error", role: "alert", testid: "conversation-error" }, text),
    );
    return false;
  }
}

async function fetchConversation({ context, botId, conversationId }) {
  const { signal } = context;
  const started = Date.now();
  const { body, response } = await getJson(apiPath("bots", botId, "conversations", conversationId), { signal });
  const received = Date.now();
  let participants = body.participants ?? [];
  let next = nextLink(response);
  for (let pages = 1; next && pages < MAX_PARTICIPANT_PAGES; pages += 1) {
    const more = await getJson(next, { signal });
    participants = participants.concat(more.body.participants ?? []);
    next = nextLink(more.response);
  }
  body.participants = participants;
  body.participantsTruncated = Boolean(next);
  // An open stint's duration is counted to the service's now: that sets the clock.
  for (const participant of participants) {
    const open = participant.stints.find((stint) => stint.leftAt === null);
    if (open) {
      noteServerTime(parseTime(open.joinedAt) + open.durationSeconds * 1000, (started + received) / 2);
      break;
    }
  }
  return body;
}

/** The next events after those shown, added to `page.events`; returns the new ones. */
async function fetchEvents(page, maxPages) {
  const { context, botId, conversationId, events } = page;
  const added = [];
  for (let pages = 0; pages < maxPages; pages += 1) {
    const afterSeq = events.length ? events.at(-1).seq : 0;
    const answer = await get(
      withQuery(apiPath("bots", botId, "conversations", conversationId, "events"), {
        afterSeq: afterSeq || "",
        limit: EVENTS_PAGE,
      }),
      { signal: context.signal },
    );
    for (const event of answer.events ?? []) {
      if (events.length && event.seq <= events.at(-1).seq) continue;
      events.push(event);
      added.push(event);
    }
    page.eventsComplete = answer.nextAfterSeq === null || answer.nextAfterSeq === undefined;
    if (page.eventsComplete) break;
  }
  return added;
}

async function fetchTransferData({ context, botId, conversationId }) {
  try {
    return await get(apiPath("bots", botId, "conversations", conversationId, "transfer-data"), {
      signal: context.signal,
    });
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

// ---- rendering ----------------------------------------------------------------------------

function renderAll(page, added, isLive) {
  renderSummary(page);
  renderChart(page, true);
  renderHops(page);
  renderEvents(page, added, isLive);
  renderInteraction(page);
}

/** The conversation's length so far: to its end, or to the service's now while it goes on. */
function lifetimeSeconds(conversation, now) {
  return ((parseTime(conversation.endedAt) ?? now) - parseTime(conversation.startedAt)) / 1000;
}

function renderSummary({ conversation: c, view }) {
  const lifetime = lifetimeSeconds(c, serverNow());
  const item = (term, ...value) => [h("dt", {}, term), h("dd", {}, ...value)];
  replace(
    view.summary,
    h(
      "dl",
      { class: "facts" },
      item("Status", statusBadge(c.status)),
      item("Present now", c.participantsPresent?.length ? c.participantsPresent.join(", ") : "nobody"),
      item("Started", h("time", { datetime: c.startedAt }, dateTime(c.startedAt))),
      item("Ended", c.endedAt ? h("time", { datetime: c.endedAt }, dateTime(c.endedAt)) : "—"),
      item("Last event", h("time", { datetime: c.lastEventAt }, dateTime(c.lastEventAt))),
      item("Duration", h("span", { testid: "conversation-duration" }, duration(lifetime))),
      item("Events", String(c.eventCount)),
      item("Anomalies", h("span", { class: c.anomalyCount ? "warn" : null }, String(c.anomalyCount))),
      item("Transfers", transfersText(c.transfers)),
      item("Channel", [c.experience, c.language].filter(Boolean).join(" · ") || "—"),
    ),
  );
}

// ---- the timeline -------------------------------------------------------------------------

/** A row per participant, each stint a bar; hand-overs and anomalies as marks on the axis. */
function chartModel(page) {
  const { context, botId, conversationId, conversation, events } = page;
  const now = serverNow();
  const known = new Set(conversation.participants.map((participant) => participant.identity));
  const rows = conversation.participants.map((participant) => participantRow(context, botId, participant, now));
  // Hand-over ends with no stint (a bot that escalated) still get a row to point at.
  for (const hop of conversation.hops ?? []) {
    for (const identity of [hop.from, hop.to]) {
      if (identity !== null && identity !== undefined && !known.has(identity)) {
        known.add(identity);
        rows.push({ key: identity, label: identity, sublabel: "no stint", bars: [] });
      }
    }
  }
  const hops = (conversation.hops ?? []).map((hop) => ({
    key: JSON.stringify(["hop", hop.seq]),
    at: parseTime(hop.at),
    from: hop.from ?? null,
    to: hop.to ?? null,
    kind: hop.kind,
    outcome: hop.outcome,
    name: hopName(hop),
  }));
  const anomalies = events
    .filter((event) => event.anomalies?.length)
    .map((event) => ({
      key: JSON.stringify(["anomaly", event.seq]),
      at: parseTime(event.receivedAt),
      name: `Anomaly at ${clock(event.receivedAt)}, event ${event.seq}: ${event.anomalies.map(anomalyText).join("; ")}`,
    }));
  return {
    label: `Timeline of conversation ${conversationId}`,
    rows,
    hops,
    anomalies,
    now,
    selectedKey: page.selectedKey,
    onActivate: (bar) => {
      page.selectedKey = page.selectedKey === bar.key ? null : bar.key;
      renderChart(page);
      renderSelection(page, page.selectedKey ? bar : null);
    },
  };
}

function participantRow(context, botId, participant, now) {
  return {
    key: participant.identity,
    label: participantName(participant),
    sublabel:
      participant.name && participant.name !== participant.identity
        ? `${participant.identity} · ${participant.type}`
        : participant.type,
    href: context.href(["bots", botId, "agents", participant.identity]),
    bars: participant.stints.map((stint, index) => ({
      key: JSON.stringify(["stint", participant.identity, index]),
      start: parseTime(stint.joinedAt),
      end: stint.leftAt ? parseTime(stint.leftAt) : null,
      entryType: stint.entryType,
      exitType: stint.exitType,
      name: stintName(who(participant.identity, participant.name), stint, now),
      stint,
      participant,
      data: { identity: participant.identity, stint: index },
    })),
  };
}

function hopName(hop) {
  const from = hop.from ?? "someone unknown";
  const to = hop.to ?? "nobody yet";
  const reason = hop.reason ? `, reason ${hop.reason}` : "";
  return `${hop.kind} hand-over at ${clock(hop.at)} from ${from} to ${to}, ${hop.outcome}${reason}`;
}

/** `withSelection`: also redraw the selected stint's details (on new data, not every tick). */
function renderChart(page, withSelection = false) {
  const { conversation, view } = page;
  const model = chartModel(page);
  page.chart.render(model);
  if (withSelection && page.selectedKey) {
    const bar = model.rows.flatMap((row) => row.bars).find((candidate) => candidate.key === page.selectedKey);
    if (bar) renderSelection(page, bar);
  }
  if (conversation.participantsTruncated) {
    replace(
      view.notices,
      h("p", { class: "notice" }, `The chart shows the first ${conversation.participants.length} participants only.`),
    );
  }
}

/** The details of the stint whose bar is selected (none: cleared). */
function renderSelection({ context, botId, view }, bar) {
  if (!bar) {
    replace(view.selection);
    return;
  }
  const { stint, participant } = bar;
  replace(
    view.selection,
    h(
      "div",
      { class: "selection__body" },
      h("h3", {}, `Stint of ${who(participant.identity, participant.name)}`),
      h(
        "dl",
        { class: "facts facts--compact" },
        h("dt", {}, "Entered"),
        h("dd", {}, `${dateTime(stint.joinedAt)} (${stint.entryType})`),
        h("dt", {}, "Left"),
        h("dd", {}, stint.leftAt ? `${dateTime(stint.leftAt)} (${stint.exitType})` : "still present"),
        h("dt", {}, "Duration"),
        h("dd", {}, duration(stint.leftAt ? stint.durationSeconds : (serverNow() - parseTime(stint.joinedAt)) / 1000)),
        h("dt", {}, "Participant type"),
        h("dd", {}, participant.type),
      ),
      h(
        "p",
        {},
        h(
          "a",
          { href: context.href(["bots", botId, "agents", participant.identity]) },
          `All stints of ${participant.identity}, across conversations`,
        ),
      ),
    ),
  );
}

// ---- hand-overs ---------------------------------------------------------------------------

function renderHops({ conversation, view }) {
  const hops = conversation.hops ?? [];
  if (!hops.length) {
    replace(view.hopsHost, h("p", { class: "muted" }, "No hand-overs."));
    return;
  }
  replace(
    view.hopsHost,
    scroller(
      "Hand-overs table",
      h(
        "table",
        { class: "table table--cards", testid: "hops-table" },
        h("caption", { class: "visually-hidden" }, "Hand-overs, in the order they happened"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Event", "Time (UTC)", "Kind", "From", "To", "Outcome", "Reason / targets"].map((text) =>
              h("th", { scope: "col" }, text),
            ),
          ),
        ),
        h("tbody", {}, hops.map(hopRow)),
      ),
    ),
  );
}

function hopRow(hop) {
  return h(
    "tr",
    { testid: "hop-row", dataset: { kind: hop.kind, outcome: hop.outcome } },
    h("th", { scope: "row", "data-label": "Event" }, String(hop.seq)),
    h("td", { "data-label": "Time" }, h("time", { datetime: hop.at }, clock(hop.at, true))),
    h(
      "td",
      { "data-label": "Kind" },
      h("span", { class: ["kind", `kind--${String(hop.kind).toLowerCase()}`] }, hop.kind),
    ),
    h("td", { "data-label": "From" }, hop.from ?? "—"),
    h("td", { "data-label": "To" }, hop.to ?? "—"),
    h("td", { "data-label": "Outcome" }, h("span", { class: ["outcome", `outcome--${hop.outcome}`] }, hop.outcome)),
    h(
      "td",
      { "data-label": "Reason / targets" },
      [hop.reason, hop.targets ? hop.targets.map((target) => `${target.type}: ${target.value}`).join(", ") : null]
        .filter(Boolean)
        .join(" — ") || "—",
    ),
  );
}

// ---- events -------------------------------------------------------------------------------

function renderEvents(page, added, isLive) {
  const { view } = page;
  if (!page.eventsBody) {
    page.eventsBody = h("tbody", {});
    replace(view.eventsHost, eventsTable(page.eventsBody));
  }
  // Rows are only ever added, so an open payload stays open while new events arrive.
  page.eventsBody.append(...added.map((event) => eventRow(event, isLive)));
  view.eventsSummary.textContent = `${plural(page.events.length, "event")} shown of ${page.conversation.eventCount}.`;
  view.moreEvents.hidden = page.eventsComplete;
}

function eventsTable(body) {
  return scroller(
    "Events table",
    h(
      "table",
      { class: "table table--cards table--events", testid: "events-table" },
      h("caption", { class: "visually-hidden" }, "Events in the order they were stored"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Seq", "Received (UTC)", "Event", "Type", "Participant", "Anomalies", "Payload"].map((text, index) =>
            h("th", { scope: "col", class: index === 0 ? "num" : null }, text),
          ),
        ),
      ),
      body,
    ),
  );
}

function eventRow(event, isNew) {
  const type = [event.transferType, event.transition].filter(Boolean).join(" ");
  const participant = event.participant;
  return h(
    "tr",
    {
      class: ["event", isNew && "event--new", event.anomalies?.length && "event--anomalous"],
      testid: "event-row",
      dataset: { seq: event.seq, name: event.name },
    },
    h("th", { scope: "row", class: "num", "data-label": "Seq" }, String(event.seq)),
    h(
      "td",
      { "data-label": "Received (UTC)" },
      h(
        "time",
        { datetime: event.receivedAt, title: event.receivedAt },
        `${day(event.receivedAt)} ${clock(event.receivedAt, true)}`,
      ),
    ),
    h("td", { "data-label": "Event", class: "break" }, event.name),
    h("td", { "data-label": "Type" }, type || "—"),
    h(
      "td",
      { "data-label": "Participant", class: "break" },
      participant
        ? [
            h(
              "span",
              { class: "event__who", testid: "event-participant-name" },
              participant.name || participant.identity,
            ),
            h(
              "span",
              { class: "event__id" },
              `${participant.identity}${participant.type ? ` · ${participant.type}` : ""}`,
            ),
          ]
        : "—",
    ),
    h(
      "td",
      { "data-label": "Anomalies" },
      event.anomalies?.length
        ? h(
            "ul",
            { class: "anomalies" },
            event.anomalies.map((code) => h("li", { class: "warn" }, anomalyText(code))),
          )
        : "—",
    ),
    h(
      "td",
      { "data-label": "Payload", class: "event__payload" },
      jsonDetails("Payload", event.payload, { testid: "event-payload" }),
    ),
  );
}

/** "Load more events": the next page of events, appended. */
function wireMoreEvents(page) {
  const { moreEvents, notices } = page.view;
  moreEvents.addEventListener("click", async () => {
    moreEvents.disabled = true;
    try {
      const added = await fetchEvents(page, 1);
      renderEvents(page, added, false);
      renderChart(page);
    } catch (error) {
      if (error.name !== "AbortError")
        replace(notices, h("p", { class: "notice notice--error", role: "alert" }, error.describe?.() ?? String(error)));
    } finally {
      moreEvents.disabled = false;
    }
  });
}

// ---- transfer data and the interaction ----------------------------------------------------

function renderTransferData({ view }, transfer) {
  if (!transfer) {
    replace(view.transferHost, h("p", { class: "muted" }, "No transfer data was sent in this conversation."));
    return;
  }
  const from = transfer.participant
    ? who(transfer.participant.identity, transfer.participant.name)
    : "an unnamed participant";
  replace(
    view.transferHost,
    h("p", {}, `The latest, sent by ${from} at ${dateTime(transfer.receivedAt)} (event ${transfer.seq}):`),
    h(
      "pre",
      { class: "json__body", tabindex: "0", testid: "transfer-data-json" },
      JSON.stringify(transfer.data, null, 2),
    ),
  );
}

/** The interaction's fields shown first, in this order; the others follow by name. */
const INTERACTION_ORDER = [
  "interactionId",
  "type",
  "state",
  "service",
  "subject",
  "callDirection",
  "origination",
  "startTime",
  "endTime",
  "duration",
];

function renderInteraction({ conversation, view }) {
  const interaction = conversation.interaction;
  if (!interaction) {
    replace(
      view.interactionHost,
      h("p", { class: "muted" }, "No Bright Pattern interaction was delivered for this conversation."),
    );
    return;
  }
  const parties = Array.isArray(interaction.callParties) ? interaction.callParties : [];
  const deliveries = Array.isArray(interaction.deliveredTo) ? interaction.deliveredTo : [];
  replace(
    view.interactionHost,
    interactionFacts(interaction),
    deliveries.length ? deliveriesList(deliveries) : null,
    parties.length ? callPartiesList(parties) : null,
    jsonDetails("The whole interaction (JSON)", interaction),
  );
}

/** The interaction's scalar fields as facts; its lists and objects are in the JSON below. */
function interactionFacts(interaction) {
  const scalarKeys = Object.keys(interaction).filter((key) => {
    const value = interaction[key];
    return value === null || ["string", "number", "boolean"].includes(typeof value);
  });
  scalarKeys.sort(
    (a, b) => (INTERACTION_ORDER.indexOf(a) + 1 || 99) - (INTERACTION_ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b),
  );
  return h(
    "dl",
    { class: "facts facts--compact" },
    scalarKeys.map((key) => [h("dt", {}, key), h("dd", { class: "break" }, interactionValue(key, interaction[key]))]),
  );
}

function interactionValue(key, value) {
  if ((key === "startTime" || key === "endTime") && typeof value === "number") return `${dateTime(value)} (${value})`;
  if (key === "duration" && typeof value === "number") return `${duration(value)} (${value} s)`;
  return value === null ? "—" : String(value);
}

function deliveriesList(deliveries) {
  return [
    h("h3", {}, "Delivered to"),
    h(
      "ol",
      { class: "plain-list" },
      deliveries.map((delivery) =>
        h("li", {}, `${delivery.agentId ?? "?"}${delivery.at ? ` at ${dateTime(delivery.at)}` : ""}`),
      ),
    ),
  ];
}

function callPartiesList(parties) {
  return [
    h("h3", {}, "Call parties"),
    h(
      "ul",
      { class: "plain-list" },
      parties.map((party) =>
        h(
          "li",
          {},
          [party?.name, party?.phone, party?.id && `id ${party.id}`, party?.userId && `user ${party.userId}`]
            .filter(Boolean)
            .join(" · "),
        ),
      ),
    ),
  ];
}

// ---- live updates -------------------------------------------------------------------------

/** Follows the bot's change stream: news of this conversation refreshes it (coalesced). */
function followChanges(page) {
  const { context, botId, conversationId } = page;
  const trigger = coalesce(() => refresh(page), LIVE_REFRESH_MS);
  context.onCleanup(trigger.cancel);
  context.onCleanup(
    subscribe(botId, (item) => {
      if (item.conversationId !== conversationId) return;
      if (item.kind === "conversation.erased") return markErased(page);
      // An item we already show (the stream starts from the oldest event) needs nothing.
      const { events } = page;
      if (item.kind === "event" && page.eventsComplete && events.length && item.seq <= events.at(-1).seq) return;
      trigger();
    }),
  );
}

async function refresh(page) {
  if (page.erased || page.context.signal.aborted) return;
  let next;
  let added = [];
  try {
    next = await fetchConversation(page);
    if (page.eventsComplete) added = await fetchEvents(page, MAX_LIVE_EVENT_PAGES);
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error.status === 404) return markErased(page);
    return; // keep what is shown; the next change tries again
  }
  page.conversation = next;
  renderAll(page, added, true);
  if (added.some(carriesTransferData)) {
    renderTransferData(page, await fetchTransferData(page).catch(() => null));
  }
}

function carriesTransferData(event) {
  return (
    event.name === "TRANSFER_DATA" ||
    (event.payload && typeof event.payload === "object" && "transferData" in event.payload)
  );
}

function markErased(page) {
  page.erased = true;
  replace(
    page.view.notices,
    h(
      "p",
      { class: "notice notice--error", role: "alert" },
      "This conversation was erased: what is shown here no longer exists in the service.",
    ),
  );
}

/** Open stints grow: redraw the chart (and the running duration) every second. */
function tickOpenStints(page) {
  const timer = setInterval(() => {
    const { conversation } = page;
    if (!conversation || document.hidden) return;
    const open = conversation.participants.some((participant) =>
      participant.stints.some((stint) => stint.leftAt === null),
    );
    if (!open) return;
    renderChart(page);
    const node = page.view.summary.querySelector("[data-testid=conversation-duration]");
    if (node) node.textContent = duration(lifetimeSeconds(conversation, serverNow()));
  }, TICK_MS);
  page.context.onCleanup(() => clearInterval(timer));
}
