// The ops console (SPEC 9) in a real browser: Debian's Chromium driven by playwright-core,
// against the release binary on a fresh embedded SQLite database. The binary serves the
// console itself; set CONSOLE_FROM_SOURCE=1 to serve console/public/ from disk instead
// (console/dev-server.mjs in front of the same binary) while working on the front end.
//
//   AGENTASSIST_HOOKS_BINARY=target/ci-release/agentassist-hooks node --test console/test/
//
// Screenshots of each page at 1280x800 and 390x844 go to target/console-screenshots/.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const BOT = "st-console";
const OTHER_BOT = "st-hidden";
const repository = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = resolve(repository, process.env.AGENTASSIST_HOOKS_BINARY ?? "target/ci-release/agentassist-hooks");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const screenshots = join(repository, "target", "console-screenshots");
const WIDE = { width: 1280, height: 800 };
const NARROW = { width: 390, height: 844 };
/** How long a live update may take to show (the issue's bound). */
const LIVE_MS = 2000;
/** Page loads and the like: generous, since CI machines are slow; nothing waits this long when all is well. */
const LOAD_MS = 15000;
const XSS_NAME = "<img src=x onerror=alert(1)>";
const XSS_CONVERSATION = 'c-"><svg onload=alert(2)>';
const COLD = "atesta-cold-1";
const WARM = "atesta-warm-1";
const LIVE = "atesta-live-1";
const ESCALATION = "sf-escalation-1";
const ODD = "atesta-odd-1";
const OVERVIEW_LIVE = "atesta-overview-live-1";

let work;
let service;
let serviceLog = [];
let serviceUrl;
let baseUrl;
let devServer;
let ingestToken;
let readToken;
let browser;
let page;
const dialogs = [];
const pageErrors = [];
const cspViolations = [];
const requestUrls = [];

// ---- the service -------------------------------------------------------------------------

