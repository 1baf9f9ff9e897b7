// The bots this token may read, and a way to open any bot by its id.

import { get } from "../api.mjs";
import { h, replace } from "../dom.mjs";
import { dateTime } from "../format.mjs";

export async function botsPage(context) {
  context.setTitle("Bots");
  const status = h("div", { class: "bots__status" }, h("p", { class: "loading" }, "Loading the bots…"));
  const open = openBotForm(context);
  replace(
    context.main,
    h("section", { class: "panel" }, h("h1", { tabindex: "-1" }, "Bots"), status),
    h("section", { class: "panel" }, open.form),
  );
  context.focusHeading();

  let bots;
  try {
    bots = await get("/api/v1/bots", { signal: context.signal });
  } catch (error) {
    if (error.name !== "AbortError") showLoadError(status, open.input, error);
    return;
  }
  showBots(context, status, bots.items ?? []);
}

/** The form that opens any bot by its id, whether it is listed or not. */
function openBotForm(context) {
  const input = h("input", {
    id: "bot-id-input",
    type: "text",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const form = h(
    "form",
    { class: "inline-form", "aria-labelledby": "open-bot-title" },
    h("h2", { id: "open-bot-title" }, "Open a bot by its id"),
    h(
      "div",
      { class: "field field--inline" },
      h("label", { for: "bot-id-input" }, "Bot id"),
      input,
      h("button", { type: "submit", class: "button" }, "Open"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const botId = input.value.trim();
    if (botId) context.navigate(["bots", botId, "conversations"]);
  });
  return { form, input };
}

function showLoadError(status, botInput, error) {
  if (error.status === 404 || error.status === 405) {
    replace(status, h("p", { class: "notice" }, "This service does not list its bots. Type a bot id below."));
    botInput.focus();
    return;
  }
  replace(
    status,
    h("p", { class: "notice notice--error", role: "alert" }, error.describe ? error.describe() : String(error)),
  );
}

function showBots(context, status, items) {
  if (!items.length) {
    replace(
      status,
      h(
        "p",
        { class: "notice" },
        "None of the bots this token may read has a conversation yet. Type a bot id below to open one anyway.",
      ),
    );
    return;
  }
  replace(status, botsTable(context, items));
}

function botsTable(context, items) {
  return h(
    "table",
    { class: "table", testid: "bots-table" },
    h("caption", {}, "The bots this token may read that have conversations"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Bot"),
        h("th", { scope: "col" }, "Overview"),
        h("th", { scope: "col" }, "Last event (UTC)"),
      ),
    ),
    h(
      "tbody",
      {},
      items.map((bot) => botRow(context, bot)),
    ),
  );
}

function botRow(context, bot) {
  return h(
    "tr",
    { testid: "bot-row" },
    h(
      "td",
      { "data-label": "Bot" },
      h("a", { href: context.href(["bots", bot.botId, "conversations"]), testid: "bot-link" }, bot.botId),
    ),
    h(
      "td",
      { "data-label": "Overview" },
      h(
        "a",
        { href: context.href(["bots", bot.botId, "overview"]), testid: "bot-overview-link" },
        "Overview",
        h("span", { class: "visually-hidden" }, ` of ${bot.botId}`),
      ),
    ),
    h("td", { "data-label": "Last event" }, h("time", { datetime: bot.lastEventAt ?? "" }, dateTime(bot.lastEventAt))),
  );
}
