// The adapter against the real service: the release binary on a fresh embedded store,
// driven by stand-in agent desktops that call the handlers with the seeds' argument lists.
//
//   AGENTASSIST_HOOKS_BINARY=target/release/agentassist-hooks node --test agent-desktop/test/

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { connect } from "../index.mjs";

const BOT = "st-desktop";
const repository = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = resolve(repository, process.env.AGENTASSIST_HOOKS_BINARY ?? "target/ci-release/agentassist-hooks");

/** A stand-in for the desktop's `adApi`: `on` registers, `emit` calls like the desktop does. */
class StandInDesktop {
  handlers = new Map();
  on(name, handler) {
    this.handlers.set(name, handler);
  }
  emit(name, ...args) {
    const handler = this.handlers.get(name);
    assert.ok(handler, `${name} is registered`);
    return handler(...args);
  }
}

/** Logs kept for the assertions instead of printed. */
function quietLog() {
  const lines = [];
  return { lines, warn: (...args) => lines.push(args.join(" ")), error: (...args) => lines.push(args.join(" ")) };
}

let work;
let service;
let serviceUrl;
let token;
let proxy;
let proxyUrl;
let refuseNext = 0;
const seenThroughProxy = [];

async function freePort() {
  const server = createServer();
  await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
  const { port } = server.address();
  await new Promise((closed) => server.close(closed));
  return port;
}

before(async () => {
  assert.ok(existsSync(binary), `the release binary is built: ${binary}`);
  work = mkdtempSync(join(tmpdir(), "hooks-desktop-"));
  const port = await freePort();
  serviceUrl = `http://127.0.0.1:${port}`;
  const secret = "desktop-test-secret-0123456789abcdef";
  writeFileSync(
    join(work, "desktop.toml"),
    `[server]\nbind = "127.0.0.1:${port}"\n\n[database]\nurl = "sqlite://${work}/hooks.db"\n\n` +
      `[[apps]]\napp_id = "desktop"\nsecret_env = "DESKTOP_SECRET"\nbots = ["${BOT}"]\npermissions = ["ingest", "read"]\n`,
  );
  const env = { ...process.env, DESKTOP_SECRET: secret, HOOKS__LOG__FILTER: "warn" };
  delete env.DATABASE_URL;
  service = spawn(binary, ["--config", join(work, "desktop.toml"), "serve"], { cwd: work, env, stdio: "ignore" });
  token = execFileSync(binary, ["token", "--app-id", "desktop", "--secret-env", "DESKTOP_SECRET"], { env })
    .toString()
    .trim();
  for (let waited = 0; ; waited += 100) {
    try {
      if ((await fetch(`${serviceUrl}/readyz`)).ok) break;
    } catch {}
    assert.ok(waited < 20000, "the service becomes ready");
    await new Promise((wait) => setTimeout(wait, 100));
  }

  // In front of the service: answers 503 to the next `refuseNext` calls, then forwards.
  proxy = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    seenThroughProxy.push(`${request.method} ${request.url}`);
    if (refuseNext > 0) {
      refuseNext -= 1;
      response.writeHead(503, { "content-type": "application/problem+json", "retry-after": "0" });
      response.end(JSON.stringify({ status: 503, title: "Service temporarily unavailable" }));
      return;
    }
    const headers = { ...request.headers };
    delete headers.host;
    const answer = await fetch(`${serviceUrl}${request.url}`, {
      method: request.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    response.writeHead(answer.status, Object.fromEntries(answer.headers));
    response.end(Buffer.from(await answer.arrayBuffer()));
  });
  await new Promise((ready) => proxy.listen(0, "127.0.0.1", ready));
  proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
});

after(async () => {
  proxy?.close();
  service?.kill("SIGTERM");
  if (work) rmSync(work, { recursive: true, force: true });
});

async function read(path) {
  const response = await fetch(`${serviceUrl}/api/v1/bots/${BOT}${path}`, { headers: { token } });
  assert.equal(response.status, 200, `GET ${path}`);
  return response.json();
}

function desktop(agentId, options = {}) {
  const adApi = new StandInDesktop();
  const log = quietLog();
  const adapter = connect(adApi, {
    baseUrl: proxyUrl,
    botId: BOT,
    token,
    agentId,
    log,
    retry: { firstDelayMs: 10, maxDelayMs: 50 },
    ...options,
  });
  return { adApi, adapter, log };
}

