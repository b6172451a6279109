// The test page: a single-page app that signs users in with Microsoft's own native-auth
// client, @azure/msal-browser/custom-auth, through otpgate in SPA proxy mode.
//
// It does what a real app with a fraud SDK would do:
// * `customAuth.authApiProxyUrl` points at otpgate (`<gateway>/api`);
// * a `requestInterceptor` adds the app's `x-` signal headers, and a step-up proof on the
//   next send once one has been solved;
// * `window.fetch` is wrapped to keep the last answer's body, because MSAL's error objects
//   carry only Entra's fields and otpgate's step-up puts its challenge in an extra one;
// * an otpgate step-up is solved with altcha-lib and the same MSAL call is made again.
//
// The driver (run.mjs) calls the steps below through `window.e2e` and reads both their
// return values and what the page shows in #status.

import { CustomAuthPublicClientApplication } from "@azure/msal-browser/custom-auth";
import { solveChallenge } from "altcha-lib/v1";

const params = new URLSearchParams(location.search);
const gateway = params.get("gateway");
const clientId = params.get("client_id") ?? "00000000-0000-4000-8000-000000000001";

// Headers the interceptor adds to every native-auth call (the "fraud SDK" signals).
const signals = {};
// Headers added to the next send (a `/challenge` call) only, then forgotten.
let nextSend = {};
// Every native-auth call the page made: method, path, status, headers we added, body.
const calls = [];

const statusEl = document.getElementById("status");
function show(text) {
  const line = document.createElement("li");
  line.textContent = text;
  statusEl.appendChild(line);
}

// Keep each answer's body, as fraud SDKs do, so the page can read fields MSAL drops.
const realFetch = window.fetch.bind(window);
window.fetch = async (input, init) => {
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
  const response = await realFetch(input, init);
  let body = null;
  try {
    body = await response.clone().json();
  } catch {
    body = null;
  }
  const sent = {};
  for (const [k, v] of Object.entries(init?.headers ?? {})) {
    if (k.toLowerCase().startsWith("x-") && !k.toLowerCase().startsWith("x-client-")) {
      sent[k.toLowerCase()] = v;
    }
  }
  calls.push({ path: url.pathname, status: response.status, sent, body });
  return response;
};

const requestInterceptor = {
  addAdditionalHeaderFields(requestUrl) {
    const headers = { ...signals };
    if (requestUrl.pathname.endsWith("/challenge")) {
      Object.assign(headers, nextSend);
      nextSend = {};
    }
    return headers;
  },
};

const app = await CustomAuthPublicClientApplication.create({
  auth: {
    clientId,
    authority: "https://contoso.ciamlogin.com/contoso.onmicrosoft.com",
    redirectUri: location.origin + "/",
  },
  customAuth: {
    authApiProxyUrl: `${gateway}/api`,
    challengeTypes: ["password", "oob", "redirect"],
    capabilities: ["mfa_required", "registration_required"],
    requestInterceptor,
  },
  cache: { cacheLocation: "sessionStorage" },
});

// The flow's current MSAL state, and the last result's account (after sign-in).
let state = null;
let account = null;

function errorOf(result) {
  const err = result.error;
  if (!err) return null;
  const data = err.errorData ?? {};
  const out = {
    kind: err.constructor?.name,
    error: data.error ?? data.errorCode,
    suberror: data.subError,
    description: data.errorDescription,
  };
  for (const probe of [
    "isVerificationContactBlocked",
    "isInvalidInput",
    "isRedirectRequired",
    "isTokenExpired",
  ]) {
    if (typeof err[probe] === "function") out[probe] = err[probe]();
  }
  return out;
}

// Summarise a result, remember its state, and show it on the page.
async function settle(step, result) {
  const error = errorOf(result);
  if (!error) state = result.state;
  if (result.data && typeof result.data.getAccount === "function") account = result.data;
  const summary = {
    step,
    state: result.state?.stateType ?? result.state?.constructor?.name,
    error,
  };
  if (typeof state?.getAuthMethods === "function") {
    summary.authMethods = state.getAuthMethods();
  }
  if (typeof state?.getCodeLength === "function") summary.codeLength = state.getCodeLength();
  if (typeof state?.getSentTo === "function") summary.sentTo = state.getSentTo();
  if (error) {
    show(`${step}: error ${error.error}${error.suberror ? ` (${error.suberror})` : ""}` +
      (error.isVerificationContactBlocked ? " — this phone number can't be used" : "") +
      (error.error === "temporarily_unavailable" ? " — too many attempts, try later" : ""));
  } else {
    show(`${step}: ${summary.state}`);
  }
  return summary;
}

