// The query API of this origin, with the token in header `token`. A 401 signs out (the
// sign-in form says why), or sends a person whose token ran out back through sign-in;
// every other error becomes an ApiError with the problem's text.

import { renewSignIn } from "./oidc.mjs";
import { person, signOut, token } from "./session.mjs";

export class ApiError extends Error {
  constructor(status, problem, retryAfter = null) {
    const detail = problem?.detail || problem?.title || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.problem = problem ?? null;
    this.retryAfter = retryAfter;
  }

  /** What to tell the user: the problem's title and detail, and each field error. */
  describe() {
    const problem = this.problem;
    if (this.status === 0) return "The service could not be reached. Check that it is running.";
    if (this.status === 403) return forbidden();
    if (this.status === 404 && !problem?.detail) return "Not found.";
    const parts = [];
    if (problem?.title) parts.push(problem.title);
    if (problem?.detail && problem.detail !== problem.title) parts.push(problem.detail);
    for (const error of problem?.errors ?? []) parts.push(`${error.path}: ${error.message}`);
    if (this.status === 503) parts.push(`Try again${this.retryAfter ? ` in ${this.retryAfter} s` : " shortly"}.`);
    return parts.length ? parts.join(" — ") : `The service answered HTTP ${this.status}.`;
  }
}

const UNAUTHORIZED_MESSAGE = "The service refused the token (it is invalid or has expired). Paste a new read token.";
const PERSON_REFUSED_MESSAGE =
  "The service refused your sign-in. Sign in again; if it keeps happening, the service and the identity provider disagree (ask an administrator).";

function forbidden() {
  const signedIn = person();
  if (!signedIn) return "This token's app may not read this (it lacks the read permission).";
  return `You are signed in as ${signedIn.name}, but none of your groups may read this. Ask an administrator to map one of your groups to this bot ([auth.oidc.roles] in the service's configuration).`;
}

/** After a 401: a person whose token ran out signs in again (back to this page); others are signed out. */
function refused() {
  const signedIn = person();
  if (signedIn && Date.now() >= signedIn.expiresAt - 5000) renewSignIn();
  else signOut(signedIn ? PERSON_REFUSED_MESSAGE : UNAUTHORIZED_MESSAGE);
}

/** `/api/v1/bots/a%2Fb/conversations` from ["bots", "a/b", "conversations"]. */
export function apiPath(...segments) {
  return `/api/v1/${segments.map((segment) => encodeURIComponent(segment)).join("/")}`;
}

/** Adds the query parameters that have a value. */
export function withQuery(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

function headers(extra = {}) {
  const value = token();
  return { Accept: "application/json", ...(value ? { token: value } : {}), ...extra };
}

/** Only URLs of this origin ever get the token (a `Link` header could name another). */
function sameOrigin(url) {
  const resolved = new URL(url, location.origin);
  if (resolved.origin !== location.origin)
    throw new ApiError(0, { title: "Refusing to follow a link to another origin" });
  return resolved;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

let clockOffsetMs = 0;
let fineClock = false;

/**
 * The service's clock, as well as this page can tell: open stints are drawn to the
 * service's "now", not to a browser clock that may be off. Coarse from the `Date` header;
 * fine when a page reports an open stint's `durationSeconds` (counted to the service's now).
 */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

export function noteServerTime(serverMs, receivedAtMs = Date.now()) {
  if (!Number.isFinite(serverMs)) return;
  clockOffsetMs = serverMs - receivedAtMs;
  fineClock = true;
}

function noteDateHeader(response) {
  if (fineClock) return;
  const date = Date.parse(response.headers.get("date") ?? "");
  if (Number.isNaN(date)) return;
  // The header has whole seconds: only an offset well beyond that is worth correcting.
  const offset = date - Date.now();
  clockOffsetMs = Math.abs(offset) > 2000 ? offset : 0;
}

/** GET a JSON document; resolves to `{body, response}`. */
export async function getJson(url, { signal } = {}) {
  let response;
  try {
    response = await fetch(sameOrigin(url), { headers: headers(), signal, cache: "no-store", credentials: "omit" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, null);
  }
  noteDateHeader(response);
  if (response.status === 401) {
    refused();
    throw new ApiError(401, await problemOf(response));
  }
  if (!response.ok) {
    throw new ApiError(response.status, await problemOf(response), response.headers.get("retry-after"));
  }
  return { body: await response.json(), response };
}

export async function get(url, options) {
  return (await getJson(url, options)).body;
}

/** The `rel="next"` URL of a `Link` header, if any. */
export function nextLink(response) {
  const header = response.headers.get("link");
  if (!header) return null;
  for (const part of header.split(",")) {
    const match = /<([^>]*)>\s*;(.*)/.exec(part.trim());
    if (match && /rel\s*=\s*"?next"?/i.test(match[2])) return match[1];
  }
  return null;
}

/** Opens a streaming GET (for Server-Sent Events); the caller reads `response.body`. */
export async function openStream(url, { signal, lastEventId }) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId) extra["Last-Event-ID"] = lastEventId;
  const response = await fetch(sameOrigin(url), {
    headers: headers(extra),
    signal,
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401) {
    refused();
    throw new ApiError(401, null);
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response), response.headers.get("retry-after"));
  return response;
}

export { UNAUTHORIZED_MESSAGE };
