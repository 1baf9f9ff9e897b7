// The bots this token may read, and a way to open any bot by its id.

import { h, replace } from "../dom.mjs";
import { get } from "../api.mjs";
import { dateTime } from "../format.mjs";

export async function botsPage(context) {
  context.setTitle("Bots");
  const status = h("div", { class: "bots__status" }, h("p", { class: "loading" }, "Loading the bots…"));
  const botInput = h("input", { id: "bot-id-input", type: "text", autocomplete: "off", spellcheck: "false", required: true });
  const open = h(
    "form",
    { class: "inline-form", "aria-labelledby": "open-bot-title" },
    h("h2", { id: "open-bot-title" }, "Open a bot by its id"),
    h("div", { class: "field field--inline" }, h("label", { for: "bot-id-input" }, "Bot id"), botInput, h("button", { type: "submit", class: "button" }, "Open")),
  );
  open.addEventListener("submit", (event) => {
    event.preventDefault();
    const botId = botInput.value.trim();
    if (botId) context.navigate(["bots", botId, "conversations"]);
  });
  replace(context.main, h("section", { class: "panel" }, h("h1", { tabindex: "-1" }, "Bots"), status), h("section", { class: "panel" }, open));
  context.focusHeading();

  let bots;
  try {
    bots = await get("/api/v1/bots", { signal: context.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error.status === 404 || error.status === 405) {
      replace(status, h("p", { class: "notice" }, "This service does not list its bots. Type a bot id below."));
      botInput.focus();
      return;
    }
    replace(status, h("p", { class: "notice notice--error", role: "alert" }, error.describe ? error.describe() : String(error)));
    return;
  }
  const items = bots.items ?? [];
  if (!items.length) {
    replace(status, h("p", { class: "notice" }, "None of the bots this token may read has a conversation yet. Type a bot id below to open one anyway."));
    return;
  }
  replace(
    status,
    h(
      "table",
      { class: "table", testid: "bots-table" },
      h("caption", {}, "The bots this token may read that have conversations"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Bot"), h("th", { scope: "col" }, "Overview"), h("th", { scope: "col" }, "Last event (UTC)"))),
      h(
        "tbody",
        {},
        items.map((bot) =>
          h(
            "tr",
            { testid: "bot-row" },
            h("td", { "data-label": "Bot" }, h("a", { href: context.href(["bots", bot.botId, "conversations"]), testid: "bot-link" }, bot.botId)),
            h(
              "td",
              { "data-label": "Overview" },
              h("a", { href: context.href(["bots", bot.botId, "overview"]), testid: "bot-overview-link" }, "Overview", h("span", { class: "visually-hidden" }, ` of ${bot.botId}`)),
            ),
            h("td", { "data-label": "Last event" }, h("time", { datetime: bot.lastEventAt ?? "" }, dateTime(bot.lastEventAt))),
          ),
        ),
      ),
    ),
  );
}
