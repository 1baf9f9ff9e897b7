// The ops console (SPEC 9) in a real browser: Debian's Chromium driven by playwright-core,
// against the release binary on a fresh embedded SQLite database. The binary serves the
// console itself; set CONSOLE_FROM_SOURCE=1 to serve console/public/ from disk instead
// (console/dev-server.mjs in front of the same binary) while working on the front end.
//
//   AGENTASSIST_HOOKS_BINARY=target/ci-release/agentassist-hooks node --test console/test/
//
// Screenshots of each page at 1280x800 and 390x844 go to target/console-screenshots/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
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
/** How long a live update may take to show (the bound). */
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
    const timer = setTimeout(() => reject(new Error(`the service did not log its address:\n${serviceLog.join("\n")}`)), 30000);
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
  service = spawn(binary, ["--config", join(work, "console.toml"), "serve"], { cwd: work, env, stdio: ["ignore", "pipe", "pipe"] });
  serviceUrl = `http://${await listeningAddress(service)}`;
  const mint = (app, secret) =>
    execFileSync(binary, ["token", "--app-id", app, "--secret-env", secret], { env }).toString().trim();
  ingestToken = mint("console-ingest", "CONSOLE_INGEST_SECRET");
  readToken = mint("console-viewer", "CONSOLE_VIEWER_SECRET");
  assert.equal((await fetch(`${serviceUrl}/readyz`)).status, 200, "the service is ready once it listens");

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
      return main.dataset.ready === "true" && main.dataset.page === expected && (part === null || (main.dataset.route ?? "").includes(part)) && location.hash === (main.dataset.route ?? location.hash);
    },
    [name, hashPart],
  );
}

async function shoot(name) {
  for (const [label, viewport] of [["1280", WIDE], ["390", NARROW]]) {
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
    reached = await page.evaluate((id) => document.activeElement?.dataset?.key === id && document.activeElement.closest("tr")?.dataset.testid === "conversation-row", COLD);
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
    nodes.map((node) => ({ identity: node.dataset.identity, row: Number(node.dataset.rowIndex), top: node.getBoundingClientRect().top, name: node.getAttribute("aria-label") })),
  );
  assert.equal(drawn.length, 3, "one bar per stint");
  assert.deepEqual(drawn.map((bar) => bar.identity), ["agentId1", "agentId2", "agentId3"]);
  assert.deepEqual(drawn.map((bar) => bar.row), [0, 1, 2], "a row each, in order of first entry");
  assert.ok(drawn[0].top < drawn[1].top && drawn[1].top < drawn[2].top, "rows top to bottom");
  assert.match(drawn[0].name, /^agentId1 \(AgentName1\), NA entry \d\d:\d\d:\d\d to COLD exit \d\d:\d\d:\d\d/);
  assert.match(drawn[1].name, /^agentId2 \(AgentName2\), COLD entry .* to COLD exit /);
  assert.match(drawn[2].name, /^agentId3 \(AgentName3\), COLD entry .* to NA exit /);
  const labels = await page.locator(testid("timeline-row-label")).evaluateAll((nodes) => nodes.map((node) => node.dataset.row));
  assert.deepEqual(labels, ["agentId1", "agentId2", "agentId3"]);

  const hops = page.locator(`${testid("hop")}[data-kind="COLD"]`);
  assert.equal(await hops.count(), 2, "two COLD hops");
  const hopEnds = await hops.evaluateAll((nodes) => nodes.map((node) => [node.dataset.from, node.dataset.to, node.dataset.outcome]));
  assert.deepEqual(hopEnds, [["agentId1", "agentId2", "completed"], ["agentId2", "agentId3", "completed"]]);
  assert.equal(await page.locator(testid("hop")).count(), 2, "and no other hop");
  assert.equal(await page.locator(testid("event-row")).count(), 6);

  // A bar is a button: Enter shows the stint, with a link to the agent's page.
  await bars.nth(1).focus();
  await page.keyboard.press("Enter");
  await page.locator(testid("stint-details")).getByRole("link", { name: /agentId2/ }).waitFor();
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
  assert.equal(await page.locator(testid("conversation-summary")).locator(testid("status-badge")).textContent(), "active");
});

test("a participant named like markup is shown as text: no element, no script", async () => {
  await ready("conversation");
  await waitLive();
  const appeared = page.locator(testid("event-participant-name")).filter({ hasText: XSS_NAME }).waitFor({ timeout: LIVE_MS });
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
  const drawn = await bars.evaluateAll((nodes) => nodes.map((node) => [node.dataset.conversationId, node.dataset.open]));
  assert.deepEqual(
    drawn.sort(),
    [[COLD, "false"], [LIVE, "true"], [WARM, "false"]],
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
  assert.deepEqual(escalations, [["failed", ""], ["completed", "agentId3"]]);
  await shoot("conversation-escalation");

  await page.goto(`${baseUrl}/console/#/bots/${BOT}/conversations/${ODD}`);
  await ready("conversation", `/conversations/${ODD}`);
  const anomalies = await page.locator(testid("anomaly-marker")).evaluateAll((nodes) => nodes.map((node) => node.getAttribute("aria-label")));
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
    const outgoing = httpRequest(upstream, { method: request.method, headers: { ...request.headers, host: upstream.host } }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(response);
    });
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
    cut: () => sockets.forEach((socket) => socket.destroy()),
    close: () => new Promise((closed) => (server.closeAllConnections(), server.close(closed))),
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
