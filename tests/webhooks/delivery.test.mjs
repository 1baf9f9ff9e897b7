// Webhook delivery (SPEC 12) against the release binary on PostgreSQL, every request
// verified by the official Standard Webhooks library:
//
//   npm ci --prefix tests/webhooks
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//   AGENTASSIST_HOOKS_BINARY=target/ci-release/agentassist-hooks node --test --test-concurrency=1 tests/webhooks/

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import {
  ADMIN_URL,
  assertDeliveredInOrder,
  BOT,
  binary,
  cli,
  createDatabase,
  dropDatabase,
  freePort,
  ingest,
  post,
  Receiver,
  serviceEnv,
  startService,
  statusWhen,
  summary,
  tcpProxy,
  webhooksStatus,
  webhookToml,
  writeConfig,
} from "./harness.mjs";

/** A receiver, a database and a config; `body` runs with them and everything is cleaned up. */
async function withSetup(options, body) {
  const receiver = await new Receiver().start();
  const database = createDatabase();
  const port = await freePort();
  const config = writeConfig({
    port,
    databaseUrl: options.databaseUrl?.(database) ?? database.url,
    webhooks: webhookToml({ url: options.url ?? receiver.url, ...options.webhook }),
    allowHosts: options.allowHosts,
  });
  const services = [];
  const start = async (onPort = port) => {
    const service = await startService(config, onPort);
    services.push(service);
    return service;
  };
  try {
    await body({ receiver, database, config, start, port });
  } finally {
    for (const service of services) await service.stop("SIGKILL");
    await receiver.close();
    dropDatabase(database);
  }
}

const counts = (ids, perConversation) => new Map(ids.map((id) => [id, perConversation]));

test("5,000 events over 200 conversations from 8 writers reach the receiver, each once and in seq order", async () => {
  await withSetup({}, async ({ receiver, start }) => {
    const service = await start();
    const ids = await ingest(service, { conversations: 200, perConversation: 25, writers: 8 });
    await receiver.until(() => receiver.delivered.length >= 5000, 120000, "all 5,000 delivered");
    assertDeliveredInOrder(receiver, counts(ids, 25));
    const [status] = await webhooksStatus(service);
    assert.equal(status.name, "receiver");
    assert.equal(status.state, "active");
    assert.ok(typeof status.position === "string" && status.position.length > 0);
    assert.equal(JSON.stringify(status).includes("whsec_"), false, "no secret in the status");
    // Each body is the feed item, as the change feed lists it.
    const feed = await fetch(`${service.url}/api/v1/bots/${BOT}/changes?limit=1`, {
      headers: { token: service.token },
    });
    const [first] = (await feed.json()).items;
    const delivered = receiver.delivered.find((message) => message.data.position === first.position);
    assert.deepEqual(delivered.data, first);
    assert.equal(delivered.type, "conversation.event");
  });
});

test("a receiver answering 500 for a while gets everything once it answers 200, retries spaced per the schedule", async () => {
  const schedule = [0.2, 0.4, 0.8, 1.6, 3.2];
  await withSetup({ webhook: { schedule } }, async ({ receiver, start }) => {
    // 500 to everything until the first item has failed four times.
    let firstId;
    let firstFailures = 0;
    receiver.answer = (attempt) => {
      firstId ??= attempt.id;
      if (firstFailures >= 4) return 200;
      if (attempt.id === firstId) firstFailures += 1;
      return 500;
    };
    const service = await start();
    const ids = await ingest(service, { conversations: 4, perConversation: 5, writers: 2 });
    await receiver.until(() => receiver.delivered.length >= 20, 60000, "all 20 delivered");
    assertDeliveredInOrder(receiver, counts(ids, 5));
    // The first item failed four times: each wait at least the schedule's entry less 20 %.
    const tries = receiver.attempts.filter((attempt) => attempt.id === firstId);
    assert.ok(tries.length >= 5, `${tries.length} attempts of the first item`);
    for (let index = 1; index < tries.length && index <= 4; index += 1) {
      const waited = (tries[index].at - tries[index - 1].at) / 1000;
      assert.ok(waited >= schedule[index - 1] * 0.8 - 0.02, `wait ${index}: ${waited} s`);
    }
    const [status] = await webhooksStatus(service);
    assert.equal(status.state, "active");
    assert.match(status.lastError, /500/);
  });
});

