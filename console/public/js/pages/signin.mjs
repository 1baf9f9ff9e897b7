// Sign-in: through the organisation's identity provider when the service has one (SPEC 13),
// or by pasting an app's read token. A token is kept in this tab's sessionStorage only,
// checked against the service at once, and never put in a URL.

import { ApiError, get } from "../api.mjs";
import { h, replace } from "../dom.mjs";
import { provider, startSignIn } from "../oidc.mjs";
import { cleanToken, looksLikeJwt, setToken, signIn, signOut } from "../session.mjs";

export async function signInPage(context, { reason }) {
  context.setTitle("Sign in");
  const view = signInForm(reason);
  view.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(view);
  });
  const settings = await provider();
  if (context.signal.aborted) return;
  const providerButton = settings ? signInWithProvider(settings, view.error) : null;
  replace(
    context.main,
    h(
      "section",
      { class: "panel panel--narrow" },
      h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in"),
      h("p", {}, "Who handled a conversation, when, for how long, and what went wrong: sign in to look."),
      view.error,
      providerButton,
      providerButton ? h("p", {}, "Or paste an app's read token:") : null,
      view.form,
    ),
  );
  (providerButton?.querySelector("button") ?? view.input).focus();
}

/** "Sign in with {name}": off to the provider, back to the page this one stands in for. */
function signInWithProvider(settings, error) {
  const button = h(
    "button",
    { type: "button", class: "button", id: "sign-in-provider" },
    `Sign in with ${settings.name}`,
  );
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await startSignIn(settings, location.hash);
    } catch (failure) {
      button.disabled = false;
      error.textContent = `The identity provider could not be reached: ${failure.message ?? failure}`;
      error.hidden = false;
    }
  });
  return h("div", { class: "sign-in-provider" }, button);
}

/** The form and its parts; `reason` (why the user was signed out) is shown in its message. */
function signInForm(reason) {
  const input = h("input", {
    id: "token-input",
    type: "password",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
    testid: "token-input",
  });
  const error = h(
    "p",
    { class: "notice notice--error", id: "sign-in-error", role: "alert", hidden: !reason, testid: "sign-in-message" },
    reason ?? "",
  );
  const button = h("button", { type: "submit", class: "button" }, "Sign in");
  const form = h(
    "form",
    { class: "sign-in", novalidate: true, "aria-labelledby": "sign-in-title" },
    h(
      "div",
      { class: "field" },
      h("label", { for: "token-input" }, "Read token (JWT)"),
      input,
      h(
        "p",
        { class: "field__help", id: "token-help" },
        "A token of an app with the read permission, e.g. from ",
        h("code", {}, "agentassist-hooks token --app-id APP --secret-env VAR"),
        ". It stays in this browser tab only and is removed when you sign out or close the tab.",
      ),
    ),
    button,
  );
  if (reason) input.setAttribute("aria-invalid", "true");
  return { form, input, error, button };
}

/** Checks the pasted token against the service, then signs in (or out again, with the reason). */
async function submit({ input, error, button }) {
  const value = cleanToken(input.value);
  if (!looksLikeJwt(value)) {
    showError(input, error, "That does not look like a token: a JWT has three parts separated by dots.");
    return;
  }
  button.disabled = true;
  button.textContent = "Checking…";
  setToken(value);
  try {
    await get("/api/v1/bots");
  } catch (failure) {
    if (failure.status === 401) return; // signed out again, with the reason shown
    if (failure.status === 403) {
      signOut("This token's app lacks the read permission: the console needs a token of an app with read.");
      return;
    }
    // An older service without GET /api/v1/bots: carry on (the bots page asks for a bot id).
    if (!(failure instanceof ApiError) || (failure.status !== 404 && failure.status !== 405)) {
      signOut(failure instanceof ApiError ? failure.describe() : "The token could not be checked.");
      return;
    }
  }
  input.value = "";
  signIn(value);
}

function showError(input, error, text) {
  error.textContent = text;
  error.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.focus();
}
