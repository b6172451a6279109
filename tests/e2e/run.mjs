// The e2e driver: builds the test page, launches Debian's Chromium headless with
// playwright-core and runs the scenarios against the gateway and emulator that
// tests/it/e2e.rs started. Each scenario gets a fresh browser context (MSAL keeps the
// signed-in account in sessionStorage and refuses to start a flow while signed in).
//
// Environment (set by tests/it/e2e.rs): E2E_PAGE_URL, E2E_GATEWAY_URL, E2E_EMULATOR_URL,
// E2E_ADMIN_URL. Optional: CHROMIUM (default /usr/bin/chromium), E2E_ARTIFACTS (default
// tests/e2e/artifacts; a screenshot and a trace of each failed scenario go there),
// E2E_ONLY (run only scenarios whose name contains this), E2E_VERBOSE (print the page's
// console for passing scenarios too).
//
// Exit status 0 only if every scenario passed.

import { chromium } from "playwright-core";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { buildPage } from "./build.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through tests/it/e2e.rs: scripts/e2e)`);
  return v.replace(/\/$/, "");
};
const PAGE = env("E2E_PAGE_URL");
const GATEWAY = env("E2E_GATEWAY_URL");
const EMULATOR = env("E2E_EMULATOR_URL");
const ADMIN = env("E2E_ADMIN_URL");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? join(here, "artifacts");
const ONLY = process.env.E2E_ONLY ?? "";

const PASSWORD = "Passw0rd!";
const SMS_PHONE = "+447400123456"; // sms@contoso.com's MFA phone (demo users)
const PREMIUM_PHONE = "+449090123456"; // a GB premium-rate number: destination policy denies
const GOOD_PHONE = "+447400123458"; // a GB mobile: allowed

// ---- the emulator's outbox and the gateway's metrics ----

async function outbox() {
  const r = await fetch(`${EMULATOR}/_emulator/outbox`);
  assert.equal(r.status, 200, "GET /_emulator/outbox");
  return r.json();
}

async function clearOutbox() {
  const r = await fetch(`${EMULATOR}/_emulator/outbox`, { method: "DELETE" });
  assert.ok(r.ok, `DELETE /_emulator/outbox: ${r.status}`);
}

async function sent(channel, target) {
  return (await outbox()).filter((e) => e.channel === channel && (!target || e.target === target));
}

