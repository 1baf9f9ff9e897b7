// Building the DOM without HTML strings: every value goes in as text (textContent) or as an
// attribute value, so nothing a conversation's events contain can become markup or script.

const SVG_NS = "http://www.w3.org/2000/svg";

/** Attribute names that could carry script or inline style are refused outright. */
function checkedName(name) {
  const lower = String(name).toLowerCase();
  if (lower.startsWith("on") || lower === "style" || lower === "srcdoc") {
    throw new Error(`refusing to set attribute ${name}`);
  }
  return name;
}

function apply(element, props) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") {
      element.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "text") {
      element.textContent = String(value);
    } else if (key === "dataset") {
      for (const [name, data] of Object.entries(value)) {
        if (data !== undefined && data !== null) element.dataset[name] = String(data);
      }
    } else if (key === "on") {
      for (const [type, listener] of Object.entries(value)) element.addEventListener(type, listener);
    } else if (key === "testid") {
      element.setAttribute("data-testid", value);
    } else if (key === "checked" || key === "selected" || key === "value") {
      element[key] = value;
    } else {
      element.setAttribute(checkedName(key), value === true ? "" : String(value));
    }
  }
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** `h("td", {class: "x"}, "text", otherNode)`: an HTML element; strings become text nodes. */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  apply(element, props);
  return append(element, children);
}

/** The same for SVG elements. */
export function s(tag, props, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  apply(element, props);
  return append(element, children);
}

/** Replaces an element's children. */
export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** A `<details>` with the value pretty-printed as JSON text. */
export function jsonDetails(summary, value, props = {}) {
  return h(
    "details",
    { class: "json", ...props },
    h("summary", {}, summary),
    h("pre", { class: "json__body", tabindex: "0" }, JSON.stringify(value, null, 2)),
  );
}

/** A scrollable region that keyboard users can scroll too. */
export function scroller(label, ...children) {
  return h("div", { class: "scroller", role: "region", "aria-label": label, tabindex: "0" }, ...children);
}

/** The breadcrumbs of a page of a bot: Bots › the bot (its conversations) › `current`. */
export function botBreadcrumbs(context, botId, current) {
  return h(
    "nav",
    { class: "breadcrumbs", "aria-label": "Breadcrumbs" },
    h(
      "ol",
      {},
      h("li", {}, h("a", { href: context.href(["bots"]) }, "Bots")),
      h("li", {}, h("a", { href: context.href(["bots", botId, "conversations"]) }, botId)),
      h("li", { "aria-current": "page" }, current),
    ),
  );
}
