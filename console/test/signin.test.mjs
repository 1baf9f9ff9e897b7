// People signing in to the console through a real OpenID provider (SPEC 13): panva's
// `oidc-provider` (pinned in package.json) started here with RS256 and ES256 keys, its own
// login and consent pages, JWT access tokens for the service's audience; Debian's Chromium
// driven by playwright-core; the release binary on a fresh embedded SQLite database.
//
//   AGENTASSIST_HOOKS_BINARY=target/ci-release/agentassist-hooks node --test console/test/signin.test.mjs

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import Provider from "oidc-provider";
import { chromium } from "playwright-core";

const BOT = "st-people";
const OTHER_BOT = "st-elsewhere";
const CLIENT_ID = "agentassist-console";
const AUDIENCE = "agentassist-api";
const RESOURCE = "urn:agentassist-hooks:api";
const API_SCOPE = "api:read";
const repository = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = resolve(repository, process.env.AGENTASSIST_HOOKS_BINARY ?? "target/ci-release/agentassist-hooks");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const screenshots = join(repository, "target", "console-screenshots");
const LOAD_MS = 15000;

/** The provider's people: their groups decide what the service lets them read. */
const ACCOUNTS = {
  dana: { name: "Dana Scully", email: "dana@example.com", groups: ["cc-supervisors", "cc-auditors"] },
  fox: { name: "Fox Mulder", email: "fox@example.com", groups: ["cc-visitors"] },
};

let work;
let service;
const serviceLog = [];
let serviceUrl;
let issuer;
let providerPort;
let providerServer;
let browser;
let ingestToken;

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** A signing key as a private JWK, with its `kid`. */
function signingKey(kind, kid) {
  const { privateKey } =
    kind === "RS256"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { ...privateKey.export({ format: "jwk" }), kid, alg: kind, use: "sig" };
}

/** Starts the provider on `providerPort` with `keys`, access tokens signed with `accessTokenAlg`. */
async function startProvider(keys, accessTokenAlg) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        token_endpoint_auth_method: "none",
        grant_types: ["authorization_code"],
        response_types: ["code"],
        redirect_uris: [`${serviceUrl}/console/`],
        post_logout_redirect_uris: [`${serviceUrl}/console/`],
      },
    ],
    jwks: { keys },
    cookies: { keys: ["signin-test-cookie-key-0123456789"] },
    claims: { openid: ["sub"], profile: ["name"], email: ["email"] },
    scopes: ["openid", "profile", "email"],
    async findAccount(_ctx, id) {
      const account = ACCOUNTS[id] ?? { name: id, email: null, groups: [] };
      return { accountId: id, claims: () => ({ sub: id, name: account.name, email: account.email }) };
    },
    // The service maps `groups` from the access token, as Keycloak or Entra would put them there.
    async extraTokenClaims(_ctx, token) {
      const account = ACCOUNTS[token.accountId];
      return account ? { groups: account.groups, name: account.name, email: account.email } : undefined;
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: API_SCOPE,
          audience: AUDIENCE,
          accessTokenFormat: "jwt",
          accessTokenTTL: 300,
          jwt: { sign: { alg: accessTokenAlg } },
        }),
      },
    },
  });
  await new Promise((started) => {
    providerServer = provider.listen(providerPort, "127.0.0.1", started);
  });
}

function stopProvider() {
  return new Promise((stopped) => {
    providerServer.closeAllConnections?.();
    providerServer.close(stopped);
  });
}

function listening(child) {
  return new Promise((resolveAddress, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      serviceLog.push(line);
      const match = /"address":"([^"]+)"/.exec(line);
      if (match) resolveAddress(match[1]);
    });
    child.stderr.on("data", (data) => serviceLog.push(String(data)));
    child.on("exit", (code) => reject(new Error(`the service exited (${code}):\n${serviceLog.join("\n")}`)));
  });
}

