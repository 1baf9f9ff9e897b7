// The console's shell: hash routes (ids may be in the hash, the token never is), the
// header's navigation, sign-in state and the live-update indicator.

import { get } from "./api.mjs";
import { h, replace } from "./dom.mjs";
import { onLiveState, stop as stopLive } from "./live.mjs";
import { endSession, finishSignIn, renewSignIn } from "./oidc.mjs";
import { agentPage } from "./pages/agent.mjs";
import { auditPage } from "./pages/audit.mjs";
import { botsPage } from "./pages/bots.mjs";
import { conversationPage } from "./pages/conversation.mjs";
import { listPage } from "./pages/list.mjs";
import { overviewPage } from "./pages/overview.mjs";
import { signInPage } from "./pages/signin.mjs";
import { onChange, person, signOut, token } from "./session.mjs";

const main = document.getElementById("main");
const nav = document.getElementById("site-nav");
const navList = document.getElementById("nav-list");
const session = document.getElementById("session");
const liveStatus = document.getElementById("live-status");
const who = document.getElementById("who");

/** `#/bots/a%2Fb/conversations/c-1?status=active` → ["bots", "a/b", …] and the query. */
function parseHash() {
  const raw = location.hash.replace(/^#/, "");
  const [path, query = ""] = raw.split("?", 2);
  let segments;
  try {
    segments = path
      .split("/")
      .filter(Boolean)
      .map((segment) => decodeURIComponent(segment));
  } catch {
    segments = null;
  }
  return { segments, query: new URLSearchParams(query) };
}

/** The hash of a route, each segment encoded. */
export function href(segments, query = null) {
  const path = `#/${segments.map((segment) => encodeURIComponent(segment)).join("/")}`;
  const text = query
    ? new URLSearchParams(
        Object.entries(query).filter(([, value]) => value !== undefined && value !== null && value !== ""),
      ).toString()
    : "";
  return text ? `${path}?${text}` : path;
}

export function navigate(segments, query = null) {
  const target = href(segments, query);
  if (location.hash === target) route();
  else location.hash = target;
}

botsPage.pageName = "bots";
listPage.pageName = "list";
conversationPage.pageName = "conversation";
agentPage.pageName = "agent";
overviewPage.pageName = "overview";
auditPage.pageName = "audit";

function resolve(segments) {
  if (!segments || segments.length === 0) return { page: botsPage, params: {} };
  if (segments.length === 1 && segments[0] === "audit") return { page: auditPage, params: {} };
  if (segments[0] !== "bots") return null;
  if (segments.length === 1) return { page: botsPage, params: {} };
  const botId = segments[1];
  if (segments.length === 2 || (segments.length === 3 && segments[2] === "conversations")) {
    return { page: listPage, params: { botId } };
  }
  if (segments.length === 3 && segments[2] === "overview") {
    return { page: overviewPage, params: { botId } };
  }
  if (segments.length === 4 && segments[2] === "conversations") {
    return { page: conversationPage, params: { botId, conversationId: segments[3] } };
  }
  if (segments.length === 4 && segments[2] === "agents") {
    return { page: agentPage, params: { botId, identity: segments[3] } };
  }
  return null;
}

let auditProbe = { token: null, allowed: Promise.resolve(false) };

/** Whether the signed-in caller may read the audit log (asked once per token). */
function mayAudit() {
  const current = token();
  if (auditProbe.token !== current) {
    auditProbe = {
      token: current,
      allowed: get("/api/v1/audit?limit=1").then(
        () => true,
        () => false,
      ),
    };
  }
  return auditProbe.allowed;
}

function renderNav(botId, current, auditAllowed) {
  const items = [["Bots", href(["bots"]), current === "bots"]];
  if (botId !== undefined) {
    items.push([`Conversations of ${botId}`, href(["bots", botId, "conversations"]), current === "list"]);
    items.push([`Overview of ${botId}`, href(["bots", botId, "overview"]), current === "overview"]);
  }
  if (auditAllowed) items.push(["Audit log", href(["audit"]), current === "audit"]);
  replace(
    navList,
    items.map(([text, link, isCurrent]) =>
      h("li", {}, h("a", { href: link, "aria-current": isCurrent ? "page" : null }, text)),
    ),
  );
}

const LIVE_TEXT = {
  off: "Live updates off",
  connecting: "Connecting to live updates…",
  reconnecting: "Reconnecting live updates…",
  live: "Live",
  unavailable: "Live updates unavailable",
};

onLiveState(({ state, retryInMs }) => {
  liveStatus.dataset.state = state;
  liveStatus.textContent =
    state === "waiting"
      ? `Live updates interrupted; retrying in ${Math.ceil(retryInMs / 1000)} s`
      : (LIVE_TEXT[state] ?? state);
});

let active = null;
let signInReason = null;

/** Leaves the page shown: aborts its requests, stops its timers and subscriptions. */
function leave(context) {
  if (!context) return;
  context.controller.abort();
  for (const cleanup of context.cleanups.splice(0)) {
    try {
      cleanup();
    } catch {}
  }
}

/** What a page is handed: where to render, its abort signal, and the shell's services. */
function pageContext() {
  const controller = new AbortController();
  return {
    controller,
    cleanups: [],
    signal: controller.signal,
    main,
    navigate,
    href,
    onCleanup(fn) {
      this.cleanups.push(fn);
    },
    /**
     * Puts a page's own state (its controls) in the hash query without leaving the page:
     * no hashchange, no reload, and the shell knows the route it shows.
     */
    replaceQuery(query) {
      const { segments } = parseHash();
      const target = href(segments ?? [], query);
      if (location.hash === target) return;
      history.replaceState(history.state, "", target);
      if (!controller.signal.aborted) main.dataset.route = location.hash;
    },
    setTitle(title) {
      document.title = title ? `${title} — agentassist-hooks console` : "agentassist-hooks console";
    },
    /** Moves focus to the page's heading, so that keyboard and screen reader users start there. */
    focusHeading() {
      main.querySelector("h1")?.focus({ preventScroll: true });
    },
  };
}

/** Marks `main` as showing the page, ready (unless the route changed meanwhile). */
function done(context, pageName) {
  if (context.signal.aborted) return;
  main.dataset.page = pageName;
  main.dataset.route = location.hash;
  main.dataset.ready = "true";
}

async function showSignIn(context) {
  stopLive();
  nav.hidden = true;
  session.hidden = true;
  const reason = signInReason;
  signInReason = null;
  await signInPage(context, { reason });
  done(context, "sign-in");
}

function showNotFound(context) {
  renderNav(undefined, null, false);
  context.setTitle("Not found");
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Page not found"),
    h("p", {}, "There is no such page in the console. ", h("a", { href: "#/" }, "Back to the bots")),
  );
  done(context, "not-found");
}