test("410 disables the endpoint; enable resumes from the same position with nothing skipped", async () => {
  await withSetup({}, async ({ receiver, config, start }) => {
    let gone = true;
    receiver.answer = () => (gone ? 410 : 200);
    const service = await start();
    await post(service, "gone-1", summary(1));
    await receiver.until(() => receiver.attempts.length >= 1, 30000, "the first attempt");
    await statusWhen(service, (status) => status.state === "disabled", 10000, "the endpoint is disabled");
    const ids = [
      "gone-1",
      ...(await ingest(service, { conversations: 3, perConversation: 4, writers: 3, prefix: "later" })),
    ];
    assert.equal(receiver.attempts.length, 1, "nothing is sent while disabled");
    gone = false;
    assert.match(cli(config, "webhooks", "list"), /receiver\tdisabled/);
    cli(config, "webhooks", "enable", "receiver");
    await receiver.until(() => receiver.delivered.length >= 13, 30000, "everything after enable");
    const expected = counts(ids, 4);
    expected.set("gone-1", 1);
    assertDeliveredInOrder(receiver, expected);
  });
});

test("replay sends the items after a position again", async () => {
  await withSetup({}, async ({ receiver, config, start }) => {
    const service = await start();
    const ids = await ingest(service, { conversations: 2, perConversation: 3, writers: 1 });
    await receiver.until(() => receiver.delivered.length >= 6, 30000, "all 6 delivered");
    // The feed's order: (transaction, conversation, seq), as the opaque position holds it.
    const place = (position) => JSON.parse(Buffer.from(position, "base64url").toString());
    const later = (a, b) => a.t > b.t || (a.t === b.t && (a.c > b.c || (a.c === b.c && a.s > b.s)));
    const inFeedOrder = receiver.delivered
      .map((message) => message.data)
      .sort((a, b) => (later(place(a.position), place(b.position)) ? 1 : -1));
    const third = inFeedOrder[2].position;
    const after = inFeedOrder.slice(3);
    const before = receiver.attempts.length;
    cli(config, "webhooks", "replay", "receiver", "--from", third);
    await receiver.until(() => receiver.attempts.length >= before + 3, 30000, "the 3 items after it again");
    // Conversations go in parallel: the same items, each conversation's in order.
    const again = receiver.attempts.slice(before).map((attempt) => attempt.message.data);
    const positions = (items) => items.map((item) => item.position).sort();
    assert.deepEqual(positions(again), positions(after));
    for (const conversation of ids) {
      const seqs = again.filter((item) => item.conversationId === conversation).map((item) => item.seq);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => a - b),
        conversation,
      );
    }
    assertDeliveredInOrder(receiver, counts(ids, 3));
  });
});

test("SIGKILL of the delivering process, then a restart: nothing lost, nothing out of order", async () => {
  await withSetup({}, async ({ receiver, start }) => {
    receiver.delayMs = 5;
    const first = await start();
    const ids = await ingest(first, { conversations: 40, perConversation: 25, writers: 8 });
    await receiver.until(() => receiver.delivered.length >= 200, 60000, "200 delivered");
    await first.stop("SIGKILL");
    assert.ok(receiver.delivered.length < 1000, "killed mid-stream");
    await start();
    await receiver.until(() => receiver.delivered.length >= 1000, 120000, "all 1,000 delivered");
    assertDeliveredInOrder(receiver, counts(ids, 25));
  });
});

test("two replicas: the one delivering is killed and the other takes over within 30 s", async () => {
  await withSetup({}, async ({ receiver, database, start }) => {
    receiver.delayMs = 5;
    const replicas = [await start(), await start(await freePort())];
    const ids = await ingest(replicas[0], { conversations: 40, perConversation: 25, writers: 8 });
    await receiver.until(() => receiver.delivered.length >= 200, 60000, "200 delivered");
    const owner = database.query("SELECT lease_owner FROM webhook_endpoints WHERE name = 'receiver'");
    const holder = replicas.find((replica) => owner.includes(`/${replica.pid}/`));
    assert.ok(holder, `a replica holds the endpoint: ${owner}`);
    await holder.stop("SIGKILL");
    const killedAt = Date.now();
    const attemptsThen = receiver.attempts.length;
    await receiver.until(() => receiver.attempts.length > attemptsThen, 35000, "the other replica delivers");
    const tookOver = (receiver.attempts[attemptsThen].at - killedAt) / 1000;
    assert.ok(tookOver <= 30, `taken over after ${tookOver} s`);
    await receiver.until(() => receiver.delivered.length >= 1000, 120000, "all 1,000 delivered");
    assertDeliveredInOrder(receiver, counts(ids, 25));
  });
});

