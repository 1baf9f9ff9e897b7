// What the webhook tests run against: the release binary on a fresh PostgreSQL database,
// a receiver that checks every request with the official Standard Webhooks library, and
// a TCP proxy to cut the service's database link.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync, mkdtempSync, openSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { connect, createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Webhook } from "standardwebhooks";

const repository = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const binary = resolve(
  repository,
  process.env.AGENTASSIST_HOOKS_BINARY ?? "target/ci-release/agentassist-hooks",
);
export const BOT = "st-webhooks";
/** Two secrets: the service signs with both (a rotation); each verifies alone. */
export const SECRETS = [
  `whsec_${Buffer.alloc(32, 1).toString("base64")}`,
  `whsec_${Buffer.alloc(24, 2).toString("base64")}`,
];
const APP_SECRET = "webhook-test-app-secret-0123456789abcdef";
export const ADMIN_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export async function freePort() {
  const server = createServer();
  await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
  const { port } = server.address();
  await new Promise((closed) => server.close(closed));
  return port;
}

function psql(sql) {
  return execFileSync("psql", ["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", ADMIN_URL, "-c", sql]).toString().trim();
}

/** A fresh database; its URL. */
export function createDatabase() {
  const name = `hooks_webhooks_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
  psql(`CREATE DATABASE ${name}`);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    query: (sql) => execFileSync("psql", ["-X", "-q", "-tA", url.toString(), "-c", sql]).toString().trim(),
  };
}

export function dropDatabase(database) {
  psql(`DROP DATABASE IF EXISTS ${database.name} WITH (FORCE)`);
}

/** The `[[webhooks]]` table of a receiver. */
export function webhookToml({
  url,
  name = "receiver",
  schedule = [0.2, 0.4, 0.8, 1.6, 3.2],
  start = "oldest",
  maxInFlight = 16,
}) {
  return (
    `[[webhooks]]\nname = "${name}"\nurl = "${url}"\nsecret_env = ["WEBHOOK_SECRET_A", "WEBHOOK_SECRET_B"]\n` +
    `bots = ["${BOT}"]\nstart = "${start}"\nmax_in_flight = ${maxInFlight}\ntimeout_seconds = 5\n` +
    `retry_schedule_seconds = [${schedule.join(", ")}]\n`
  );
}

/** A config file: the service on `port`, `databaseUrl`, an app that may do everything. */
export function writeConfig({ port, databaseUrl, webhooks, allowHosts = ["127.0.0.1"] }) {
  const work = mkdtempSync(join(tmpdir(), "hooks-webhooks-"));
  const path = join(work, "service.toml");
  writeFileSync(
    path,
    `webhook_allow_hosts = ${JSON.stringify(allowHosts)}\n\n` +
      `[server]\nbind = "127.0.0.1:${port}"\n\n[database]\nurl = "${databaseUrl}"\n\n[log]\nfilter = "info"\n\n` +
      `[[apps]]\napp_id = "ops"\nsecret_env = "APP_SECRET"\nbots = ["*"]\npermissions = ["ingest", "read", "erase", "admin"]\n\n` +
      webhooks,
  );
  return { work, path };
}

export const serviceEnv = () => {
  const env = { ...process.env, APP_SECRET, WEBHOOK_SECRET_A: SECRETS[0], WEBHOOK_SECRET_B: SECRETS[1] };
  delete env.DATABASE_URL;
  return env;
};

/** Runs the CLI with `config`; its output (throws on a non-zero exit). */
export function cli(config, ...args) {
  return execFileSync(binary, ["--config", config.path, ...args], { env: serviceEnv(), cwd: config.work }).toString();
}

/** The service, serving `config` until stopped; ready when this resolves. */
export async function startService(config, port) {
  assert.ok(existsSync(binary), `the release binary is built: ${binary}`);
  const log = openSync(join(config.work, `service-${Date.now()}.log`), "a");
  const env = { ...serviceEnv(), HOOKS__SERVER__BIND: `127.0.0.1:${port}` };
  const child = spawn(binary, ["--config", config.path, "serve"], {
    cwd: config.work,
    env,
    stdio: ["ignore", log, log],
  });
  const exited = new Promise((done) => child.once("exit", done));
  const url = `http://127.0.0.1:${port}`;
  for (let waited = 0; ; waited += 100) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {}
    assert.ok(waited < 30000, `the service becomes ready (log in ${config.work})`);
    await new Promise((wait) => setTimeout(wait, 100));
  }
  const token = cli(config, "token", "--app-id", "ops", "--secret-env", "APP_SECRET").trim();
  return {
    url,
    token,
    pid: child.pid,
    exited,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** Posts one event of `conversationId`. */
export async function post(service, conversationId, event) {
  const response = await fetch(`${service.url}/agentassist/api/v1/hooks/${BOT}`, {
    method: "POST",
    headers: { "content-type": "application/json", token: service.token },
    body: JSON.stringify({ conversationId, botId: BOT, events: [event] }),
  });
  assert.equal(response.status, 200, await response.text());
}

export const entry = (identity) => ({
  name: "INTERNAL_TRANSFER_EVENT",
  transfertype: "NA",
  transition: "entry",
  isExtAD: "true",
  experience: "chat",
  participant: { identity, name: identity, type: "agent" },
});
export const summary = (index) => ({ name: "TRIGGER_SUMMARY_EVENT", data: { index } });

/** `perConversation` events in each of `conversations` conversations, from `writers` concurrent writers. */
export async function ingest(service, { conversations, perConversation, writers, prefix = "c" }) {
  const ids = Array.from({ length: conversations }, (_, index) => `${prefix}-${index}`);
  await Promise.all(
    Array.from({ length: writers }, async (_, writer) => {
      const mine = ids.filter((_, index) => index % writers === writer);
      for (let round = 0; round < perConversation; round += 1) {
        for (const id of mine) {
          await post(service, id, round === 0 ? entry(`agent-${id}`) : summary(round));
        }
      }
    }),
  );
  return ids;
}

export async function webhooksStatus(service) {
  const response = await fetch(`${service.url}/api/v1/webhooks`, { headers: { token: service.token } });
  assert.equal(response.status, 200);
  return (await response.json()).items;
}

/** The endpoint's status once `condition(status)` holds, asked every 50 ms for at most `limitMs`. */
export async function statusWhen(service, condition, limitMs, what) {
  for (let waited = 0; ; waited += 50) {
    const [status] = await webhooksStatus(service);
    if (condition(status)) return status;
    assert.ok(waited < limitMs, `not within ${limitMs} ms: ${what} (${JSON.stringify(status)})`);
    await new Promise((wait) => setTimeout(wait, 50));
  }
}

/**
 * An HTTP receiver that verifies every request with the official library, under each
 * secret alone. `answer(request)` picks the status (200 unless set). It emits `request`
 * after each one, so that tests wait on what arrives rather than on the clock.
 */
export class Receiver extends EventEmitter {
  attempts = [];
  /** The first delivery of each webhook-id, in arrival order. */
  delivered = [];
  seen = new Set();
  answer = () => 200;
  delayMs = 0;

  async start() {
    const verifiers = SECRETS.map((secret) => new Webhook(secret));
    this.server = createServer((request, response) => {
      const chunks = [];
      request.on("data", (chunk) => chunks.push(chunk));
      request.on("end", async () => {
        const body = Buffer.concat(chunks).toString();
        const headers = {
          "webhook-id": request.headers["webhook-id"],
          "webhook-timestamp": request.headers["webhook-timestamp"],
          "webhook-signature": request.headers["webhook-signature"],
        };
        let message;
        try {
          for (const verifier of verifiers) message = verifier.verify(body, headers);
        } catch (error) {
          this.failures = (this.failures ?? 0) + 1;
          this.lastFailure = String(error);
          response.writeHead(400).end();
          this.emit("request");
          return;
        }
        const attempt = { id: headers["webhook-id"], at: Date.now(), message };
        const status = this.answer(attempt);
        attempt.status = status;
        this.attempts.push(attempt);
        if (this.delayMs) await new Promise((wait) => setTimeout(wait, this.delayMs));
        if (status >= 200 && status < 300 && !this.seen.has(attempt.id)) {
          this.seen.add(attempt.id);
          this.delivered.push(message);
        }
        response.writeHead(status, { "content-type": "text/plain" }).end("ok");
        this.emit("request");
      });
    });
    await new Promise((ready) => this.server.listen(0, "127.0.0.1", ready));
    this.url = `http://127.0.0.1:${this.server.address().port}/hooks`;
    return this;
  }

  /** Resolves once `condition()` holds, checked after each request; fails after `limitMs`. */
  until(condition, limitMs, what) {
    return new Promise((done, fail) => {
      if (condition()) return done();
      const timer = setTimeout(() => {
        this.off("request", check);
        fail(new Error(`not within ${limitMs} ms: ${what} (${this.delivered.length} delivered)`));
      }, limitMs);
      const check = () => {
        if (condition()) {
          clearTimeout(timer);
          this.off("request", check);
          done();
        }
      };
      this.on("request", check);
    });
  }

  close() {
    this.server.closeAllConnections();
    return new Promise((closed) => this.server.close(closed));
  }
}

/**
 * Checks what the receiver got against what was posted: every event exactly once
 * (deduplicated on webhook-id), each conversation's in `seq` order, from 1 without gaps.
 */
export function assertDeliveredInOrder(receiver, expected) {
  assert.equal(receiver.failures ?? 0, 0, `every request verifies: ${receiver.lastFailure}`);
  const byConversation = new Map();
  for (const message of receiver.delivered) {
    if (message.type !== "conversation.event") continue;
    const { conversationId, seq } = message.data;
    const seqs = byConversation.get(conversationId) ?? [];
    seqs.push(seq);
    byConversation.set(conversationId, seqs);
  }
  for (const [conversationId, count] of expected) {
    const seqs = byConversation.get(conversationId) ?? [];
    assert.deepEqual(
      seqs,
      Array.from({ length: count }, (_, index) => index + 1),
      `conversation ${conversationId}`,
    );
  }
  assert.equal(byConversation.size, expected.size, "no conversation was delivered that was not posted");
}

/** A TCP proxy to `port` whose link can be cut (every connection dropped, new ones refused) and restored. */
export async function tcpProxy(port) {
  const sockets = new Set();
  let open = true;
  const server = createTcpServer((client) => {
    if (!open) return client.destroy();
    const upstream = connect(port, "127.0.0.1");
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
  return {
    port: server.address().port,
    cut() {
      open = false;
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
    restore() {
      open = true;
    },
    close: () => new Promise((closed) => server.close(closed)),
  };
}