/** Resolves to the address the service logs once it listens (it binds port 0). */
function listeningAddress(child) {
  return new Promise((resolvePromise, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(
      () => reject(new Error(`the service did not log its address:\n${serviceLog.join("\n")}`)),
      30000,
    );
    lines.on("line", (line) => {
      serviceLog.push(line);
      if (serviceLog.length > 200) serviceLog = serviceLog.slice(-100);
      const match = /"address":"([^"]+)"/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolvePromise(match[1]);
      }
    });
    child.stderr.on("data", (data) => serviceLog.push(String(data)));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the service exited (${code}) before listening:\n${serviceLog.join("\n")}`));
    });
  });
}

/** Polls /readyz until it says 200 (or 15 s pass); resolves to the last status. */
async function readiness() {
  const deadline = Date.now() + 15000;
  for (;;) {
    const status = (await fetch(`${serviceUrl}/readyz`)).status;
    if (status === 200 || Date.now() > deadline) return status;
    await new Promise((wait) => setTimeout(wait, 50));
  }
}

async function call(method, path, body, token = ingestToken) {
  const response = await fetch(`${serviceUrl}${path}`, {
    method,
    headers: { "content-type": "application/json", token },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 200, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** One hooks request, as the vendor's samples send it. */
function hook(conversationId, ...events) {
  return call("POST", `/agentassist/api/v1/hooks/${BOT}`, { conversationId, botId: BOT, events });
}

function transfer(transfertype, transition, identity, name = identity.replace("agentId", "AgentName"), extra = {}) {
  return {
    name: "INTERNAL_TRANSFER_EVENT",
    transfertype,
    transition,
    isExtAD: true,
    language: "en",
    experience: "voice",
    participant: { identity, name, type: "agent" },
    ...extra,
  };
}

/** A pause between the steps of a flow, only so that the screenshots' bars have some length. */
const step = () => new Promise((wait) => setTimeout(wait, 120));

async function seed() {
  // The seed's cold transfer flow: Agent-1 takes the call, hands it to Agent-2, then Agent-3.
  for (const event of [
    transfer("NA", "entry", "agentId1"),
    transfer("COLD", "exit", "agentId1"),
    transfer("COLD", "entry", "agentId2"),
    transfer("COLD", "exit", "agentId2"),
    transfer("COLD", "entry", "agentId3"),
    transfer("NA", "exit", "agentId3"),
  ]) {
    await hook(COLD, event);
    await step();
  }
  // The seed's warm transfer flow: Agent-1 invites Agent-2, then Agent-3, as consultants.
  for (const event of [
    transfer("NA", "entry", "agentId1"),
    transfer("WARM", "entry", "agentId2"),
    transfer("WARM", "entry", "agentId3"),
    transfer("WARM", "exit", "agentId2"),
    transfer("WARM", "exit", "agentId3"),
    transfer("NA", "exit", "agentId1"),
  ]) {
    await hook(WARM, event);
    await step();
  }
  // A Salesforce bot escalates; the first routing fails, the second reaches Agent-3.
  const botMessages = `/api/v1/bots/${BOT}/conversations/${ESCALATION}/bot-messages`;
  await call("POST", botMessages, { message: { type: "escalate", targets: [{ type: "Skill", value: "billing" }] } });
  await step();
  await call("POST", botMessages, { message: { type: "transferFailed", sequenceId: 2, reason: "NoAgentAvailable" } });
  await step();
  await call("POST", botMessages, { message: { type: "escalate", targets: [{ type: "Skill", value: "billing" }] } });
  await step();
  await call("POST", botMessages, { message: { type: "transferSucceeded", sequenceId: 4 } });
  await step();
  await hook(ESCALATION, { ...transfer("COLD", "entry", "agentId3"), experience: "chat" });
  await step();
  await hook(ESCALATION, { ...transfer("NA", "exit", "agentId3"), experience: "chat" });
  // Out of order on purpose: an exit before any entry and a second entry are anomalies.
  await hook(ODD, transfer("COLD", "exit", "agentId5", "Erin Five"));
  await step();
  await hook(ODD, transfer("NA", "entry", "agentId5", "Erin Five"));
  await step();
  await hook(ODD, transfer("NA", "entry", "agentId5", "Erin Five"));
  // Still going: a Bright Pattern interaction, Agent-4 with Agent-2 consulting, transfer data.
  await call("POST", `/api/v1/bots/${BOT}/interactions`, {
    agentId: "agentId4",
    conversationId: LIVE,
    interaction: {
      interactionId: "int-7731",
      type: "voice",
      state: "delivered",
      service: "Billing",
      callDirection: "inbound",
      subject: "Invoice 7 is wrong",
      startTime: Date.now(),
      callParties: [{ id: "p-1", name: "Customer", phone: "+15550100" }],
    },
  });
  await hook(LIVE, transfer("NA", "entry", "agentId4", "Dana Four"));
  await step();
  await hook(LIVE, transfer("WARM", "entry", "agentId2"));
  await call("PUT", `/api/v1/bots/${BOT}/conversations/${LIVE}/transfer-data`, {
    participant: { identity: "agentId4", name: "Dana Four", type: "agent" },
    data: { caseUrl: "https://crm.example.com/case/7731", notes: ["asked about invoice 7", "wants a callback"] },
  });
  // Another bot the read token may not see.
  await call("POST", `/agentassist/api/v1/hooks/${OTHER_BOT}`, {
    conversationId: "c-hidden",
    botId: OTHER_BOT,
    events: [transfer("NA", "entry", "agentId9")],
  });
}

before(async () => {
  assert.ok(existsSync(binary), `the release binary is built: ${binary} (set AGENTASSIST_HOOKS_BINARY)`);
  assert.ok(existsSync(chromiumPath), `Chromium is installed at ${chromiumPath} (apt-get install chromium)`);
  work = mkdtempSync(join(tmpdir(), "hooks-console-"));
  writeFileSync(
    join(work, "console.toml"),
    `[server]\nbind = "127.0.0.1:0"\n\n[database]\nurl = "sqlite://${work}/hooks.db"\n\n[log]\nformat = "json"\nfilter = "info"\n\n` +
      `[[apps]]\napp_id = "console-ingest"\nsecret_env = "CONSOLE_INGEST_SECRET"\nbots = ["*"]\npermissions = ["ingest"]\n\n` +
      `[[apps]]\napp_id = "console-viewer"\nsecret_env = "CONSOLE_VIEWER_SECRET"\nbots = ["${BOT}"]\npermissions = ["read"]\n`,
  );
  const env = {
    ...process.env,
    CONSOLE_INGEST_SECRET: "console-ingest-secret-0123456789abcdef",
    CONSOLE_VIEWER_SECRET: "console-viewer-secret-0123456789abcdef",
  };
  delete env.DATABASE_URL;
  delete env.RUST_LOG;
  for (const key of Object.keys(env)) if (key.startsWith("HOOKS__")) delete env[key];
  service = spawn(binary, ["--config", join(work, "console.toml"), "serve"], {
    cwd: work,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  serviceUrl = `http://${await listeningAddress(service)}`;
  const mint = (app, secret) =>
    execFileSync(binary, ["token", "--app-id", app, "--secret-env", secret], { env }).toString().trim();
  ingestToken = mint("console-ingest", "CONSOLE_INGEST_SECRET");
  readToken = mint("console-viewer", "CONSOLE_VIEWER_SECRET");
  // The service listens before its database is ready (SPEC 14: /healthz answers while it
  // keeps trying the database), so /readyz may say 503 for a moment: wait for 200.
  assert.equal(await readiness(), 200, "the service becomes ready soon after it listens");

  if (process.env.CONSOLE_FROM_SOURCE) {
    const { startDevServer } = await import("../dev-server.mjs");
    devServer = await startDevServer({ target: serviceUrl });
    baseUrl = devServer.url;
  } else {
    baseUrl = serviceUrl;
  }

  await seed();
  mkdirSync(screenshots, { recursive: true });

  // No browser download: the system's Chromium, without its background network chatter.
  try {
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  } catch (error) {
    throw new Error(`Chromium (${chromiumPath}) could not start, so the console cannot be tested: ${error.message}`);
  }
  const context = await browser.newContext({ viewport: WIDE, reducedMotion: "reduce" });
  page = await context.newPage();
  page.setDefaultTimeout(LOAD_MS);
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("console", (message) => {
    if (/content security policy/i.test(message.text())) cspViolations.push(message.text());
  });
  page.on("request", (request) => requestUrls.push(request.url()));
});

