// Live updates: the bot's change stream (SPEC 8) read with fetch(), since an EventSource
// cannot send the `token` header and the token must never go in a URL. A small
// Server-Sent Events parser, resumption with `Last-Event-ID`, and a bounded backoff.

import { apiPath, openStream, withQuery } from "./api.mjs";

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
/** The service sends a heartbeat every 15 s: this much silence means the stream is dead. */
const SILENCE_MS = 45000;

/**
 * A Server-Sent Events parser (the WHATWG event-stream format): `push` text as it arrives;
 * `onEvent({type, data, id})` is called for each complete event; `onId` whenever the last
 * event id changes.
 */
export function createSseParser(onEvent) {
  let buffer = "";
  let data = [];
  let type = "";
  let lastId = null;
  let sawCarriageReturn = false;

  function line(text) {
    if (text === "") {
      if (data.length) onEvent({ type: type || "message", data: data.join("\n"), id: lastId });
      data = [];
      type = "";
      return;
    }
    if (text.startsWith(":")) return; // a comment: the heartbeat
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") type = value;
    else if (field === "id" && !value.includes("\0")) lastId = value;
  }

  return {
    push(chunk) {
      let text = chunk;
      // A CRLF split across chunks: the LF was already a line end.
      if (sawCarriageReturn && text.startsWith("\n")) text = text.slice(1);
      sawCarriageReturn = false;
      buffer += text;
      let start = 0;
      for (let index = 0; index < buffer.length; index += 1) {
        const char = buffer[index];
        if (char !== "\n" && char !== "\r") continue;
        line(buffer.slice(start, index));
        if (char === "\r") {
          if (index + 1 === buffer.length) sawCarriageReturn = true;
          else if (buffer[index + 1] === "\n") index += 1;
        }
        start = index + 1;
      }
      buffer = buffer.slice(start);
    },
    get lastEventId() {
      return lastId;
    },
    set lastEventId(value) {
      lastId = value;
    },
  };
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });

/** One bot's stream, shared by the pages that show that bot; listeners get each item. */
class Feed {
  constructor(botId, onState) {
    this.botId = botId;
    this.onState = onState;
    this.listeners = new Set();
    this.lastEventId = null;
    this.closing = new AbortController();
    this.state = { state: "connecting" };
    this.run();
  }

  setState(state, extra = {}) {
    this.state = { state, ...extra };
    this.onState(this.state);
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close() {
    this.closing.abort();
    this.request?.abort();
  }

  async run() {
    let attempt = 0;
    // A first connection starts at the feed's end (`after=now`): the pages load what is
    // already stored themselves. A reconnection resumes after the last item seen.
    const url = withQuery(apiPath("bots", this.botId, "changes", "stream"), { after: "now" });
    while (!this.closing.signal.aborted) {
      this.request = new AbortController();
      let retryAfter = null;
      try {
        this.setState(attempt ? "reconnecting" : "connecting");
        const response = await openStream(url, { signal: this.request.signal, lastEventId: this.lastEventId });
        this.setState("live");
        attempt = 0;
        await this.read(response.body);
      } catch (error) {
        if (this.closing.signal.aborted) return;
        if (error.status === 401) return this.setState("off");
        if (error.status === 403 || error.status === 404) return this.setState("unavailable");
        // A position the service no longer knows: start over rather than give up.
        if (error.status === 400) this.lastEventId = null;
        retryAfter = Number(error.retryAfter) || null;
      }
      if (this.closing.signal.aborted) return;
      attempt += 1;
      const backoff = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (attempt - 1));
      const delay = Math.max(retryAfter ? retryAfter * 1000 : 0, Math.round(backoff * (0.75 + Math.random() * 0.5)));
      this.setState("waiting", { retryInMs: delay });
      await sleep(delay, this.closing.signal);
    }
  }

  async read(body) {
    const parser = createSseParser((event) => {
      if (event.id !== null) this.lastEventId = event.id;
      if (event.type !== "change") return;
      let item;
      try {
        item = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const listener of this.listeners) {
        try {
          listener(item);
        } catch (error) {
          console.error("a live update listener failed", error);
        }
      }
    });
    parser.lastEventId = this.lastEventId;
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let watchdog;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => this.request.abort(), SILENCE_MS);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        parser.push(value);
      }
    } finally {
      // The service names where the stream starts in an `id:` of its own, before any item.
      if (parser.lastEventId !== null) this.lastEventId = parser.lastEventId;
      clearTimeout(watchdog);
      try {
        reader.releaseLock();
      } catch {}
    }
  }
}

let current = null;
let stateListener = () => {};

/** Where the header shows the stream's state. */
export function onLiveState(listener) {
  stateListener = listener;
}

/** Subscribes to a bot's changes; the stream stays open while any page of that bot listens. */
export function subscribe(botId, listener) {
  if (!current || current.botId !== botId) {
    current?.close();
    current = new Feed(botId, (state) => stateListener(state));
  }
  const feed = current;
  stateListener(feed.state);
  return feed.subscribe(listener);
}

/** Closes the stream (signing out, or a page without live updates). */
export function stop() {
  current?.close();
  current = null;
  stateListener({ state: "off" });
}

/**
 * Coalesces bursts of triggers into one call of `fn`, `ms` after the first trigger; a
 * trigger while `fn` runs makes it run once more when it is done (live refreshes: a steady
 * stream of changes still refreshes every `ms` or so, never starves).
 */
export function coalesce(fn, ms) {
  let timer = null;
  let running = false;
  let again = false;
  let cancelled = false;
  async function run() {
    timer = null;
    running = true;
    try {
      await fn();
    } catch (error) {
      console.error("a live refresh failed", error);
    } finally {
      running = false;
      if (again && !cancelled) {
        again = false;
        trigger();
      }
    }
  }
  function trigger() {
    if (cancelled || timer) return;
    if (running) {
      again = true;
      return;
    }
    timer = setTimeout(run, ms);
  }
  trigger.cancel = () => {
    cancelled = true;
    clearTimeout(timer);
  };
  return trigger;
}
