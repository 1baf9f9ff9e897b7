// The console's Server-Sent Events parser (it reads the change stream through fetch(),
// since an EventSource cannot send the token header), fed the ways a network splits text.

import assert from "node:assert/strict";
import { test } from "node:test";
import { coalesce, createSseParser } from "../public/js/live.mjs";

function parse(chunks) {
  const events = [];
  const parser = createSseParser((event) => events.push(event));
  for (const chunk of chunks) parser.push(chunk);
  return { events, parser };
}

test("events, ids and comments as the service sends them", () => {
  const { events, parser } = parse([
    ": heartbeat\n\n",
    'id: p1\nevent: change\ndata: {"seq":1}\n\n',
    'id: p2\nevent: change\ndata: {"seq":2}\n\n',
  ]);
  assert.deepEqual(events, [
    { type: "change", data: '{"seq":1}', id: "p1" },
    { type: "change", data: '{"seq":2}', id: "p2" },
  ]);
  assert.equal(parser.lastEventId, "p2");
});

test("any split of the text gives the same events, with LF, CRLF or CR line ends", () => {
  for (const end of ["\n", "\r\n", "\r"]) {
    const text = [`: hi`, `id: a`, `event: change`, `data: one`, `data:two`, ``, `data: three`, ``, ``].join(end);
    const whole = parse([text]).events;
    assert.equal(whole.length, 2);
    assert.deepEqual(whole[0], { type: "change", data: "one\ntwo", id: "a" });
    assert.deepEqual(whole[1], { type: "message", data: "three", id: "a" });
    for (let cut = 1; cut < text.length; cut += 1) {
      assert.deepEqual(
        parse([text.slice(0, cut), text.slice(cut)]).events,
        whole,
        `cut at ${cut} with ${JSON.stringify(end)}`,
      );
    }
    assert.deepEqual(parse([...text]).events, whole, "one character at a time");
  }
});

test("an event is only dispatched at its blank line; an id with NUL is ignored", () => {
  const { events, parser } = parse(["id: ok\ndata: x\n", "id: bad\0\n"]);
  assert.deepEqual(events, []);
  parser.push("\n");
  assert.deepEqual(events, [{ type: "message", data: "x", id: "ok" }]);
});

test("coalesce runs once per burst and once more for triggers while running", async () => {
  let runs = 0;
  let started;
  let nextStart = new Promise((resolve) => (started = resolve));
  let release;
  const trigger = coalesce(async () => {
    runs += 1;
    const done = new Promise((resolve) => (release = resolve));
    started();
    await done;
  }, 5);
  trigger();
  trigger();
  trigger();
  await nextStart;
  nextStart = new Promise((resolve) => (started = resolve));
  assert.equal(runs, 1, "a burst is one run");
  trigger();
  trigger();
  assert.equal(runs, 1, "nothing runs twice at once");
  release();
  await nextStart;
  assert.equal(runs, 2, "triggers while it ran make exactly one more run");
  release();
  trigger.cancel();
});