test("a database link cut during delivery loses nothing", async () => {
  const proxy = await tcpProxy(Number(new URL(ADMIN_URL).port || 5432));
  await withSetup(
    {
      databaseUrl: (fresh) => {
        const through = new URL(fresh.url);
        through.port = String(proxy.port);
        return through.toString();
      },
    },
    async ({ receiver, start }) => {
      receiver.delayMs = 5;
      const service = await start();
      const ids = await ingest(service, { conversations: 20, perConversation: 25, writers: 4 });
      await receiver.until(() => receiver.delivered.length >= 100, 60000, "100 delivered");
      proxy.cut();
      await new Promise((wait) => setTimeout(wait, 3000));
      proxy.restore();
      await receiver.until(() => receiver.delivered.length >= 500, 120000, "all 500 delivered");
      assertDeliveredInOrder(receiver, counts(ids, 25));
    },
  );
  await proxy.close();
});

test("an erasure reaches the receiver as conversation.erased, after that conversation's items", async () => {
  await withSetup({}, async ({ receiver, start }) => {
    const service = await start();
    await ingest(service, { conversations: 1, perConversation: 3, writers: 1, prefix: "erased" });
    // Erasing takes the events out of the feed: those not delivered yet are never sent.
    await receiver.until(() => receiver.delivered.length >= 3, 30000, "the three events");
    const response = await fetch(`${service.url}/api/v1/bots/${BOT}/conversations/erased-0`, {
      method: "DELETE",
      headers: { token: service.token },
    });
    assert.ok(response.status === 204 || response.status === 200, `erase answered ${response.status}`);
    await receiver.until(
      () => receiver.delivered.some((message) => message.type === "conversation.erased"),
      30000,
      "the erasure",
    );
    const kinds = receiver.delivered.map((message) => `${message.type}:${message.data.seq ?? ""}`);
    assert.deepEqual(kinds, [
      "conversation.event:1",
      "conversation.event:2",
      "conversation.event:3",
      "conversation.erased:",
    ]);
    assert.equal(receiver.delivered[3].data.conversationId, "erased-0");
    assert.equal(receiver.delivered[3].data.kind, "conversation.erased");
  });
});

test("a name that resolves to a loopback address is refused at delivery, with a clear error", async () => {
  const port = await freePort();
  await withSetup({ url: `https://localhost:${port}/hooks`, allowHosts: [] }, async ({ receiver, start }) => {
    const service = await start();
    await post(service, "refused-1", summary(1));
    const status = await statusWhen(service, (status) => status.lastError, 15000, "the attempt fails");
    assert.equal(status.state, "retrying");
    assert.match(status.lastError, /localhost resolves only to addresses webhooks may not reach/);
    assert.equal(receiver.attempts.length, 0);
  });
});

test("check-config names an endpoint whose target is refused, unless its host is listed", () => {
  for (const url of ["http://169.254.169.254/", "https://10.0.0.1/", "https://[::1]/"]) {
    const config = writeConfig({
      port: 1,
      databaseUrl: "postgres://unused/db",
      webhooks: webhookToml({ url, name: "crm-sync" }),
      allowHosts: [],
    });
    let failure;
    try {
      execFileSync(binary, ["--config", config.path, "check-config"], { env: serviceEnv(), stdio: "pipe" });
    } catch (error) {
      failure = error.stderr.toString();
    }
    assert.ok(failure, `${url} is refused`);
    assert.match(failure, /webhook crm-sync: url/, failure);
    const listed = writeConfig({
      port: 1,
      databaseUrl: "postgres://unused/db",
      webhooks: webhookToml({ url, name: "crm-sync" }),
      allowHosts: [new URL(url).hostname],
    });
    assert.match(cli(listed, "check-config"), /1 webhook/);
  }
});