async function post(path, body) {
  const response = await fetch(`${serviceUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", token: ingestToken },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, await response.text());
}

before(async () => {
  assert.ok(existsSync(binary), `the release binary is built: ${binary} (set AGENTASSIST_HOOKS_BINARY)`);
  work = mkdtempSync(join(tmpdir(), "hooks-signin-"));
  providerPort = await freePort();
  issuer = `http://127.0.0.1:${providerPort}`;
  const servicePort = await freePort();
  serviceUrl = `http://127.0.0.1:${servicePort}`;
  await startProvider([signingKey("RS256", "rsa-2026-11"), signingKey("ES256", "ec-2026-11")], "ES256");

  writeFileSync(
    join(work, "signin.toml"),
    `[server]\nbind = "127.0.0.1:${servicePort}"\n\n[database]\nurl = "sqlite://${work}/hooks.db"\n\n` +
      `[log]\nformat = "json"\n\n` +
      `[auth.oidc]\nissuer = "${issuer}"\naudience = "${AUDIENCE}"\nclient_id = "${CLIENT_ID}"\n` +
      `name = "Test Identity"\nscopes = ["openid", "profile", "email", "${API_SCOPE}"]\n\n` +
      `[[auth.oidc.roles]]\nvalue = "cc-supervisors"\nbots = ["${BOT}"]\npermissions = ["read"]\n\n` +
      `[[auth.oidc.roles]]\nvalue = "cc-auditors"\nbots = ["*"]\npermissions = ["audit"]\n\n` +
      `[[apps]]\napp_id = "signin-ingest"\nsecret_env = "SIGNIN_INGEST_SECRET"\nbots = ["*"]\npermissions = ["ingest"]\n`,
  );
  const env = { ...process.env, SIGNIN_INGEST_SECRET: "signin-ingest-secret-0123456789abcdef" };
  delete env.DATABASE_URL;
  delete env.RUST_LOG;
  for (const key of Object.keys(env)) if (key.startsWith("HOOKS__")) delete env[key];
  service = spawn(binary, ["--config", join(work, "signin.toml"), "serve"], {
    cwd: work,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  await listening(service);
  ingestToken = execFileSync(binary, ["token", "--app-id", "signin-ingest", "--secret-env", "SIGNIN_INGEST_SECRET"], {
    env,
  })
    .toString()
    .trim();
  for (let tries = 0; (await fetch(`${serviceUrl}/readyz`)).status !== 200; tries++) {
    assert.ok(tries < 300, "the service becomes ready");
    await new Promise((wait) => setTimeout(wait, 50));
  }
  const entry = {
    name: "INTERNAL_TRANSFER_EVENT",
    transfertype: "NA",
    transition: "entry",
    isExtAD: true,
    experience: "chat",
    language: "en",
  };
  for (const bot of [BOT, OTHER_BOT]) {
    await post(`/agentassist/api/v1/hooks/${bot}`, {
      conversationId: `c-${bot}`,
      botId: bot,
      events: [{ ...entry, participant: { identity: "agentId1", name: "Agent One", type: "agent" } }],
    });
  }
  mkdirSync(screenshots, { recursive: true });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  if (service && service.exitCode === null) {
    const exited = new Promise((done) => service.once("exit", done));
    service.kill("SIGTERM");
    await exited;
  }
  await stopProvider().catch(() => {});
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A fresh browser (no provider session), with page errors and CSP violations collected. */
async function freshPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(LOAD_MS);
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(String(error)));
  page.on("console", (message) => {
    if (/content security policy/i.test(message.text())) page.problems.push(message.text());
  });
  return page;
}

async function ready(page, pageName) {
  await page.waitForSelector(`main[data-ready="true"][data-page="${pageName}"]`);
}

/** From the console's sign-in page through the provider's login and consent, back to the console. */
async function signInAs(page, login) {
  await page.click("#sign-in-provider");
  await page.waitForURL(`${issuer}/interaction/**`);
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', "any password");
  // Login and consent share one address at this provider: wait for the next page itself.
  await Promise.all([page.waitForEvent("framenavigated"), page.click('button[type="submit"]')]);
  await page.waitForLoadState();
  if (page.url().startsWith(issuer)) {
    // The consent page: the provider asks once per person and client.
    assert.equal(await page.locator('input[name="login"]').count(), 0, "past the login form");
    await page.click('button[type="submit"]');
  }
  await page.waitForURL(`${serviceUrl}/console/**`);
}

test("a person signs in through the provider, lands on the page they asked for and sees their bots", async () => {
  const page = await freshPage();
  await page.goto(`${serviceUrl}/console/#/bots/${BOT}/conversations`);
  await ready(page, "sign-in");
  assert.equal(await page.textContent("#sign-in-provider"), "Sign in with Test Identity");
  // The page may reach the provider (discovery, token endpoint) and nothing else.
  const csp = (await fetch(`${serviceUrl}/console/`)).headers.get("content-security-policy");
  assert.match(csp, new RegExp(`connect-src 'self' ${issuer};`));
  assert.match(csp, /form-action 'none'/);
  await page.screenshot({ path: join(screenshots, "sign-in-provider-1280.png"), fullPage: true });
  await signInAs(page, "dana");

  await ready(page, "list");
  assert.equal(new URL(page.url()).hash, `#/bots/${BOT}/conversations`, "back on the page asked for");
  assert.equal(new URL(page.url()).search, "", "the code left the address bar");
  assert.equal(await page.textContent("#who"), "Dana Scully");
  await page.click(`text=c-${BOT}`);
  await ready(page, "conversation");

  await page.goto(`${serviceUrl}/console/#/bots`);
  await ready(page, "bots");
  const bots = await page.locator("main a").allTextContents();
  assert.ok(bots.includes(BOT), `the person's bot is listed: ${bots}`);
  assert.ok(!bots.includes(OTHER_BOT), `a bot no group of theirs allows is not: ${bots}`);
  const stored = await page.evaluate(() => Object.keys(sessionStorage));
  assert.ok(stored.includes("agentassist-hooks.console.token"), "the token is in sessionStorage");
  assert.deepEqual(await page.evaluate(() => Object.keys(localStorage)), [], "nothing in localStorage");
  await page.screenshot({ path: join(screenshots, "signed-in-person-1280.png"), fullPage: true });
  assert.deepEqual(page.problems, []);

  // The reads were audited under the person's name.
  const audit = await page.evaluate(async (bot) => {
    const token = sessionStorage.getItem("agentassist-hooks.console.token");
    const response = await fetch(`/api/v1/audit?botId=${bot}`, { headers: { token } });
    return response.json();
  }, BOT);
  const mine = audit.items.filter((item) => item.actor === "user:dana");
  assert.ok(mine.length > 0, `the person's reads are in the audit log: ${JSON.stringify(audit)}`);
  assert.equal(mine[0].actorName, "Dana Scully");

  // The audit page, for a person with `audit`: the reads of a conversation, by whom.
  await page.click("text=Audit log");
  await ready(page, "audit");
  await page.fill("#audit-conversation", `c-${BOT}`);
  await page.click("text=Apply filters");
  await page.waitForURL(`${serviceUrl}/console/#/audit?conversationId=c-${BOT}`);
  await ready(page, "audit");
  await page.waitForSelector('[data-testid="audit-row"]');
  const rows = await page.locator('[data-testid="audit-row"]').allTextContents();
  assert.ok(
    rows.every((row) => row.includes("Dana Scully (user:dana)") && row.includes(`c-${BOT}`)),
    `each read of c-${BOT} is the person's: ${rows}`,
  );
  await page.screenshot({ path: join(screenshots, "audit-1280.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(screenshots, "audit-390.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  // A token that runs out sends the person back through sign-in, to the same page (the
  // provider remembers them, so no form this time).
  await page.goto(`${serviceUrl}/console/#/bots/${BOT}/conversations`);
  await ready(page, "list");
  const before = await page.evaluate(() => sessionStorage.getItem("agentassist-hooks.console.token"));
  await page.evaluate(() => {
    const key = "agentassist-hooks.console.person";
    const person = JSON.parse(sessionStorage.getItem(key));
    sessionStorage.setItem(key, JSON.stringify({ ...person, expiresAt: Date.now() }));
    location.hash = "#/bots/st-people/overview";
  });
  await page.waitForURL(`${serviceUrl}/console/#/bots/${BOT}/overview`);
  await ready(page, "overview");
  const renewed = await page.evaluate(() => sessionStorage.getItem("agentassist-hooks.console.token"));
  assert.notEqual(renewed, before, "a new token");

  // Sign-out goes through the provider's end_session_endpoint and back to the sign-in page.
  await page.click("#sign-out");
  await page.waitForURL(`${issuer}/**`);
  await page.click('button[type="submit"][name="logout"], button[autofocus], form button');
  await page.waitForURL(`${serviceUrl}/console/**`);
  await ready(page, "sign-in");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("agentassist-hooks.console.token")), null);
  await page.context().close();
});

test("a person without a mapped group sees why they may not read", async () => {
  const page = await freshPage();
  await page.goto(`${serviceUrl}/console/`);
  await ready(page, "sign-in");
  await signInAs(page, "fox");
  await ready(page, "bots");
  await page.waitForSelector("main [role=alert]");
  const message = await page.textContent("main [role=alert]");
  assert.match(message, /signed in as Fox Mulder, but none of your groups may read this/);
  assert.equal(await page.locator("text=Audit log").count(), 0, "no audit page without audit");
  await page.screenshot({ path: join(screenshots, "signed-in-no-group-1280.png"), fullPage: true });
  await page.context().close();
});

test("after the provider rotates its keys, new tokens are accepted without restarting the service", async () => {
  await stopProvider();
  await startProvider([signingKey("RS256", "rsa-2026-12"), signingKey("ES256", "ec-2026-12")], "RS256");
  const page = await freshPage();
  await page.goto(`${serviceUrl}/console/#/bots`);
  await ready(page, "sign-in");
  await signInAs(page, "dana");
  await ready(page, "bots");
  const bots = await page.locator("main a").allTextContents();
  assert.ok(bots.includes(BOT), `signed in with a token of the new key: ${bots}`);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