test("a Bright Pattern interaction reaches the service as INTERACTION_DATA", async () => {
  const agent1 = desktop("agent-1");
  const interaction = {
    interactionId: "int-desktop-1",
    state: "delivered",
    type: "voice",
    subject: "Invoice",
    callParties: [{ id: "p-1", name: "Customer", phone: "+15550100" }],
    callMuted: false,
    callRecording: false,
    service: "Billing",
  };

  const returned = agent1.adApi.emit("ON_NEW_INTERACTION", interaction);
  await agent1.adapter.idle();

  assert.equal(returned, null, "the handler returns what the seed says: null");
  const conversation = await read("/conversations/int-desktop-1");
  assert.equal(conversation.interaction.service, "Billing");
  assert.deepEqual(
    conversation.interaction.deliveredTo.map((delivery) => delivery.agentId),
    ["agent-1"],
  );
  const { events } = await read("/conversations/int-desktop-1/events");
  assert.deepEqual(
    events.map((event) => event.name),
    ["INTERACTION_DATA"],
  );
  assert.deepEqual(events[0].payload.interaction, interaction, "stored exactly as the handler got it");
});

test("transfer data handed from agent 1 to agent 2 goes through the desktop and the service", async () => {
  const handedOver = { url: "https://crm.example.com/case/42", notes: ["asked about invoice 7"] };
  const agent1 = desktop("agent-1", { transferData: () => handedOver });
  const loaded = [];
  const agent2 = desktop("agent-2", { onLoadTransferData: (id, data) => loaded.push([id, data]) });
  agent1.adApi.emit("ON_NEW_INTERACTION", { interactionId: "int-desktop-2", type: "chat", state: "delivered" });
  await agent1.adapter.idle();

  // Agent 1's desktop asks for the data to transfer, and moves it to agent 2's desktop.
  const data = agent1.adApi.emit("ON_REQUEST_TRANSFER_DATA", "int-desktop-2");
  agent2.adApi.emit("ON_NEW_INTERACTION", { interactionId: "int-desktop-2", type: "chat", state: "delivered" });
  agent2.adApi.emit("ON_LOAD_TRANSFER_DATA", "int-desktop-2", data);
  await Promise.all([agent1.adapter.idle(), agent2.adapter.idle()]);

  assert.deepEqual(data, handedOver, "ON_REQUEST_TRANSFER_DATA returns the data to transfer");
  assert.deepEqual(loaded, [["int-desktop-2", handedOver]]);
  const stored = await read("/conversations/int-desktop-2/transfer-data");
  assert.deepEqual(stored.data, handedOver);
  assert.equal(stored.participant.identity, "agent-1");
  const conversation = await read("/conversations/int-desktop-2");
  assert.deepEqual(
    conversation.interaction.deliveredTo.map((delivery) => delivery.agentId),
    ["agent-1", "agent-2"],
  );

  // A desktop that brought no data gets the latest the service has.
  const agent3 = desktop("agent-3", { onLoadTransferData: (id, value) => loaded.push([id, value]) });
  agent3.adApi.emit("ON_LOAD_TRANSFER_DATA", "int-desktop-2", undefined);
  await agent3.adapter.idle();
  assert.deepEqual(loaded.at(-1), ["int-desktop-2", handedOver]);
});

test("a 503 is retried under one Idempotency-Key and the desktop never sees an exception", async () => {
  const agent = desktop("agent-9");
  refuseNext = 1;
  const before = seenThroughProxy.length;

  assert.doesNotThrow(() => agent.adApi.emit("ON_NEW_INTERACTION", { interactionId: "int-desktop-3", type: "email" }));
  await agent.adapter.idle();

  assert.equal(seenThroughProxy.length - before, 2, "one refused call, one retry");
  assert.match(agent.log.lines.join("\n"), /503; retrying/);
  const { events } = await read("/conversations/int-desktop-3/events");
  assert.equal(events.length, 1, "stored once");
});

test("a service that is down for good is given up on, without throwing into the desktop", async () => {
  const agent = desktop("agent-10", { retry: { attempts: 3, firstDelayMs: 5, maxDelayMs: 10 } });
  refuseNext = 3;

  assert.doesNotThrow(() => agent.adApi.emit("ON_NEW_INTERACTION", { interactionId: "int-desktop-4", type: "chat" }));
  await agent.adapter.idle();

  assert.match(agent.log.lines.join("\n"), /gave up after 3 attempts/);
  const response = await fetch(`${serviceUrl}/api/v1/bots/${BOT}/conversations/int-desktop-4`, { headers: { token } });
  assert.equal(response.status, 404, "nothing was stored");
});

test("a handler that throws inside the integration is contained", async () => {
  const agent = desktop("agent-11", {
    transferData: () => {
      throw new Error("the CRM page is gone");
    },
  });

  const data = agent.adApi.emit("ON_REQUEST_TRANSFER_DATA", "int-desktop-5");

  assert.equal(data, undefined);
  assert.match(agent.log.lines.join("\n"), /the CRM page is gone/);
});
