// The read token: pasted by the user, or a person's access token from the identity
// provider (SPEC 13); kept in this tab's sessionStorage only, sent only in the `token`
// header to this origin. Never put in a URL, never logged.

const KEY = "agentassist-hooks.console.token";
const PERSON = "agentassist-hooks.console.person";
const listeners = new Set();

/** The signed-in person (`{name, email, idToken, expiresAt}`), or null for an app token. */
export function person() {
  try {
    return JSON.parse(sessionStorage.getItem(PERSON) ?? "null");
  } catch {
    return null;
  }
}

/** Signs a person in with the access token the provider issued. */
export function signInPerson(accessToken, details) {
  sessionStorage.setItem(PERSON, JSON.stringify(details));
  signIn(accessToken);
}

export function token() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

/** Keeps the token for this tab without telling anyone yet (the sign-in form checks it first). */
export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function signIn(value) {
  setToken(value);
  for (const listener of listeners) listener({ signedIn: true });
}

/** Forgets the token; `reason` is shown on the sign-in form (e.g. after a 401). */
export function signOut(reason = null) {
  try {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(PERSON);
  } catch {}
  for (const listener of listeners) listener({ signedIn: false, reason });
}

export function onChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** A pasted token, trimmed, with a `Bearer ` prefix or quotes removed if they were copied along. */
export function cleanToken(raw) {
  let value = String(raw ?? "").trim();
  value = value.replace(/^(token|auth)\s*:\s*/i, "").replace(/^bearer\s+/i, "");
  value = value.replace(/^["']|["']$/g, "").trim();
  return value;
}

/** Whether a value looks like a JWT (three base64url parts); the service has the last word. */
export function looksLikeJwt(value) {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value);
}

/** The claims of a JWT, read without checking it (for showing the app and the expiry only). */
export function claims(value) {
  try {
    const part = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const parsed = JSON.parse(atob(padded));
    return parsed && typeof parsed === "object" ? parsed : {};
  } catch {
    return {};
  }
}
