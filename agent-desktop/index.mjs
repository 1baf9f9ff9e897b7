// Bright Pattern Agent Desktop adapter for agentassist-hooks (SPEC 7.1).
//
// A CRM integration running in the agent desktop calls `connect(adApi, options)` once. It
// registers the desktop's three handlers with their documented signatures and sends what
// they see to the service:
//
//   ON_NEW_INTERACTION (interaction)            -> POST /api/v1/bots/{botId}/interactions
//   ON_REQUEST_TRANSFER_DATA (interactionId)    -> returns the data to transfer (the desktop
//                                                  still moves it) and PUTs it to the service
//   ON_LOAD_TRANSFER_DATA (interactionId, data) -> hands the data to `onLoadTransferData`;
//                                                  when the desktop brought none, reads the
//                                                  latest the service has (needs `read`)
//
// The adapter never throws into the desktop: a handler that fails logs and returns. Calls
// the service could not take (network errors, 429, 5xx) are retried with a bounded backoff,
// each under one Idempotency-Key, so that a retry is never stored twice.

const DEFAULT_RETRY = { attempts: 5, firstDelayMs: 250, maxDelayMs: 4000 };

/**
 * @param {{ on(name: string, handler: Function): void }} adApi the desktop's `adApi`/`jsApi`
 * @param {object} options
 * @param {string} options.baseUrl the service, e.g. "https://hooks.example.com"
 * @param {string} options.botId
 * @param {string | (() => string | Promise<string>)} options.token a JWT with `ingest`
 *   (and `read`, to load transfer data from the service), or a function giving a fresh one
 * @param {string} [options.agentId] this desktop's agent; else `interaction.agentId`
 * @param {(interactionId: string) => any} [options.transferData] what this agent hands
 *   over on a transfer (the return value of ON_REQUEST_TRANSFER_DATA)
 * @param {(interactionId: string, data: any) => void} [options.onLoadTransferData] gets
 *   the data handed to this agent
 * @param {(interactionId: string) => string} [options.conversationId] the service's
 *   conversation of an interaction (the interaction id by default)
 * @param {typeof fetch} [options.fetch]
 * @param {{ warn: Function, error: Function }} [options.log]
 * @param {{ attempts?: number, firstDelayMs?: number, maxDelayMs?: number }} [options.retry]
 */
export function connect(adApi, options) {
  const settings = {
    fetch: globalThis.fetch?.bind(globalThis),
    log: console,
    conversationId: (interactionId) => interactionId,
    transferData: () => undefined,
    onLoadTransferData: () => {},
    ...options,
    retry: { ...DEFAULT_RETRY, ...options?.retry },
  };
  const base = `${String(settings.baseUrl).replace(/\/+$/, "")}/api/v1/bots/${encodeURIComponent(settings.botId)}`;
  const inFlight = new Set();
  let agentId = settings.agentId;

  // Runs `work` off the desktop's call stack; remembers it until it settles.
  const background = (what, work) => {
    const task = Promise.resolve()
      .then(work)
      .catch((error) => settings.log.error(`agentassist-hooks: ${what} failed:`, error?.message ?? error))
      .finally(() => inFlight.delete(task));
    inFlight.add(task);
  };

  const send = (method, path, body) => call(settings, method, `${base}${path}`, body, newKey());

  const conversation = (interactionId) =>
    `/conversations/${encodeURIComponent(settings.conversationId(interactionId))}`;

  guard(settings, adApi, "ON_NEW_INTERACTION", (interaction) => {
    agentId = settings.agentId ?? interaction?.agentId ?? agentId;
    if (!agentId) {
      settings.log.warn("agentassist-hooks: no agentId for this desktop; interaction not sent");
      return null;
    }
    const body = { agentId, interaction };
    if (interaction?.interactionId) {
      body.conversationId = settings.conversationId(interaction.interactionId);
    }
    background("sending the interaction", () => send("POST", "/interactions", body));
    return null;
  });

  guard(settings, adApi, "ON_REQUEST_TRANSFER_DATA", (interactionId) => {
    const data = settings.transferData(interactionId);
    const sendData = (value) => {
      if (value === undefined || value === null || !agentId) {
        return value;
      }
      background("sending the transfer data", () =>
        send("PUT", `${conversation(interactionId)}/transfer-data`, {
          participant: { identity: agentId, type: "agent" },
          data: value,
        }),
      );
      return value;
    };
    // The desktop takes the data or a promise of it; give it back the same way.
    if (data && typeof data.then === "function") {
      return data.then(sendData, (error) => {
        settings.log.error("agentassist-hooks: transferData failed:", error?.message ?? error);
        return undefined;
      });
    }
    return sendData(data);
  });

  guard(settings, adApi, "ON_LOAD_TRANSFER_DATA", (interactionId, transferredData) => {
    if (transferredData !== undefined && transferredData !== null) {
      settings.onLoadTransferData(interactionId, transferredData);
      return;
    }
    background("loading the transfer data", async () => {
      const stored = await call(settings, "GET", `${base}${conversation(interactionId)}/transfer-data`);
      if (stored) {
        settings.onLoadTransferData(interactionId, stored.data);
      }
    });
  });

  return {
    /** Resolves once every call started so far has settled (sent, or given up). */
    idle: async () => {
      while (inFlight.size > 0) {
        await Promise.allSettled([...inFlight]);
      }
    },
  };
}

// Registers `handler` for `name` so that nothing it throws reaches the desktop.
function guard(settings, adApi, name, handler) {
  adApi.on(name, (...args) => {
    try {
      return handler(...args);
    } catch (error) {
      settings.log.error(`agentassist-hooks: ${name} handler failed:`, error?.message ?? error);
      return undefined;
    }
  });
}

// One call to the service, retried while the service cannot take it. Resolves to the
// answer's JSON, or to null for a 404 (nothing stored yet); rejects when it gives up.
async function call(settings, method, url, body, idempotencyKey) {
  const { attempts, firstDelayMs, maxDelayMs } = settings.retry;
  let delay = firstDelayMs;
  for (let attempt = 1; ; attempt += 1) {
    const token = typeof settings.token === "function" ? await settings.token() : settings.token;
    const headers = { token };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
    }
    if (idempotencyKey) {
      headers["idempotency-key"] = idempotencyKey;
    }
    let retryAfter = null;
    try {
      const response = await settings.fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.ok) {
        return await response.json();
      }
      if (response.status === 404 && method === "GET") {
        return null;
      }
      const problem = await response.text();
      if (response.status !== 429 && response.status < 500) {
        throw new Refused(`${method} ${url} answered ${response.status}: ${problem}`);
      }
      retryAfter = Number(response.headers.get("retry-after")) * 1000 || null;
      settings.log.warn(`agentassist-hooks: ${method} answered ${response.status}; retrying`);
    } catch (error) {
      if (error instanceof Refused) {
        throw error;
      }
      settings.log.warn(`agentassist-hooks: ${method} failed (${error?.message ?? error}); retrying`);
    }
    if (attempt >= attempts) {
      throw new Error(`${method} ${url}: gave up after ${attempts} attempts`);
    }
    await sleep(Math.min(Math.max(delay, retryAfter ?? 0), maxDelayMs));
    delay = Math.min(delay * 2, maxDelayMs);
  }
}

/** The service refused the call for what it is: retrying cannot help. */
class Refused extends Error {}

function newKey() {
  const random =
    globalThis.crypto?.randomUUID?.() ??
    `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
  return `ad-${random}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