async function reasonCount(reason) {
  const text = await (await fetch(`${ADMIN}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.includes(`reason="${reason}"`)) continue;
    total += Number(line.trim().split(/\s+/).pop());
  }
  return total;
}

// ---- the browser ----

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

// Call a step of the page (window.e2e[name](...args)) and return what it returns.
function stepper(page, log) {
  return async (name, ...args) => {
    const out = await page.evaluate(([n, a]) => window.e2e[n](...a), [name, args]);
    log.push({ step: name, args, out });
    return out;
  };
}

const results = [];

async function scenario(name, body) {
  if (ONLY && !name.includes(ONLY)) return;
  const started = Date.now();
  const context = await browser.newContext();
  await context.tracing.start({ screenshots: true, snapshots: true });
  const page = await context.newPage();
  const log = [];
  const consoleLines = [];
  const foreign = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  // MSAL must reach nothing but the gateway (and the page its own origin).
  page.on("request", (req) => {
    const host = new URL(req.url()).hostname;
    if (host !== "127.0.0.1" && host !== "localhost") foreign.push(req.url());
  });
  let error = null;
  try {
    await clearOutbox();
    await page.goto(`${PAGE}/?gateway=${encodeURIComponent(GATEWAY)}`);
    await page.waitForFunction(() => window.e2e?.ready === true, null, { timeout: 20_000 });
    await body({ page, step: stepper(page, log) });
    assert.deepEqual(foreign, [], "the page contacted hosts other than loopback");
  } catch (e) {
    error = e;
  }
  const ms = Date.now() - started;
  if (error) {
    await mkdir(ARTIFACTS, { recursive: true });
    const base = join(ARTIFACTS, name.replace(/[^a-z0-9]+/gi, "-"));
    await page.screenshot({ path: `${base}.png`, fullPage: true }).catch(() => {});
    await context.tracing.stop({ path: `${base}.trace.zip` }).catch(() => {});
    const calls = await page.evaluate(() => window.e2e?.calls?.() ?? []).catch(() => []);
    const box = await outbox().catch((e) => `${e}`);
    await writeFile(
      `${base}.json`,
      JSON.stringify({ error: `${error.stack ?? error}`, steps: log, calls, outbox: box, console: consoleLines, foreign }, null, 2),
    );
    console.log(`FAIL ${name} (${ms} ms): ${error.message}\n     artifacts: ${base}.{png,json,trace.zip}`);
  } else {
    await context.tracing.stop();
    console.log(`ok   ${name} (${ms} ms)`);
    if (process.env.E2E_VERBOSE) for (const l of consoleLines) console.log(`     ${l}`);
  }
  await context.close();
  results.push({ name, ok: !error });
}

const smsMethod = (summary) => {
  const m = (summary.authMethods ?? []).find((a) => a.challenge_channel === "sms");
  assert.ok(m, `an SMS method among ${JSON.stringify(summary.authMethods)}`);
  return m;
};

// ---- scenarios ----

await rm(ARTIFACTS, { recursive: true, force: true });
await buildPage();

await scenario("1 sign-in with password and SMS MFA allowed by policy", async ({ step }) => {
  const start = await step("signIn", "sms@contoso.com", PASSWORD);
  assert.equal(start.error, null, "signIn");
  assert.equal(start.state, "MfaAwaitingState");
  const method = smsMethod(start);
  assert.equal((await outbox()).length, 0, "nothing sent before the MFA challenge");

  const challenged = await step("requestMfa", method.id);
  assert.equal(challenged.error, null, "requestChallenge");
  assert.equal(challenged.state, "MfaVerificationRequiredState");
  const sms = await sent("sms");
  assert.equal(sms.length, 1, "exactly one SMS");
  assert.equal(sms[0].target, SMS_PHONE);

  const done = await step("submitChallenge", sms[0].code);
  assert.equal(done.error, null, "submitChallenge");
  assert.equal(done.state, "MfaCompletedState");
  const tokens = await step("tokens");
  assert.equal(tokens.signedIn, true, "MSAL has a signed-in account");
  assert.equal(tokens.username, "sms@contoso.com");
  assert.ok(tokens.idToken, "an ID token");
  assert.ok(tokens.accessToken, `an access token (${JSON.stringify(tokens.accessTokenError)})`);
  assert.equal((await outbox()).length, 1, "still exactly one SMS");
});

await scenario("2 MFA resend, then the per-flow velocity rule stops the fourth SMS", async ({ step }) => {
  const start = await step("signIn", "sms@contoso.com", PASSWORD);
  assert.equal(start.state, "MfaAwaitingState");
  const method = smsMethod(start);
  // MSAL 5.x (V1 API) has no resendCode() on MFA states: a resend is requestChallenge()
  // again on the verification state (MfaState.requestChallenge, MFA_REQUEST_CHALLENGE).
  for (let n = 1; n <= 3; n++) {
    const r = await step("requestMfa", method.id);
    assert.equal(r.error, null, `send ${n}`);
    assert.equal(r.state, "MfaVerificationRequiredState");
    assert.equal((await sent("sms", SMS_PHONE)).length, n, `${n} SMS after send ${n}`);
  }
  const fourth = await step("requestMfa", method.id);
  assert.ok(fourth.error, "the fourth send is refused");
  assert.equal(fourth.error.error, "access_denied");
  assert.equal(fourth.error.suberror, "provider_blocked_by_rep");
  assert.equal(fourth.error.isVerificationContactBlocked, true, "MSAL: isVerificationContactBlocked()");
  assert.equal((await sent("sms")).length, 3, "no fourth SMS");
  const shown = await step("status");
  assert.ok(
    shown.some((l) => l.includes("requestChallenge: error access_denied") && l.includes("can't be used")),
    `the page shows the error: ${JSON.stringify(shown)}`,
  );
  // The flow is not broken: the last code still signs the user in.
  const last = (await sent("sms")).at(-1);
  const done = await step("submitChallenge", last.code);
  assert.equal(done.error, null, "submit the third code");
  assert.equal((await step("tokens")).signedIn, true);
});

await scenario("3 JIT registration of a premium-rate number is blocked", async ({ step }) => {
  const start = await step("signIn", "newphone@contoso.com", PASSWORD);
  assert.equal(start.error, null, "signIn");
  assert.equal(start.state, "AuthMethodRegistrationRequiredState");
  const method = smsMethod(start);

  const blocked = await step("registerContact", method.id, PREMIUM_PHONE);
  assert.ok(blocked.error, "registering a premium-rate number fails");
  assert.equal(blocked.error.error, "access_denied");
  assert.equal(blocked.error.isVerificationContactBlocked, true, "MSAL: isVerificationContactBlocked()");
  assert.equal((await outbox()).length, 0, "no SMS");
  const shown = await step("status");
  assert.ok(shown.some((l) => l.includes("can't be used")), `the page shows it: ${JSON.stringify(shown)}`);

  // The user picks an ordinary mobile number instead and finishes.
  const ok = await step("registerContact", method.id, GOOD_PHONE);
  assert.equal(ok.error, null, "registering a mobile number");
  assert.equal(ok.state, "AuthMethodVerificationRequiredState");
  const sms = await sent("sms");
  assert.equal(sms.length, 1);
  assert.equal(sms[0].target, GOOD_PHONE);
  const done = await step("submitChallenge", sms[0].code);
  assert.equal(done.error, null, "submit the registration code");
  assert.equal((await step("tokens")).signedIn, true);
});

await scenario("4 step-up with the built-in proof of work, solved with altcha-lib", async ({ step }) => {
  const refusedBefore = await reasonCount("stepup:proof_refused");
  const acceptedBefore = await reasonCount("stepup:proof_accepted");
  // The page's fraud signal makes the mock provider fail; fail_mode = step_up.
  await step("setSignal", "x-e2e-risk", "provider-down");
  const start = await step("signIn", "sms@contoso.com", PASSWORD);
  assert.equal(start.state, "MfaAwaitingState");
  const method = smsMethod(start);

  const stepped = await step("requestMfa", method.id);
  assert.ok(stepped.error, "the send is stepped up");
  assert.equal(stepped.error.error, "access_denied");
  assert.equal(stepped.error.suberror, "challenge_required");
  assert.equal((await outbox()).length, 0, "no SMS before the proof");
  const challenge = await step("stepUpChallenge");
  assert.equal(challenge?.type, "pow");
  assert.equal(challenge.format, "altcha");
  assert.equal(challenge.header, "x-otpgate-proof");

  const { header, proof } = await step("solveStepUp");
  await step("onNextSend", header, proof);
  const retried = await step("requestMfa", method.id);
  assert.equal(retried.error, null, "the same MSAL call with the proof goes through");
  assert.equal(retried.state, "MfaVerificationRequiredState");
  assert.equal((await step("lastCall")).sent[header], proof, "the interceptor sent the proof");
  const sms = await sent("sms");
  assert.equal(sms.length, 1, "one SMS after the proof");

  // The same proof again (a resend in the same flow, to the same phone): refused.
  await step("onNextSend", header, proof);
  const replayed = await step("requestMfa", method.id);
  assert.ok(replayed.error, "a replayed proof is refused");
  assert.equal(replayed.error.suberror, "challenge_required", "asked for a new proof");
  assert.ok((await step("stepUpChallenge"))?.altcha, "with a fresh challenge");
  assert.equal((await outbox()).length, 1, "no SMS for the replay");
  assert.equal(await reasonCount("stepup:proof_accepted"), acceptedBefore + 1, "proof accepted once");
  assert.equal(await reasonCount("stepup:proof_refused"), refusedBefore + 1, "replay refused once");

  const done = await step("submitChallenge", sms[0].code);
  assert.equal(done.error, null, "submitChallenge");
  assert.equal(done.state, "MfaCompletedState");
  const tokens = await step("tokens");
  assert.equal(tokens.signedIn, true);
  assert.ok(tokens.idToken && tokens.accessToken, "tokens");
});

const newUser = `e2e-${Date.now()}@contoso.com`;
const newPassword = "N3w-Passw0rd!e2e";

await scenario("5a sign-up with an email code passes through", async ({ step }) => {
  const start = await step("signUp", newUser, newPassword);
  assert.equal(start.error, null, "signUp");
  assert.equal(start.state, "SignUpCodeRequiredState");
  const mail = await sent("email", newUser);
  assert.equal(mail.length, 1, "one email code");
  let r = await step("submitCode", mail[0].code);
  assert.equal(r.error, null, "submitCode");
  if (r.state === "SignUpPasswordRequiredState") r = await step("submitPassword", newPassword);
  assert.equal(r.state, "SignUpCompletedState");
  r = await step("signInAfter");
  assert.equal(r.error, null, "sign in after sign-up");
  assert.equal(r.state, "SignInCompletedState");
  const tokens = await step("tokens");
  assert.equal(tokens.signedIn, true);
  assert.equal(tokens.username, newUser);
  assert.equal((await sent("sms")).length, 0);
});

await scenario("5b password reset passes through", async ({ step }) => {
  const start = await step("resetPassword", "password@contoso.com");
  assert.equal(start.error, null, "resetPassword");
  assert.equal(start.state, "ResetPasswordCodeRequiredState");
  const mail = await sent("email", "password@contoso.com");
  assert.equal(mail.length, 1, "one email code");
  let r = await step("submitCode", mail[0].code);
  assert.equal(r.error, null, "submitCode");
  assert.equal(r.state, "ResetPasswordPasswordRequiredState");
  r = await step("submitNewPassword", newPassword);
  assert.equal(r.error, null, "submitNewPassword");
  assert.equal(r.state, "ResetPasswordCompletedState");
  r = await step("signInAfter");
  assert.equal(r.error, null, "sign in after reset");
  assert.equal(r.state, "SignInCompletedState");
  assert.equal((await step("tokens")).signedIn, true);
});

await scenario("5c the new password signs in", async ({ step }) => {
  const r = await step("signIn", "password@contoso.com", newPassword);
  assert.equal(r.error, null, "signIn with the new password");
  assert.equal(r.state, "SignInCompletedState");
  assert.equal((await step("tokens")).signedIn, true);
});

await scenario("5d email one-time code sign-in is judged and allowed", async ({ step }) => {
  const start = await step("signIn", "otp@contoso.com");
  assert.equal(start.error, null, "signIn");
  assert.equal(start.state, "SignInCodeRequiredState");
  const mail = await sent("email", "otp@contoso.com");
  assert.equal(mail.length, 1, "one email code");
  const r = await step("submitCode", mail[0].code);
  assert.equal(r.error, null, "submitCode");
  assert.equal(r.state, "SignInCompletedState");
  assert.equal((await step("tokens")).signedIn, true);
});

await scenario("5e email code resends are judged: the per-flow rule stops the sixth", async ({ step }) => {
  const start = await step("signIn", "otp@contoso.com");
  assert.equal(start.error, null, "signIn");
  assert.equal(start.state, "SignInCodeRequiredState");
  const before = (await sent("email", "otp@contoso.com")).length;
  // One code at sign-in, four resends: the five the e2e config's email-per-flow allows.
  for (let n = 1; n <= 4; n++) {
    const r = await step("resendCode");
    assert.equal(r.error, null, `resend ${n}`);
  }
  assert.equal((await sent("email", "otp@contoso.com")).length, before + 4, "five codes in this flow");
  const sixth = await step("resendCode");
  assert.ok(sixth.error, "the sixth code is refused");
  assert.equal(sixth.error.error, "access_denied");
  assert.equal((await sent("email", "otp@contoso.com")).length, before + 4, "no sixth email");
  // The last code still signs the user in.
  const last = (await sent("email", "otp@contoso.com")).at(-1);
  const done = await step("submitCode", last.code);
  assert.equal(done.error, null, "submitCode");
  assert.equal((await step("tokens")).signedIn, true);
});

await browser.close();
const failed = results.filter((r) => !r.ok);
console.log(`${results.length - failed.length}/${results.length} scenarios passed`);
process.exit(failed.length === 0 && results.length > 0 ? 0 : 1);