after(async () => {
  await browser?.close();
  await devServer?.close();
  if (service && service.exitCode === null) {
    const exited = new Promise((done) => service.once("exit", done));
    service.kill("SIGTERM");
    await exited;
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

// ---- helpers -----------------------------------------------------------------------------

const testid = (id) => `[data-testid="${id}"]`;

/**
 * Waits for a page of the console to finish loading; with `hashPart`, the page of a route
 * whose hash contains it (so that the page before a navigation is never taken for it).
 */
async function ready(name, hashPart = null) {
  await page.waitForFunction(
    ([expected, part]) => {
      const main = document.querySelector("main");
      return (
        main.dataset.ready === "true" &&
        main.dataset.page === expected &&
        (part === null || (main.dataset.route ?? "").includes(part)) &&
        location.hash === (main.dataset.route ?? location.hash)
      );
    },
    [name, hashPart],
  );
}

async function shoot(name) {
  for (const [label, viewport] of [
    ["1280", WIDE],
    ["390", NARROW],
  ]) {
    await page.setViewportSize(viewport);
    // The chart redraws for its new width on the next frame.
    await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
    await page.screenshot({ path: join(screenshots, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize(WIDE);
}

async function waitLive() {
  await page.locator('#live-status[data-state="live"]').waitFor();
}

/** A GET of the query API with the read token, as the console makes it. */
async function api(path, params = {}) {
  const query = new URLSearchParams(
    Object.entries(params).filter(([, value]) => value !== undefined && value !== null && value !== ""),
  ).toString();
  const response = await fetch(`${serviceUrl}/api/v1/bots/${BOT}${path}${query ? `?${query}` : ""}`, {
    headers: { token: readToken },
  });
  const text = await response.text();
  assert.equal(response.status, 200, `GET ${path}?${query}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** The range the overview shows (its data attributes), once its figures are loaded. */
async function overviewRange(zone = null) {
  const selector = `${testid("overview-range")}[data-state="ready"]${zone ? `[data-time-zone="${zone}"]` : ""}`;
  await page.locator(selector).waitFor();
  return page.locator(selector).evaluate((node) => ({ ...node.dataset }));
}

/** The stats the overview's chart was drawn from, asked of the API with the same range. */
function statsLike(range, extra = {}) {
  return api("/stats", {
    from: range.from,
    to: range.to,
    timeZone: range.timeZone,
    granularity: range.granularity,
    ...extra,
  });
}

const tileText = (id) => page.locator(testid(id)).textContent();

// ---- the tests ---------------------------------------------------------------------------

test("the console is built into the binary and served with a strict Content-Security-Policy", async () => {
  const response = await fetch(`${baseUrl}/console/`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type"), /^text\/html/);
  const csp = response.headers.get("content-security-policy");
  assert.ok(csp, "a Content-Security-Policy header");
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/, "scripts from the origin only: no inline script, no eval");
  assert.match(csp, /style-src 'self'(;|$)/, "no inline style");
  assert.match(csp, /connect-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  assert.equal(response.headers.get("referrer-policy"), "no-referrer");
  const html = await response.text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, "no inline script in the page");
  assert.doesNotMatch(html, /\sstyle=|\son[a-z]+=/i, "no inline style or event handler attributes");
  const script = await fetch(`${baseUrl}/console/js/main.mjs`);
  assert.equal(script.status, 200);
  assert.match(script.headers.get("content-type"), /^text\/javascript/);
  assert.ok(script.headers.get("content-security-policy"), "every console file carries the policy");
});

test("signing in with a pasted read token lists the bot's conversations", async () => {
  await page.goto(`${baseUrl}/console/`);
  await ready("sign-in");
  await shoot("sign-in");
  // A wrong token is refused with a clear message, and the form stays.
  await page.getByLabel("Read token (JWT)").fill(`${readToken.slice(0, -4)}AAAA`);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(testid("sign-in-message")).filter({ hasText: "refused the token" }).waitFor();

  await page.getByLabel("Read token (JWT)").fill(readToken);
  await page.getByRole("button", { name: "Sign in" }).click();
  await ready("bots");
  const bots = page.locator(testid("bot-link"));
  await bots.first().waitFor();
  await shoot("bots");
  assert.deepEqual(await bots.allTextContents(), [BOT], "only the bots this token may read");
  assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing in localStorage");
  assert.equal(await page.evaluate(() => Object.values(sessionStorage).length), 1, "the token in sessionStorage");

  await bots.first().click();
  await ready("list");
  const rows = page.locator(testid("conversation-row"));
  await rows.filter({ hasText: COLD }).waitFor();
  const ids = await rows.evaluateAll((nodes) => nodes.map((node) => node.dataset.conversationId));
  assert.deepEqual(new Set(ids), new Set([COLD, WARM, ESCALATION, ODD, LIVE]));
  assert.equal(ids[0], LIVE, "newest activity first");
  assert.equal(await rows.filter({ hasText: COLD }).locator(testid("status-badge")).textContent(), "ended");

  // The status filter goes to the API and into the hash (never the token).
  await page.getByLabel("Status").selectOption("active");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await ready("list", "status=active");
  assert.deepEqual(
    new Set(await rows.evaluateAll((nodes) => nodes.map((node) => node.dataset.conversationId))),
    new Set([LIVE, ODD]),
  );
  await page.getByRole("button", { name: "Clear" }).click();
  await page.waitForFunction(() => !location.hash.includes("status="));
  await ready("list");
  assert.ok(!(await page.evaluate(() => location.hash)).includes("status="));
  await rows.filter({ hasText: COLD }).waitFor();
  await waitLive();
  await shoot("list");
});

test("Tab reaches a conversation row and Enter opens the conversation", async () => {
  await ready("list");
  let reached = false;
  for (let presses = 0; presses < 80 && !reached; presses += 1) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(
      (id) =>
        document.activeElement?.dataset?.key === id &&
        document.activeElement.closest("tr")?.dataset.testid === "conversation-row",
      COLD,
    );
  }
  assert.ok(reached, "Tab reaches the cold conversation's row");
  await page.keyboard.press("Enter");
  await ready("conversation", `/conversations/${COLD}`);
  assert.equal(await page.locator(testid("conversation-title")).textContent(), COLD);
  assert.ok((await page.evaluate(() => location.hash)).endsWith(`/conversations/${COLD}`));
});

test("the cold conversation's chart: three bars in order of entry and two COLD hops", async () => {
  await ready("conversation");
  const bars = page.locator(testid("stint-bar"));
  await bars.first().waitFor();
  const drawn = await bars.evaluateAll((nodes) =>
    nodes.map((node) => ({
      identity: node.dataset.identity,
      row: Number(node.dataset.rowIndex),
      top: node.getBoundingClientRect().top,
      name: node.getAttribute("aria-label"),
    })),
  );
  assert.equal(drawn.length, 3, "one bar per stint");
  assert.deepEqual(
    drawn.map((bar) => bar.identity),
    ["agentId1", "agentId2", "agentId3"],
  );
  assert.deepEqual(
    drawn.map((bar) => bar.row),
    [0, 1, 2],
    "a row each, in order of first entry",
  );
  assert.ok(drawn[0].top < drawn[1].top && drawn[1].top < drawn[2].top, "rows top to bottom");
  assert.match(drawn[0].name, /^agentId1 \(AgentName1\), NA entry \d\d:\d\d:\d\d to COLD exit \d\d:\d\d:\d\d/);
  assert.match(drawn[1].name, /^agentId2 \(AgentName2\), COLD entry .* to COLD exit /);
  assert.match(drawn[2].name, /^agentId3 \(AgentName3\), COLD entry .* to NA exit /);
  const labels = await page
    .locator(testid("timeline-row-label"))
    .evaluateAll((nodes) => nodes.map((node) => node.dataset.row));
  assert.deepEqual(labels, ["agentId1", "agentId2", "agentId3"]);

  const hops = page.locator(`${testid("hop")}[data-kind="COLD"]`);
  assert.equal(await hops.count(), 2, "two COLD hops");
  const hopEnds = await hops.evaluateAll((nodes) =>
    nodes.map((node) => [node.dataset.from, node.dataset.to, node.dataset.outcome]),
  );
  assert.deepEqual(hopEnds, [
    ["agentId1", "agentId2", "completed"],
    ["agentId2", "agentId3", "completed"],
  ]);
  assert.equal(await page.locator(testid("hop")).count(), 2, "and no other hop");
  assert.equal(await page.locator(testid("event-row")).count(), 6);

  // A bar is a button: Enter shows the stint, with a link to the agent's page.
  await bars.nth(1).focus();
  await page.keyboard.press("Enter");
  await page
    .locator(testid("stint-details"))
    .getByRole("link", { name: /agentId2/ })
    .waitFor();
  await shoot("conversation");
});

test("a new event appears on the open conversation page within 2 s, without a reload", async () => {
  await ready("conversation");
  await waitLive();
  const navigations = [];
  page.on("framenavigated", (frame) => navigations.push(frame.url()));
  const before = await page.evaluate(() => performance.timeOrigin);

  const appeared = page.locator(`${testid("event-row")}[data-seq="7"]`).waitFor({ timeout: LIVE_MS });
  // The customer calls back: a REDIAL reopens the ended conversation.
  await hook(COLD, transfer("REDIAL", "entry", "agentId1"));
  await appeared;

  assert.equal(await page.evaluate(() => performance.timeOrigin), before, "the page was not reloaded");
  assert.deepEqual(navigations, []);
  assert.equal(await page.locator(testid("stint-bar")).count(), 4, "the new stint is drawn");
  assert.equal(await page.locator(`${testid("stint-bar")}[data-open="true"]`).count(), 1, "and it is open");
  assert.equal(await page.locator(`${testid("hop")}[data-kind="REDIAL"]`).count(), 1);
  assert.equal(
    await page.locator(testid("conversation-summary")).locator(testid("status-badge")).textContent(),
    "active",
  );
});

test("a participant named like markup is shown as text: no element, no script", async () => {
  await ready("conversation");
  await waitLive();
  const appeared = page
    .locator(testid("event-participant-name"))
    .filter({ hasText: XSS_NAME })
    .waitFor({ timeout: LIVE_MS });
  await hook(COLD, transfer("WARM", "entry", "agent-xss", XSS_NAME));
  await appeared;

  const shown = page.locator(testid("event-participant-name")).filter({ hasText: XSS_NAME });
  assert.equal(await shown.textContent(), XSS_NAME, "the name, character for character");
  await page.locator(testid("timeline-row-label")).filter({ hasText: XSS_NAME }).waitFor();
  assert.equal(await page.locator("img").count(), 0, "no <img> was made from it");
  assert.equal(await page.locator("[onerror], [onload]").count(), 0);

  // A conversation id like markup, on the list.
  await hook(XSS_CONVERSATION, transfer("NA", "entry", "agentId1"));
  await page.getByRole("link", { name: `Conversations of ${BOT}` }).click();
  await ready("list");
  await page.locator(testid("conversation-link")).filter({ hasText: XSS_CONVERSATION }).waitFor();
  assert.equal(await page.locator("svg[onload], [onload], [onerror], img").count(), 0);
  assert.deepEqual(dialogs, [], "no dialog ever opened");
});

test("the agent page shows the agent's stints across conversations on one time axis", async () => {
  await page.locator(testid("conversation-link")).filter({ hasText: COLD }).click();
  await ready("conversation", `/conversations/${COLD}`);
  await page.locator(testid("timeline-row-label")).filter({ hasText: "AgentName2" }).getByRole("link").click();
  await ready("agent", "/agents/agentId2");
  assert.equal(await page.locator(testid("agent-title")).textContent(), "agentId2");
  const bars = page.locator(testid("stint-bar"));
  const drawn = await bars.evaluateAll((nodes) =>
    nodes.map((node) => [node.dataset.conversationId, node.dataset.open]),
  );
  assert.deepEqual(
    drawn.sort(),
    [
      [COLD, "false"],
      [LIVE, "true"],
      [WARM, "false"],
    ],
    "one bar per stint: the cold and warm flows, and the conversation still going",
  );
  assert.equal(await page.locator(testid("agent-stint-row")).count(), 3);
  await shoot("agent");

  // A bar opens its conversation.
  await page.locator(`${testid("stint-bar")}[data-conversation-id="${LIVE}"]`).focus();
  await page.keyboard.press("Enter");
  await ready("conversation", `/conversations/${LIVE}`);
  assert.equal(await page.locator(testid("conversation-title")).textContent(), LIVE);
  await page.locator(testid("transfer-data-json")).filter({ hasText: "crm.example.com/case/7731" }).waitFor();
  await page.locator(testid("interaction")).filter({ hasText: "Billing" }).waitFor();
  assert.equal(await page.locator(`${testid("stint-bar")}[data-open="true"]`).count(), 2, "two agents still present");
  await shoot("conversation-live");
});

test("hops of every kind and anomalies are drawn, and can be told apart", async () => {
  await page.goto(`${baseUrl}/console/#/bots/${BOT}/conversations/${ESCALATION}`);
  await ready("conversation", `/conversations/${ESCALATION}`);
  const escalations = await page
    .locator(`${testid("hop")}[data-kind="ESCALATION"]`)
    .evaluateAll((nodes) => nodes.map((node) => [node.dataset.outcome, node.dataset.to]));
  assert.deepEqual(escalations, [
    ["failed", ""],
    ["completed", "agentId3"],
  ]);
  await shoot("conversation-escalation");

  await page.goto(`${baseUrl}/console/#/bots/${BOT}/conversations/${ODD}`);
  await ready("conversation", `/conversations/${ODD}`);
  const anomalies = await page
    .locator(testid("anomaly-marker"))
    .evaluateAll((nodes) => nodes.map((node) => node.getAttribute("aria-label")));
  assert.equal(anomalies.length, 2);
  assert.match(anomalies[0], /exit_without_entry/);
  assert.match(anomalies[1], /duplicate_entry/);
});

/** A pass-through proxy in front of the service that can cut every connection at once. */
async function cuttableProxy() {
  const sockets = new Set();
  const streamRequests = [];
  const server = createServer((request, response) => {
    if (request.url.includes("/changes/stream")) streamRequests.push(request.headers);
    const upstream = new URL(request.url, baseUrl);
    const outgoing = httpRequest(
      upstream,
      { method: request.method, headers: { ...request.headers, host: upstream.host } },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    outgoing.on("error", () => response.destroy());
    response.on("close", () => outgoing.destroy());
    request.pipe(outgoing);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise((listening) => server.listen(0, "127.0.0.1", listening));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    streamRequests,
    cut: () => {
      for (const socket of sockets) socket.destroy();
    },
    close: () =>
      new Promise((closed) => {
        server.closeAllConnections();
        server.close(closed);
      }),
  };
}

test("a cut stream reconnects by itself, resumes with Last-Event-ID, and misses nothing", async () => {
  const proxy = await cuttableProxy();
  const context = await browser.newContext({ viewport: WIDE });
  try {
    const other = await context.newPage();
    other.setDefaultTimeout(LOAD_MS);
    other.on("pageerror", (error) => pageErrors.push(String(error)));
    await other.goto(`${proxy.url}/console/#/bots/${BOT}/conversations/${COLD}`);
    await other.getByLabel("Read token (JWT)").fill(readToken);
    await other.getByRole("button", { name: "Sign in" }).click();
    await other.locator('main[data-page="conversation"][data-ready="true"]').waitFor();
    await other.locator('#live-status[data-state="live"]').waitFor();
    const shown = await other.locator(testid("event-row")).count();

    proxy.cut();
    await other.locator('#live-status:not([data-state="live"])').waitFor();
    await other.locator('#live-status[data-state="live"]').waitFor();
    assert.ok(proxy.streamRequests.length >= 2, "the stream was opened again");
    assert.ok(proxy.streamRequests.at(-1)["last-event-id"], "with the last position it had");
    assert.ok(!proxy.streamRequests.at(0)["last-event-id"], "(the first time without one)");

    const appeared = other.locator(`${testid("event-row")}[data-seq="${shown + 1}"]`).waitFor({ timeout: LIVE_MS });
    await hook(COLD, transfer("WARM", "exit", "agent-xss", XSS_NAME));
    await appeared;
  } finally {
    await context.close();
    await proxy.close();
  }
});

test("the overview shows what is happening now and the range's figures, as the API counts them", async () => {
  await page.goto(`${baseUrl}/console/#/bots`);
  await ready("bots");
  await page.locator(testid("bot-overview-link")).first().click();
  await ready("overview", `/bots/${BOT}/overview`);
  assert.equal(
    await page.getByRole("link", { name: `Overview of ${BOT}` }).getAttribute("aria-current"),
    "page",
    "the header's link to the overview is current",
  );
  assert.equal(await page.locator(testid("overview-title")).textContent(), "Overview");

  // Now (SPEC 11.2): the tiles say what the API says.
  const now = await api("/stats/now");
  assert.equal(await tileText("now-active"), String(now.conversations.active));
  assert.equal(await tileText("now-idle"), String(now.conversations.idle));
  assert.equal(await tileText("now-present"), String(now.participantsPresent));
  assert.ok(
    now.conversations.active >= 2 && now.participantsPresent >= 2,
    "the seed left conversations going, with people present",
  );
  assert.ok(now.longestOpenStint, "someone has been present for a while");
  const longest = page.locator(testid("now-longest-agent"));
  assert.equal(await longest.textContent(), now.longestOpenStint.identity);
  assert.equal(
    await longest.getAttribute("href"),
    `#/bots/${BOT}/agents/${encodeURIComponent(now.longestOpenStint.identity)}`,
  );
  assert.equal(
    await page.locator(testid("now-longest-conversation")).getAttribute("href"),
    `#/bots/${BOT}/conversations/${encodeURIComponent(now.longestOpenStint.conversationId)}`,
  );
  const queueRows = page.locator(testid("now-queue-row"));
  assert.equal(await queueRows.count(), now.byQueue.length);
  for (const row of now.byQueue) {
    const shown = page.locator(`${testid("now-queue-row")}[data-queue="${row.queue ?? ""}"]`);
    assert.equal(await shown.locator('[data-column="present"]').textContent(), String(row.present));
    assert.equal(
      await shown.locator('[data-column="activeConversations"]').textContent(),
      String(row.activeConversations),
    );
  }

  // The chart: a group of bars per hour, each bar the API's count for that hour.
  const range = await overviewRange();
  assert.equal(range.granularity, "PT1H", "the last 24 hours, hour by hour");
  assert.equal(
    range.timeZone,
    await page.evaluate(() => Intl.DateTimeFormat().resolvedOptions().timeZone),
    "in the browser's time zone by default",
  );
  const series = await statsLike(range);
  const buckets = series.results[0]?.buckets ?? [];
  assert.ok(buckets.length >= 1, "the seed is counted in the range");
  assert.ok(
    buckets.reduce((sum, bucket) => sum + bucket.conversations.started, 0) >= 5,
    "the seed's conversations are counted as started",
  );
  const groups = page.locator(testid("chart-group"));
  assert.ok((await groups.count()) >= 24, "every hour of the range has a group, with data or not");
  for (const bucket of buckets) {
    const group = page.locator(`${testid("chart-group")}[data-key="${bucket.start}"]`);
    assert.equal(await group.count(), 1, `a group for the hour starting ${bucket.start}`);
    const bars = await group
      .locator(testid("chart-bar"))
      .evaluateAll((nodes) =>
        Object.fromEntries(nodes.map((node) => [node.dataset.series, Number(node.dataset.value)])),
      );
    const expected = {
      started: bucket.conversations.started,
      cold: bucket.transfers.cold,
      warm: bucket.transfers.warm,
      redial: bucket.transfers.redial,
      escalated: bucket.transfers.escalated,
    };
    assert.deepEqual(
      bars,
      Object.fromEntries(Object.entries(expected).filter(([, value]) => value > 0)),
      `the bars of ${bucket.start}`,
    );
    const row = page.locator(`${testid("chart-table-row")}[data-start="${bucket.start}"]`);
    assert.equal(
      await row.locator('[data-series="started"]').textContent(),
      String(bucket.conversations.started),
      "the data table has the same numbers",
    );
  }
  assert.equal(await page.locator(testid("chart-table-row")).count(), buckets.length);
  const image = page.locator(testid("bar-chart-svg"));
  assert.equal(await image.getAttribute("role"), "img");
  assert.match(await image.getAttribute("aria-label"), /conversations started and transfers by kind per hour/);

  // Stints by participant: counts and cold transfers as the API counts them; agents link to their page.
  const byParticipant = await statsLike(range, { granularity: "all", groupBy: "participant" });
  const rows = page.locator(testid("participant-row"));
  assert.equal(await rows.count(), byParticipant.results.length);
  assert.ok(
    byParticipant.results.some(
      (result) => result.group.participant === "agentId1" && result.buckets[0].stints.count >= 2,
    ),
  );
  for (const result of byParticipant.results) {
    const identity = result.group.participant;
    const row = page.locator(`${testid("participant-row")}[data-key="${identity ?? ""}"]`);
    const [bucket] = result.buckets;
    assert.equal(
      await row.locator('[data-column="stints"]').textContent(),
      String(bucket.stints.count),
      `stints of ${identity}`,
    );
    assert.equal(
      await row.locator('[data-column="cold"]').textContent(),
      String(bucket.transfers.cold),
      `cold transfers of ${identity}`,
    );
    assert.equal(
      await row.locator('[data-column="out"]').textContent(),
      String(bucket.transfers.out),
      `transfers out of ${identity}`,
    );
    if (identity !== null)
      assert.equal(
        await row.getByRole("link").getAttribute("href"),
        `#/bots/${BOT}/agents/${encodeURIComponent(identity)}`,
      );
  }
  assert.match(
    await page.locator(`${testid("participant-row")}[data-key="agentId1"] [data-column="p50"]`).textContent(),
    /^\d+(\.\d)?(ms|s)$|^\d+m \d+s$/,
    "durations like 4m 12s",
  );
  const byQueue = await statsLike(range, { granularity: "all", groupBy: "queue" });
  assert.equal(await page.locator(testid("queue-row")).count(), byQueue.results.length);

  // Escalations and anomalies of the range.
  const totals = (await statsLike(range, { granularity: "all" })).results[0].buckets[0];
  assert.equal(await tileText("escalations-raised"), String(totals.transfers.escalated));
  assert.equal(await tileText("escalations-completed"), String(totals.transfers.escalationsCompleted));
  assert.equal(await tileText("escalations-failed"), String(totals.transfers.escalationsFailed));
  assert.ok(
    totals.transfers.escalationsFailed >= 1 && totals.transfers.escalationsCompleted >= 1,
    "the seed's escalation failed once, then completed",
  );
  assert.equal(await tileText("escalations-success-rate"), `${totals.escalationSuccessRate * 100} %`);
  const anomalies = await page
    .locator(testid("anomaly-row"))
    .evaluateAll((nodes) =>
      Object.fromEntries(nodes.map((node) => [node.dataset.code, Number(node.lastElementChild.textContent)])),
    );
  assert.deepEqual(anomalies, totals.anomalies);
  assert.ok(anomalies.duplicate_entry >= 1 && anomalies.exit_without_entry >= 1);
});

test("the agent table sorts with the keyboard: Enter on a header button sorts, again reverses", async () => {
  await ready("overview");
  const table = page.locator(testid("participant-table"));
  const stintCounts = () =>
    table
      .locator(`${testid("participant-row")} [data-column="stints"]`)
      .evaluateAll((nodes) => nodes.map((node) => Number(node.textContent)));
  const identities = () =>
    table.locator(testid("participant-row")).evaluateAll((nodes) => nodes.map((node) => node.dataset.key));
  assert.equal(
    await table.locator('thead th[data-column="group"]').getAttribute("aria-sort"),
    "ascending",
    "by participant at first",
  );
  // Facts of no known participant (an anomaly without one) are a row of their own, last.
  const first = (await identities()).filter((identity) => identity !== "");
  assert.deepEqual(
    first,
    [...first].sort((a, b) => a.localeCompare(b, "en", { numeric: true, sensitivity: "base" })),
  );
  assert.ok(new Set(await stintCounts()).size >= 2, "(the counts differ, so the order says something)");

  // Tab from the first header button reaches the next; Enter sorts by it.
  await table.getByRole("button", { name: "Participant" }).focus();
  await page.keyboard.press("Tab");
  assert.equal(
    await page.evaluate(() => document.activeElement?.closest("th")?.dataset.column),
    "stints",
    "Tab reaches the Stints header button",
  );
  await page.keyboard.press("Enter");
  const stintsHeader = table.locator('thead th[data-column="stints"]');
  assert.equal(await stintsHeader.getAttribute("aria-sort"), "ascending");
  assert.equal(
    await table.locator('thead th[data-column="group"]').getAttribute("aria-sort"),
    null,
    "one column says it is sorted",
  );
  const ascending = await stintCounts();
  assert.deepEqual(
    ascending,
    [...ascending].sort((a, b) => a - b),
    "fewest stints first",
  );

  await page.keyboard.press("Enter");
  assert.equal(await stintsHeader.getAttribute("aria-sort"), "descending");
  assert.deepEqual(await stintCounts(), [...ascending].reverse(), "again: most stints first");
  assert.equal(
    await page.evaluate(() => document.activeElement?.closest("th")?.dataset.column),
    "stints",
    "the button keeps the focus",
  );

  await page.keyboard.press("Space");
  assert.equal(await stintsHeader.getAttribute("aria-sort"), "ascending", "Space sorts too");
  assert.deepEqual(await stintCounts(), ascending);
});

test("switching the overview's time zone changes the buckets' labels (UTC and Kathmandu, +05:45)", async () => {
  await ready("overview");
  const zone = page.getByLabel("Time zone", { exact: true });
  assert.equal(
    await zone.inputValue(),
    await page.evaluate(() => Intl.DateTimeFormat().resolvedOptions().timeZone),
    "the browser's zone by default",
  );

  const labelsIn = async (name) => {
    await zone.selectOption(name);
    const range = await overviewRange(name);
    assert.equal(range.timeZone, name);
    const api = await statsLike(range);
    const starts = (api.results[0]?.buckets ?? []).map((bucket) => bucket.start);
    const shown = await page
      .locator(testid("chart-table-row"))
      .evaluateAll((nodes) => nodes.map((node) => node.dataset.start));
    assert.deepEqual(shown, starts, `the hours the API counted in ${name}`);
    const labels = await page.locator(`${testid("chart-table-row")} th`).allTextContents();
    const groupKeys = await page
      .locator(testid("chart-group"))
      .evaluateAll((nodes) => nodes.map((node) => node.dataset.key));
    const axis = await page.locator(".bars__label").allTextContents();
    return { starts, labels, groupKeys, axis };
  };

  const utc = await labelsIn("UTC");
  const kathmandu = await labelsIn("Asia/Kathmandu");
  assert.ok(
    (await page.evaluate(() => location.hash)).includes("tz=Asia%2FKathmandu"),
    "the zone is in the hash, to share the view",
  );
  await ready("overview", "tz=Asia%2FKathmandu");
  await shoot("overview-kathmandu");

  for (const start of utc.groupKeys) assert.match(start, /(\+00:00|Z)$/, "UTC buckets");
  for (const start of kathmandu.groupKeys)
    assert.match(start, /:00:00\+05:45$/, "Kathmandu hours start at its own :00, at +05:45");
  for (const [index, start] of kathmandu.starts.entries()) {
    assert.ok(
      kathmandu.labels[index].endsWith(start.slice(11, 16)),
      `the label of ${start} is its local hour: ${kathmandu.labels[index]}`,
    );
    assert.ok(kathmandu.axis.includes(start.slice(11, 16)), `the axis shows ${start.slice(11, 16)}`);
  }
  assert.notDeepEqual(utc.labels, kathmandu.labels, "the labels changed with the zone");
  assert.notDeepEqual(utc.axis, kathmandu.axis, "and so did the axis");
  assert.equal(await page.getByLabel("Time zone", { exact: true }).inputValue(), "Asia/Kathmandu");

  // Back to the browser's zone; a range of days is counted day by day.
  await zone.selectOption(await page.evaluate(() => Intl.DateTimeFormat().resolvedOptions().timeZone));
  await page.getByLabel("Range", { exact: true }).selectOption("7d");
  const week = await overviewRange();
  assert.equal(week.granularity, "P1D");
  assert.equal(await page.locator(testid("chart-group")).count(), 7, "seven days, a group each");
  assert.match(await page.locator(testid("chart-summary")).textContent(), /per day/);

  // Between two dates (in the zone): the dates start as the range shown; one day is hour by hour.
  await page.getByLabel("Range", { exact: true }).selectOption("custom");
  assert.equal((await overviewRange()).granularity, "P1D");
  const firstDay = page.getByLabel("First day");
  const lastDay = page.getByLabel("Last day");
  assert.ok(
    (await firstDay.isVisible()) && (await lastDay.isVisible()),
    "the date inputs show for a range between dates",
  );
  assert.ok((await firstDay.inputValue()) < (await lastDay.inputValue()), "prefilled with the week shown");
  await firstDay.fill(await lastDay.inputValue());
  await page.getByRole("button", { name: "Show" }).click();
  const oneDay = await overviewRange();
  assert.equal(oneDay.granularity, "PT1H");
  assert.equal(
    (Date.parse(oneDay.to) - Date.parse(oneDay.from)) / 3600000,
    await page.locator(testid("chart-group")).count(),
    "a group per hour of the day",
  );
  assert.match(await page.evaluate(() => location.hash), /range=custom&.*from=\d{4}-\d\d-\d\d&to=\d{4}-\d\d-\d\d/);

  await page.getByLabel("Range", { exact: true }).selectOption("24h");
  assert.equal((await overviewRange()).granularity, "PT1H");
  assert.ok(await firstDay.isHidden(), "no dates for the last 24 hours");
});

test("screenshots of the overview", async () => {
  await ready("overview");
  await overviewRange();
  await shoot("overview");
});

test("a new event changes the overview's now figures within 2 s, without a reload", async () => {
  await ready("overview");
  await waitLive();
  const before = await page.evaluate(() => performance.timeOrigin);
  const navigations = [];
  page.on("framenavigated", (frame) => navigations.push(frame.url()));
  const active = Number(await tileText("now-active"));
  const present = Number(await tileText("now-present"));

  const changed = page.waitForFunction(
    ([id, expected]) => document.querySelector(`[data-testid="${id}"]`)?.textContent === expected,
    ["now-active", String(active + 1)],
    { timeout: LIVE_MS },
  );
  await hook(
    OVERVIEW_LIVE,
    transfer("NA", "entry", "agentId6", "Frank Six", {
      participant: {
        identity: "agentId6",
        name: "Frank Six",
        type: "agent",
        customFields: { queueId: "q-7", queueName: "Billing" },
      },
    }),
  );
  await changed;
  assert.equal(await tileText("now-present"), String(present + 1));
  await page
    .locator(`${testid("now-queue-row")}[data-queue="Billing"] [data-column="present"]`)
    .filter({ hasText: "1" })
    .waitFor({ timeout: LIVE_MS });
  assert.equal(await page.evaluate(() => performance.timeOrigin), before, "the page was not reloaded");
  assert.deepEqual(navigations, []);
  const now = await api("/stats/now");
  assert.equal(await tileText("now-active"), String(now.conversations.active));
  assert.equal(await tileText("now-present"), String(now.participantsPresent));
});

test("signing out forgets the token; nothing ever put it in a URL or broke the policy", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await ready("sign-in");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.locator(testid("sign-in-message")).filter({ hasText: "signed out" }).waitFor();

  assert.ok(requestUrls.length > 10);
  for (const url of requestUrls) {
    assert.ok(!url.includes(readToken) && !url.includes(readToken.split(".")[2]), `no token in ${url}`);
  }
  assert.deepEqual(cspViolations, [], "no Content-Security-Policy violation");
  assert.deepEqual(pageErrors, [], "no uncaught error in the page");
  assert.deepEqual(dialogs, []);
  assert.ok(!serviceLog.some((line) => line.includes(readToken.split(".")[2])), "no token in the service's log");
});