async function showPage(context, { page, params }) {
  if (params.botId === undefined) stopLive();
  const auditAllowed = await mayAudit();
  if (context.signal.aborted) return;
  renderNav(
    params.botId,
    ["bots", "list", "overview", "audit"].includes(page.pageName) ? page.pageName : null,
    auditAllowed,
  );
  try {
    await page(context, params);
    done(context, page.pageName);
  } catch (error) {
    if (error?.name === "AbortError" || context.signal.aborted) return;
    console.error(error);
    showError(context, error);
  }
}

function showError(context, error) {
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Something went wrong"),
    h(
      "p",
      { class: "notice notice--error", role: "alert" },
      error.describe ? error.describe() : String(error.message ?? error),
    ),
  );
  done(context, "error");
}

async function route() {
  leave(active);
  const context = pageContext();
  active = context;
  main.dataset.ready = "false";

  if (!token()) {
    await showSignIn(context);
    return;
  }
  nav.hidden = false;
  session.hidden = false;
  showWho();

  const { segments, query } = parseHash();
  const match = resolve(segments);
  context.query = query;
  if (match) await showPage(context, match);
  else showNotFound(context);
}

let expiry = null;

/** The signed-in person's name in the header, and their sign-in renewed when it runs out. */
function showWho() {
  const signedIn = person();
  who.hidden = !signedIn;
  who.textContent = signedIn ? signedIn.name : "";
  who.title = signedIn?.email ?? "";
  clearTimeout(expiry);
  // setTimeout takes at most 2^31 - 1 ms (24.8 days); a longer token is renewed early.
  if (signedIn) expiry = setTimeout(renewSignIn, Math.min(Math.max(0, signedIn.expiresAt - Date.now()), 2 ** 31 - 1));
}

onChange(({ signedIn, reason }) => {
  if (!signedIn) {
    clearTimeout(expiry);
    stopLive();
    signInReason = reason ?? null;
  }
  route();
});

document
  .getElementById("sign-out")
  .addEventListener("click", () => endSession("You are signed out. The token was removed from this tab."));

// The skip link must not change the route.
document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", () => {
  if (location.hash === "#main") return;
  route();
});

finishSignIn().then(route, (error) => {
  console.error(error);
  // Whatever was kept before (an expired token) goes: the sign-in page says why.
  signOut(`Signing in did not complete: ${error.message ?? error}`);
});
