// Drive the streamtalk web client in headless Chromium with playwright-core.
//
//   node tests/support/browser/drive_web.mjs '<json options>'
//
// Options: chromium, nodeModules, url, room (left out: the field as the page has it),
// userDataDir, screenshot, timeoutMs, fakeAudioWav (null: no fake microphone), accessKey,
// untilLatencies (N turns), untilError (wait for the error banner), untilNotice (wait until
// the page has shown a notice containing this text), untilUi ({testid: text}: wait until
// each [data-testid] element's text contains its text), clickStop (press
// "Stop reply" once the agent is there and wait for the RPC answer), handshakeDir (write
// <dir>/loaded after the page loads, wait for <dir>/go before pressing Connect).
// Prints one JSON line: {ok, reason, elapsedMs, snapshot, errorText, ui, roomField,
// leftCleanly, console, pageErrors}.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const opts = JSON.parse(process.argv[2]);
const require = createRequire(path.join(opts.nodeModules, "noop.js"));
const { chromium } = require("playwright-core");

const started = Date.now();
const deadline = started + (opts.timeoutMs || 60000);
const consoleLines = [];
const pageErrors = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  "--use-fake-ui-for-media-stream",
];
if (opts.fakeAudioWav) {
  args.push("--use-fake-device-for-media-stream", `--use-file-for-fake-audio-capture=${opts.fakeAudioWav}`);
}

let context = null;
let result = { ok: false, reason: "not started" };
try {
  context = await chromium.launchPersistentContext(opts.userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args,
    timeout: 30000,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`.slice(0, 500)));
  page.on("pageerror", (err) => pageErrors.push(String(err).slice(0, 500)));
  await page.goto(opts.url, { timeout: 15000 });
  if (opts.room !== undefined) await page.fill("#room", opts.room); // left out: the page's default
  if (opts.accessKey !== undefined) {
    await page.evaluate((k) => { document.getElementById("access-key").value = k; }, opts.accessKey);
  }
  if (opts.handshakeDir) {
    // let the test change the world between page load and Connect
    fs.writeFileSync(path.join(opts.handshakeDir, "loaded"), "");
    const goBy = Date.now() + 20000;
    while (!fs.existsSync(path.join(opts.handshakeDir, "go"))) {
      if (Date.now() > goBy) throw new Error("no go signal from the test");
      await sleep(50);
    }
  }
  await page.click("#connect");

  const snap = () => page.evaluate(() => window.streamtalk.snapshot());
  const readUi = () => page.evaluate(() => Object.fromEntries(
    [...document.querySelectorAll("[data-testid]")].map((el) => [el.dataset.testid, el.textContent.trim()]),
  ));
  const errorText = () => page.evaluate(() => {
    const el = document.getElementById("error");
    return el.hidden ? "" : el.textContent;
  });

  let reason = "timeout";
  let stopClicked = false;
  while (Date.now() < deadline) {
    const s = await snap();
    if (opts.untilError && (await errorText())) { reason = "error shown"; break; }
    if (!opts.untilError && (await errorText())) { reason = "unexpected error"; break; }
    const enoughTurns = s.latenciesMs.length >= (opts.untilLatencies || 0);
    if (opts.clickStop && enoughTurns && s.agentIdentity && !stopClicked) {
      await page.click("#stop");
      stopClicked = true;
    }
    const stopDone = !opts.clickStop || s.stopResults.length > 0;
    const noticeSeen = !opts.untilNotice || s.notices.some((n) => n.includes(opts.untilNotice));
    const uiNow = opts.untilUi ? await readUi() : {};
    const uiSeen = Object.entries(opts.untilUi || {}).every(([id, text]) => (uiNow[id] || "").includes(text));
    if (!opts.untilError && enoughTurns && stopDone && noticeSeen && uiSeen && s.connection === "connected") {
      reason = "done";
      break;
    }
    await sleep(200);
  }
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  const finalSnapshot = await snap();
  const finalError = await errorText();
  const ui = await readUi();
  // leave the room through the page's own button, so the server sees a clean exit
  if (finalSnapshot.connection === "connected") {
    await page.click("#disconnect");
    const leaveBy = Date.now() + 5000;
    while (Date.now() < leaveBy && (await snap()).connection !== "disconnected") await sleep(100);
  }
  result = {
    ok: reason === "done" || reason === "error shown",
    reason,
    snapshot: finalSnapshot,
    errorText: finalError,
    ui,
    roomField: await page.inputValue("#room"),
    leftCleanly: (await snap()).connection === "disconnected",
  };
} catch (err) {
  result = { ok: false, reason: `driver error: ${err && err.stack ? err.stack : err}` };
} finally {
  if (context) await context.close().catch(() => {});
}
result.elapsedMs = Date.now() - started;
result.console = consoleLines.slice(-60);
result.pageErrors = pageErrors;
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(result.ok ? 0 : 1);
