// Signing people in through the organisation's identity provider (SPEC 13): authorization
// code with PKCE (S256), `state` and `nonce` checked, by panva's oauth4webapi (vendored).
// The provider comes from the service (`sign-in.json`); the tokens stay in this tab's
// sessionStorage. A sign-in remembers the page it started on and comes back to it.

import { person, signInPerson, signOut } from "./session.mjs";
import * as oauth from "./vendor/oauth4webapi.mjs";

const PENDING = "agentassist-hooks.console.sign-in";
const RENEWED = "agentassist-hooks.console.renewed-at";
/** A renewal within this long of the last one signs out instead: no loop with the provider. */
const RENEWAL_PAUSE_MS = 30000;
let settingsRequest = null;

/** The provider people sign in with (`{issuer, clientId, scopes, name}`), or null when none. */
export function provider() {
  settingsRequest ??= fetch("sign-in.json", { cache: "no-store", credentials: "omit" }).then(
    (response) => {
      if (response.ok) return response.json();
      // Only "there is none" is kept; a failure (shed, unreachable) is asked again next time.
      if (response.status !== 404) settingsRequest = null;
      return null;
    },
    () => {
      settingsRequest = null;
      return null;
    },
  );
  return settingsRequest;
}

/** oauth4webapi refuses `http:` unless told: allowed for a provider on this machine only. */
function requestOptions(issuer) {
  const url = new URL(issuer);
  const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
  return url.protocol === "http:" && loopback ? { [oauth.allowInsecureRequests]: true } : {};
}

async function authorizationServer(settings) {
  const issuer = new URL(settings.issuer);
  const response = await oauth.discoveryRequest(issuer, requestOptions(settings.issuer));
  return oauth.processDiscoveryResponse(issuer, response);
}

function redirectUri() {
  return `${location.origin}/console/`;
}

/** Sends the browser to the provider's sign-in; `returnTo` (a hash) is shown after. */
export async function startSignIn(settings, returnTo = location.hash) {
  const server = await authorizationServer(settings);
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, nonce, returnTo }));
  const url = new URL(server.authorization_endpoint);
  const query = {
    client_id: settings.clientId,
    redirect_uri: redirectUri(),
    response_type: "code",
    scope: settings.scopes.join(" "),
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
  };
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  location.assign(url.href);
}

/**
 * Completes a sign-in the provider sent back here (`?code=…&state=…`); resolves to whether
 * there was one. The code leaves the address bar at once, whatever happens next.
 */
export async function finishSignIn() {
  const callback = new URL(location.href);
  if (!callback.searchParams.has("state") && !callback.searchParams.has("error")) return false;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `${location.pathname}${pending?.returnTo ?? ""}`);
  if (!pending) throw new Error("That sign-in was not started in this tab. Sign in again.");

  const settings = await provider();
  if (!settings) throw new Error("The service no longer signs people in through a provider.");
  const server = await authorizationServer(settings);
  const client = { client_id: settings.clientId };
  const parameters = oauth.validateAuthResponse(server, client, callback, pending.state);
  const response = await oauth.authorizationCodeGrantRequest(
    server,
    client,
    oauth.None(),
    parameters,
    redirectUri(),
    pending.verifier,
    requestOptions(settings.issuer),
  );
  const result = await oauth.processAuthorizationCodeResponse(server, client, response, {
    expectedNonce: pending.nonce,
    requireIdToken: true,
  });
  const claims = oauth.getValidatedIdTokenClaims(result);
  signInPerson(result.access_token, {
    name: claims.name ?? claims.preferred_username ?? claims.email ?? claims.sub,
    email: claims.email ?? null,
    idToken: result.id_token,
    expiresAt: Date.now() + (result.expires_in ?? 300) * 1000,
  });
  return true;
}

/** Signs out here, then at the provider (its `end_session_endpoint`) when it has one. */
export async function endSession(reason) {
  const signedIn = person();
  signOut(reason);
  const settings = signedIn ? await provider() : null;
  if (!settings) return;
  const server = await authorizationServer(settings).catch(() => null);
  if (!server?.end_session_endpoint) return;
  const url = new URL(server.end_session_endpoint);
  url.searchParams.set("client_id", settings.clientId);
  url.searchParams.set("id_token_hint", signedIn.idToken);
  url.searchParams.set("post_logout_redirect_uri", redirectUri());
  location.assign(url.href);
}

/**
 * A person whose token has run out goes back through sign-in, to the same page; once in
 * 30 s at most (a renewal that fails would otherwise go round and round), else signed out.
 */
export async function renewSignIn() {
  const last = Number(sessionStorage.getItem(RENEWED) ?? 0);
  const settings = await provider();
  if (!settings || Date.now() - last < RENEWAL_PAUSE_MS) {
    signOut("Your sign-in has expired. Sign in again.");
    return;
  }
  sessionStorage.setItem(RENEWED, String(Date.now()));
  try {
    await startSignIn(settings, location.hash);
  } catch (error) {
    signOut(`Your sign-in has expired, and the identity provider could not be reached: ${error.message ?? error}`);
  }
}