function need(method) {
  if (!state || typeof state[method] !== "function") {
    throw new Error(`state ${state?.stateType} has no ${method}()`);
  }
  return state;
}

window.e2e = {
  ready: true,
  msalVersion: null,
  setSignal(name, value) {
    if (value === null) delete signals[name];
    else signals[name] = value;
  },
  calls: () => calls,
  lastCall: () => calls[calls.length - 1] ?? null,
  status: () => [...statusEl.children].map((li) => li.textContent),

  signIn: async (username, password) =>
    settle("signIn", await app.signIn({ username, password, scopes: ["openid", "offline_access"] })),
  signUp: async (username, password) =>
    settle("signUp", await app.signUp({ username, password })),
  resetPassword: async (username) => settle("resetPassword", await app.resetPassword({ username })),
  // MFA: ask for (or, on the verification state, resend) a code by one of the methods.
  requestMfa: async (methodId) =>
    settle("requestChallenge", await need("requestChallenge").requestChallenge(methodId)),
  // JIT registration: register a phone (or e-mail) of the offered method.
  registerContact: async (methodId, contact) => {
    const s = need("challengeAuthMethod");
    const method = s.getAuthMethods?.().find((m) => m.id === methodId) ?? { id: methodId };
    return settle(
      "challengeAuthMethod",
      await s.challengeAuthMethod({ authMethodType: method, verificationContact: contact }),
    );
  },
  submitChallenge: async (code) => settle("submitChallenge", await need("submitChallenge").submitChallenge(code)),
  submitCode: async (code) => settle("submitCode", await need("submitCode").submitCode(code)),
  resendCode: async () => settle("resendCode", await need("resendCode").resendCode()),
  submitPassword: async (password) =>
    settle("submitPassword", await need("submitPassword").submitPassword(password)),
  submitNewPassword: async (password) =>
    settle("submitNewPassword", await need("submitNewPassword").submitNewPassword(password)),
  signInAfter: async () =>
    settle("signInAfter", await need("signIn").signIn({ scopes: ["openid", "offline_access"] })),

  // What MSAL holds once signed in: the account, its ID token, an access token from cache.
  tokens: async () => {
    const current = app.getCurrentAccount();
    const data = current.data ?? account;
    if (!data) return { signedIn: false, error: errorOf(current) };
    const at = await data.getAccessToken({ forceRefresh: false, scopes: ["openid"] });
    return {
      signedIn: true,
      username: data.getAccount().username,
      idToken: data.getIdToken() ?? null,
      accessToken: at.data?.accessToken ?? null,
      accessTokenError: errorOf(at),
    };
  },

  // otpgate step-up: read the challenge from the last answer's body (MSAL's error has only
  // error/suberror), solve it, and put the proof on the next send.
  stepUpChallenge: () => {
    const last = calls[calls.length - 1];
    return last?.body?.otpgate_challenge ?? null;
  },
  solveStepUp: async () => {
    const c = window.e2e.stepUpChallenge();
    if (!c || c.type !== "pow" || c.format !== "altcha") {
      throw new Error(`no otpgate proof-of-work challenge in the last answer`);
    }
    const a = c.altcha;
    const started = performance.now();
    const solution = await solveChallenge(a.challenge, a.salt, a.algorithm, a.maxnumber).promise;
    if (!solution) throw new Error("altcha: no solution within maxnumber");
    const proof = btoa(
      JSON.stringify({
        algorithm: a.algorithm,
        challenge: a.challenge,
        number: solution.number,
        salt: a.salt,
        signature: a.signature,
      }),
    );
    show(`step-up solved (${Math.round(performance.now() - started)} ms)`);
    return { header: c.header, proof, number: solution.number };
  },
  // Put this header on the next send only.
  onNextSend(name, value) {
    nextSend = { ...nextSend, [name]: value };
  },
};

show("ready");
