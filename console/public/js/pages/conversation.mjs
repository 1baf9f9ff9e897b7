// One conversation: its summary, the timeline chart, the hand-overs, every event with its
// payload, the transfer data and the interaction, kept up to date from the change stream.

import { h, replace, jsonDetails, scroller } from "../dom.mjs";
import { get, getJson, apiPath, withQuery, nextLink, serverNow, noteServerTime } from "../api.mjs";
import { dateTime, clock, day, duration, parseTime, anomalyText, participantName, plural } from "../format.mjs";
import { subscribe, coalesce } from "../live.mjs";
import { timeline, stintName } from "../timeline.mjs";
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
  const { signal } = context;
  context.setTitle(`${conversationId} — ${botId}`);

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
    h(
      "nav",
      { class: "breadcrumbs", "aria-label": "Breadcrumbs" },
      h("ol", {}, h("li", {}, h("a", { href: context.href(["bots"]) }, "Bots")), h("li", {}, h("a", { href: context.href(["bots", botId, "conversations"]) }, botId)), h("li", { "aria-current": "page" }, conversationId)),
    ),
    h("section", { class: "panel" }, h("p", { class: "eyebrow" }, "Conversation"), h("h1", { tabindex: "-1", class: "break", testid: "conversation-title" }, conversationId), notices, summary),
    h("section", { class: "panel", "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), chartHost, selection),
    h("section", { class: "panel", "aria-labelledby": "hops-title" }, h("h2", { id: "hops-title" }, "Hand-overs"), hopsHost),
    h("section", { class: "panel", "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), eventsSummary, eventsHost, moreEvents),
    h(
      "div",
      { class: "columns" },
      h("section", { class: "panel", "aria-labelledby": "transfer-title" }, h("h2", { id: "transfer-title" }, "Transfer data"), transferHost),
      h("section", { class: "panel", "aria-labelledby": "interaction-title" }, h("h2", { id: "interaction-title" }, "Interaction"), interactionHost),
    ),
  );
  context.focusHeading();

  const chart = timeline(chartHost);
  context.onCleanup(() => chart.destroy());

  let conversation = null;
  const events = [];
  let eventsComplete = false;
  let selectedKey = null;
  let erased = false;

  // ---- fetching -------------------------------------------------------------------------

  async function fetchConversation() {
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

  /** The next events after those shown; returns the new ones. */
  async function fetchEvents(maxPages) {
    const added = [];
    for (let pages = 0; pages < maxPages; pages += 1) {
      const afterSeq = events.length ? events.at(-1).seq : 0;
      const page = await get(withQuery(apiPath("bots", botId, "conversations", conversationId, "events"), { afterSeq: afterSeq || "", limit: EVENTS_PAGE }), { signal });
      for (const event of page.events ?? []) {
        if (events.length && event.seq <= events.at(-1).seq) continue;
        events.push(event);
        added.push(event);
      }
      eventsComplete = page.nextAfterSeq === null || page.nextAfterSeq === undefined;
      if (eventsComplete) break;
    }
    return added;
  }

  async function fetchTransferData() {
    try {
      return await get(apiPath("bots", botId, "conversations", conversationId, "transfer-data"), { signal });
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  // ---- rendering ------------------------------------------------------------------------

  function renderSummary() {
    const c = conversation;
    const now = serverNow();
    const lifetime = ((parseTime(c.endedAt) ?? now) - parseTime(c.startedAt)) / 1000;
    const item = (term, ...value) => [h("dt", {}, term), h("dd", {}, ...value)];
    replace(
      summary,
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

  function chartModel() {
    const now = serverNow();
    const known = new Set(conversation.participants.map((participant) => participant.identity));
    const rows = conversation.participants.map((participant) => {
      const label = participantName(participant);
      return {
        key: participant.identity,
        label,
        sublabel: participant.name && participant.name !== participant.identity ? `${participant.identity} · ${participant.type}` : participant.type,
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
    });
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
      selectedKey,
      onActivate: (bar) => {
        selectedKey = selectedKey === bar.key ? null : bar.key;
        renderChart();
        renderSelection(selectedKey ? bar : null);
      },
    };
  }

  /** `withSelection`: also redraw the selected stint's details (on new data, not every tick). */
  function renderChart(withSelection = false) {
    const model = chartModel();
    chart.render(model);
    if (withSelection && selectedKey) {
      const bar = model.rows.flatMap((row) => row.bars).find((candidate) => candidate.key === selectedKey);
      if (bar) renderSelection(bar);
    }
    if (conversation.participantsTruncated) {
      replace(notices, h("p", { class: "notice" }, `The chart shows the first ${conversation.participants.length} participants only.`));
    }
  }

  function renderSelection(bar) {
    if (!bar) {
      replace(selection);
      return;
    }
    const { stint, participant } = bar;
    replace(
      selection,
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
        h("p", {}, h("a", { href: context.href(["bots", botId, "agents", participant.identity]) }, `All stints of ${participant.identity}, across conversations`)),
      ),
    );
  }

  function hopName(hop) {
    const from = hop.from ?? "someone unknown";
    const to = hop.to ?? "nobody yet";
    const reason = hop.reason ? `, reason ${hop.reason}` : "";
    return `${hop.kind} hand-over at ${clock(hop.at)} from ${from} to ${to}, ${hop.outcome}${reason}`;
  }

  function renderHops() {
    const hops = conversation.hops ?? [];
    if (!hops.length) {
      replace(hopsHost, h("p", { class: "muted" }, "No hand-overs."));
      return;
    }
    replace(
      hopsHost,
      scroller(
        "Hand-overs table",
        h(
          "table",
          { class: "table table--cards", testid: "hops-table" },
          h("caption", { class: "visually-hidden" }, "Hand-overs, in the order they happened"),
          h("thead", {}, h("tr", {}, ["Event", "Time (UTC)", "Kind", "From", "To", "Outcome", "Reason / targets"].map((text) => h("th", { scope: "col" }, text)))),
          h(
            "tbody",
            {},
            hops.map((hop) =>
              h(
                "tr",
                { testid: "hop-row", dataset: { kind: hop.kind, outcome: hop.outcome } },
                h("th", { scope: "row", "data-label": "Event" }, String(hop.seq)),
                h("td", { "data-label": "Time" }, h("time", { datetime: hop.at }, clock(hop.at, true))),
                h("td", { "data-label": "Kind" }, h("span", { class: ["kind", `kind--${String(hop.kind).toLowerCase()}`] }, hop.kind)),
                h("td", { "data-label": "From" }, hop.from ?? "—"),
                h("td", { "data-label": "To" }, hop.to ?? "—"),
                h("td", { "data-label": "Outcome" }, h("span", { class: ["outcome", `outcome--${hop.outcome}`] }, hop.outcome)),
                h("td", { "data-label": "Reason / targets" }, [hop.reason, hop.targets ? hop.targets.map((target) => `${target.type}: ${target.value}`).join(", ") : null].filter(Boolean).join(" — ") || "—"),
              ),
            ),
          ),
        ),
      ),
    );
  }

  let eventsBody = null;

  function eventRow(event, isNew) {
    const type = [event.transferType, event.transition].filter(Boolean).join(" ");
    const participant = event.participant;
    return h(
      "tr",
      { class: ["event", isNew && "event--new", event.anomalies?.length && "event--anomalous"], testid: "event-row", dataset: { seq: event.seq, name: event.name } },
      h("th", { scope: "row", class: "num", "data-label": "Seq" }, String(event.seq)),
      h("td", { "data-label": "Received (UTC)" }, h("time", { datetime: event.receivedAt, title: event.receivedAt }, `${day(event.receivedAt)} ${clock(event.receivedAt, true)}`)),
      h("td", { "data-label": "Event", class: "break" }, event.name),
      h("td", { "data-label": "Type" }, type || "—"),
      h(
        "td",
        { "data-label": "Participant", class: "break" },
        participant
          ? [h("span", { class: "event__who", testid: "event-participant-name" }, participant.name || participant.identity), h("span", { class: "event__id" }, `${participant.identity}${participant.type ? ` · ${participant.type}` : ""}`)]
          : "—",
      ),
      h(
        "td",
        { "data-label": "Anomalies" },
        event.anomalies?.length ? h("ul", { class: "anomalies" }, event.anomalies.map((code) => h("li", { class: "warn" }, anomalyText(code)))) : "—",
      ),
      h("td", { "data-label": "Payload", class: "event__payload" }, jsonDetails("Payload", event.payload, { testid: "event-payload" })),
    );
  }

  function renderEvents(added, isLive) {
    if (!eventsBody) {
      eventsBody = h("tbody", {});
      replace(
        eventsHost,
        scroller(
          "Events table",
          h(
            "table",
            { class: "table table--cards table--events", testid: "events-table" },
            h("caption", { class: "visually-hidden" }, "Events in the order they were stored"),
            h("thead", {}, h("tr", {}, ["Seq", "Received (UTC)", "Event", "Type", "Participant", "Anomalies", "Payload"].map((text, index) => h("th", { scope: "col", class: index === 0 ? "num" : null }, text)))),
            eventsBody,
          ),
        ),
      );
    }
    // Rows are only ever added, so an open payload stays open while new events arrive.
    eventsBody.append(...added.map((event) => eventRow(event, isLive)));
    eventsSummary.textContent = `${plural(events.length, "event")} shown of ${conversation.eventCount}.`;
    moreEvents.hidden = eventsComplete;
  }

  function renderTransferData(transfer) {
    if (!transfer) {
      replace(transferHost, h("p", { class: "muted" }, "No transfer data was sent in this conversation."));
      return;
    }
    const from = transfer.participant ? who(transfer.participant.identity, transfer.participant.name) : "an unnamed participant";
    replace(
      transferHost,
      h("p", {}, `The latest, sent by ${from} at ${dateTime(transfer.receivedAt)} (event ${transfer.seq}):`),
      h("pre", { class: "json__body", tabindex: "0", testid: "transfer-data-json" }, JSON.stringify(transfer.data, null, 2)),
    );
  }

  function renderInteraction() {
    const interaction = conversation.interaction;
    if (!interaction) {
      replace(interactionHost, h("p", { class: "muted" }, "No Bright Pattern interaction was delivered for this conversation."));
      return;
    }
    const order = ["interactionId", "type", "state", "service", "subject", "callDirection", "origination", "startTime", "endTime", "duration"];
    const scalarKeys = Object.keys(interaction).filter((key) => {
      const value = interaction[key];
      return value === null || ["string", "number", "boolean"].includes(typeof value);
    });
    scalarKeys.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || a.localeCompare(b));
    const show = (key, value) => {
      if ((key === "startTime" || key === "endTime") && typeof value === "number") return `${dateTime(value)} (${value})`;
      if (key === "duration" && typeof value === "number") return `${duration(value)} (${value} s)`;
      return value === null ? "—" : String(value);
    };
    const parties = Array.isArray(interaction.callParties) ? interaction.callParties : [];
    const deliveries = Array.isArray(interaction.deliveredTo) ? interaction.deliveredTo : [];
    replace(
      interactionHost,
      h("dl", { class: "facts facts--compact" }, scalarKeys.map((key) => [h("dt", {}, key), h("dd", { class: "break" }, show(key, interaction[key]))])),
      deliveries.length
        ? [
            h("h3", {}, "Delivered to"),
            h(
              "ol",
              { class: "plain-list" },
              deliveries.map((delivery) =>
                h("li", {}, `${delivery.agentId ?? "?"}${delivery.at ? ` at ${dateTime(delivery.at)}` : ""}`),
              ),
            ),
          ]
        : null,
      parties.length
        ? [
            h("h3", {}, "Call parties"),
            h("ul", { class: "plain-list" }, parties.map((party) => h("li", {}, [party?.name, party?.phone, party?.id && `id ${party.id}`, party?.userId && `user ${party.userId}`].filter(Boolean).join(" · ")))),
          ]
        : null,
      jsonDetails("The whole interaction (JSON)", interaction),
    );
  }

  function renderAll(added, isLive) {
    renderSummary();
    renderChart(true);
    renderHops();
    renderEvents(added, isLive);
    renderInteraction();
  }

  // ---- load, then follow ----------------------------------------------------------------

  try {
    [conversation] = await Promise.all([fetchConversation(), fetchEvents(1)]);
  } catch (error) {
    if (error.name === "AbortError") return;
    const text = error.status === 404 ? `There is no conversation ${conversationId} of bot ${botId} that this token may read.` : error.describe();
    replace(summary, h("p", { class: "notice notice--error", role: "alert", testid: "conversation-error" }, text));
    return;
  }
  renderAll(events, false);
  renderTransferData(await fetchTransferData().catch(() => null));
  if (signal.aborted) return;

  moreEvents.addEventListener("click", async () => {
    moreEvents.disabled = true;
    try {
      const added = await fetchEvents(1);
      renderEvents(added, false);
      renderChart();
    } catch (error) {
      if (error.name !== "AbortError") replace(notices, h("p", { class: "notice notice--error", role: "alert" }, error.describe?.() ?? String(error)));
    } finally {
      moreEvents.disabled = false;
    }
  });

  async function refresh() {
    if (erased || signal.aborted) return;
    let next;
    let added = [];
    try {
      next = await fetchConversation();
      if (eventsComplete) added = await fetchEvents(MAX_LIVE_EVENT_PAGES);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error.status === 404) return markErased();
      return; // keep what is shown; the next change tries again
    }
    conversation = next;
    renderAll(added, true);
    if (added.some((event) => event.name === "TRANSFER_DATA" || (event.payload && typeof event.payload === "object" && "transferData" in event.payload))) {
      renderTransferData(await fetchTransferData().catch(() => null));
    }
  }

  function markErased() {
    erased = true;
    replace(notices, h("p", { class: "notice notice--error", role: "alert" }, "This conversation was erased: what is shown here no longer exists in the service."));
  }

  const trigger = coalesce(refresh, LIVE_REFRESH_MS);
  context.onCleanup(trigger.cancel);
  context.onCleanup(
    subscribe(botId, (item) => {
      if (item.conversationId !== conversationId) return;
      if (item.kind === "conversation.erased") return markErased();
      // An item we already show (the stream starts from the oldest event) needs nothing.
      if (item.kind === "event" && eventsComplete && events.length && item.seq <= events.at(-1).seq) return;
      trigger();
    }),
  );

  // Open stints grow: redraw the chart (and the running duration) every second.
  const timer = setInterval(() => {
    if (!conversation || document.hidden) return;
    const open = conversation.participants.some((participant) => participant.stints.some((stint) => stint.leftAt === null));
    if (!open) return;
    renderChart();
    const lifetime = ((parseTime(conversation.endedAt) ?? serverNow()) - parseTime(conversation.startedAt)) / 1000;
    const node = summary.querySelector("[data-testid=conversation-duration]");
    if (node) node.textContent = duration(lifetime);
  }, TICK_MS);
  context.onCleanup(() => clearInterval(timer));
}
