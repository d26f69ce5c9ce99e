// End-to-end test of the kubetrail web console in headless Chromium.
//
// Starts `kubetrail serve` (identities with roles: the apiserver's ingest token, an analyst's reader token
// and an admin's) on a free loopback port with a fresh data directory, sends it the generator's traffic with its attack scenarios, the seed breach and a few
// hand-made events (a pod deletion to find, an attacker whose user agent and object name hold <script>),
// then drives Debian's /usr/bin/chromium through playwright-core: as a reader (no action is offered, and
// the API refuses them), then as an admin: log in, work the alert of the breach, go to the scope report, search for the pod deletion, open the event,
// follow the tampered Deployment's history (from its patch's event and from the sidecar's alert) and the sessions (the exec with a
// password argument, to its actor's timeline), read the volume page
// (and the gaps under its chart: a second apiserver identity sends two events a few seconds apart).
// It checks every console and API route refuses unauthenticated requests, and that attacker text is shown
// as text and never run. Screenshots of each page go to $SCREENSHOTS (default tests/console/screenshots).
//
// Usage: KUBETRAIL_BIN=/path/to/kubetrail node run.mjs   (scripts/test runs it)

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, rmSync, openSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const bin = process.env.KUBETRAIL_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(repo, "target"), "debug", "kubetrail");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = resolve(process.env.SCREENSHOTS || join(here, "screenshots"));
mkdirSync(shots, { recursive: true });

const random = () => Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
/** The admin's token (platform-security): everything. */
const TOKEN = "console-admin-" + random();
/** The analyst's token (soc-analyst): reads only. */
const READER_TOKEN = "console-reader-" + random();
/** The apiserver's token: events only. */
const INGEST_TOKEN = "console-ingest-" + random();
/** A second apiserver's token (source `webhook:apiserver-b`): two events with a silence between them. */
const GAP_TOKEN = "console-gap-" + random();
const GAP_SOURCE = "webhook:apiserver-b";
/** The silence between apiserver-b's two events, in ms: over the 2s threshold the volume page is asked for. */
const GAP_MS = 4000;
const XSS_AGENT = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">';
const XSS_NAME = '<script>window.__xss=3</script>';
const XSS_USER = "system:serviceaccount:tools:<b>x</b>";
const DELETER = "dave.oncall@example.com";
const DELETED_POD = "checkout-7f9c4d-zx2lq";

let step = 0;
const log = (msg) => console.log(`[console-test ${++step}] ${msg}`);

function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

async function until(what, fn, timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? ": " + last.message : ""}`);
}

const iso = (ms) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

function event({ id, user, verb, resource, namespace, name, code = 200, agent = "kubectl/v1.31.0", ip = "10.0.0.7", at, subresource, uri }) {
  const o = { resource, namespace, name, apiVersion: "v1" };
  if (subresource) o.subresource = subresource;
  return {
    kind: "Event", apiVersion: "audit.k8s.io/v1", level: "Metadata", auditID: id, stage: "ResponseComplete",
    requestURI: uri || `/api/v1/namespaces/${namespace}/${resource}/${encodeURIComponent(name || "")}`, verb,
    user: { username: user, groups: ["system:authenticated"] }, sourceIPs: [ip], userAgent: agent,
    objectRef: o, responseStatus: { metadata: {}, code },
    requestReceivedTimestamp: iso(at), stageTimestamp: iso(at + 3),
    annotations: { "authorization.k8s.io/decision": code === 403 ? "forbid" : "allow", "authorization.k8s.io/reason": "" },
  };
}

async function main() {
  if (!existsSync(bin)) throw new Error(`no kubetrail binary at ${bin}: build it (cargo build -p kubetrail) or set KUBETRAIL_BIN`);
  if (!existsSync(chromiumPath)) throw new Error(`no Chromium at ${chromiumPath}: apt-get install chromium, or set CHROMIUM`);
  const dir = mkdtempSync(join(tmpdir(), "kubetrail-console-"));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const tokenFile = (name, token) => { writeFileSync(join(dir, name), token + "\n", { mode: 0o600 }); return join(dir, name); };
  writeFileSync(join(dir, "kubetrail.yaml"),
    `listen: 127.0.0.1:${port}\ndata: ${join(dir, "data")}\nauth:\n  identities:\n` +
    `    - {name: apiserver, token_file: ${tokenFile("ingest.token", INGEST_TOKEN)}, role: ingest}\n` +
    `    - {name: apiserver-b, token_file: ${tokenFile("gap.token", GAP_TOKEN)}, role: ingest}\n` +
    `    - {name: soc-analyst, token_file: ${tokenFile("reader.token", READER_TOKEN)}, role: reader}\n` +
    `    - {name: platform-security, token_file: ${tokenFile("admin.token", TOKEN)}, role: admin}\n`);
  const logFile = openSync(join(dir, "serve.log"), "w");
  log(`kubetrail serve on ${base} (${bin}); data and log in ${dir}`);
  const serve = spawn(bin, ["serve", "--config", join(dir, "kubetrail.yaml"), "--console-url", base],
    { stdio: ["ignore", logFile, logFile] });
  let browser;
  let passed = false;
  let failurePage = null;
  const stop = () => { try { serve.kill("SIGTERM"); } catch (_) { /* gone */ } };
  process.on("exit", stop);
  try {
    await until("the server to answer /healthz", async () => (await fetch(base + "/healthz")).ok, 30000);
    const auth = { Authorization: "Bearer " + TOKEN };
    const getJson = async (path) => {
      const r = await fetch(base + path, { headers: auth });
      assert.equal(r.status, 200, `${path}: ${r.status} ${await r.clone().text()}`);
      return r.json();
    };

    // ---- traffic --------------------------------------------------------------------------------------
    const now = Date.now();
    log("the generator's traffic with attack scenarios (20,000 events over the last two hours)");
    const genStart = new Date(now - 2 * 3600e3).toISOString().replace(/\.\d+Z$/, "Z");
    execFileSync(bin, ["gen", "--attacks", "--count", "20000", "--rate", "3",
      "--start", genStart, "--rbac-snapshot", join(dir, "rbac.json"),
      "--post", base + "/k8s-audit", "--token", INGEST_TOKEN], { stdio: ["ignore", "ignore", "inherit"] });
    log("the simulated cluster's RBAC snapshot at the traffic's start, imported as the base");
    execFileSync(bin, ["rbac", "import", join(dir, "rbac.json"), "--taken", genStart, "--data", join(dir, "data")], { stdio: ["ignore", "ignore", "inherit"] });

    log("the seed breach, moved to the last half hour, plus a pod deletion and an attacker with <script> in its text");
    const breach = readFileSync(join(repo, "crates/kubetrail/tests/fixtures/breach.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const t0 = Date.parse(breach[0].requestReceivedTimestamp);
    const shift = now - 30 * 60e3 - t0;
    for (const e of breach) {
      for (const k of ["requestReceivedTimestamp", "stageTimestamp"]) e[k] = iso(Date.parse(e[k]) + shift);
      e.auditID = "breach-" + e.auditID;
    }
    const extra = [
      event({ id: "delete-the-pod", user: DELETER, verb: "delete", resource: "pods", namespace: "prod-payments", name: DELETED_POD, at: now - 20 * 60e3, ip: "10.9.8.7" }),
      event({ id: "xss-secret-read", user: XSS_USER, verb: "get", resource: "secrets", namespace: "prod", name: XSS_NAME, at: now - 15 * 60e3, agent: XSS_AGENT, ip: "203.0.113.66" }),
    ];
    const items = breach.concat(extra);
    const r = await fetch(base + "/k8s-audit", {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + INGEST_TOKEN },
      body: JSON.stringify({ kind: "EventList", apiVersion: "audit.k8s.io/v1", items }),
    });
    assert.equal(r.status, 200, "the webhook takes the breach");

    log(`a second apiserver sends one event, nothing for ${GAP_MS / 1000} s, then another: a gap in what it delivered`);
    const postGap = async (id) => {
      const before = Date.now();
      const res = await fetch(base + "/k8s-audit", {
        method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + GAP_TOKEN },
        body: JSON.stringify({ kind: "EventList", apiVersion: "audit.k8s.io/v1", items: [
          event({ id, user: "system:kube-scheduler", verb: "list", resource: "nodes", namespace: "", at: before, uri: "/api/v1/nodes" })] }),
      });
      assert.equal(res.status, 200, `apiserver-b's ${id}`);
      return { before, after: Date.now() };
    };
    const gapStart = await postGap("gap-before");
    await new Promise((ok) => setTimeout(ok, GAP_MS));
    const gapEnd = await postGap("gap-after");

    await until("the breach's alerts and the deletion to be queryable", async () => {
      const a = await getJson("/api/v1/alerts?all=true");
      const q = await getJson("/api/v1/query?" + new URLSearchParams({ where: `name = "${DELETED_POD}"` }));
      return a.alerts.some((x) => x.rule.id === "kt-rbac-bind-cluster-admin") &&
        a.alerts.some((x) => x.actor.username === XSS_USER) && q.count === 1;
    });
    const alerts = (await getJson("/api/v1/alerts?all=true")).alerts;
    const bind = alerts.find((x) => x.rule.id === "kt-rbac-bind-cluster-admin");
    const xssAlert = alerts.find((x) => x.actor.username === XSS_USER);
    assert.equal(bind.status, "open");

    // ---- every route refuses the unauthenticated ------------------------------------------------------
    log("unauthenticated requests to every console and API route are refused");
    const pages = ["/", "/alerts", `/alerts/${bind.id}`, "/search", "/events/delete-the-pod", "/timeline", "/scope", "/history", "/sessions", "/identity", "/rbac", "/volume", "/clusters", "/assets/app.js", "/assets/app.css", "/assets/uPlot.iife.min.js"];
    for (const p of pages) {
      const res = await fetch(base + p, { redirect: "manual" });
      assert.equal(res.status, 303, `${p} without a session`);
      assert.match(res.headers.get("location"), /^\/login\?next=/, p);
      assert.ok(!(await res.text()).includes("app.js"), `${p} leaks nothing`);
    }
    const apiGets = ["/api/v1/session", "/api/v1/alerts", `/api/v1/alerts/${bind.id}`, "/api/v1/query", "/api/v1/who?verb=delete&resource=pods",
      "/api/v1/timeline?user=x", "/api/v1/scope?user=x", "/api/v1/history?resource=deployments/x", "/api/v1/sessions", "/api/v1/histogram", "/api/v1/export", "/api/v1/events/delete-the-pod",
      "/api/v1/volume", "/api/v1/clusters", "/api/v1/clusters/names", "/api/v1/gaps", "/api/v1/coverage", "/api/v1/suppressions"];
    for (const p of apiGets) {
      const res = await fetch(base + p);
      assert.equal(res.status, 401, `GET ${p} without credentials`);
      const wrong = await fetch(base + p, { headers: { Authorization: "Bearer wrong" } });
      assert.equal(wrong.status, 401, `GET ${p} with a wrong token`);
    }
    // Without credentials only: a wrong token per route would pass the address's 20 a minute and be throttled.
    for (const p of ["/api/v1/whois?identity=x", "/api/v1/rbac/who-can?verb=get&resource=secrets", "/api/v1/rbac/grants?user=x", "/api/v1/rbac/diff?since=1h", "/api/v1/rbac/unused?user=x"]) {
      assert.equal((await fetch(base + p)).status, 401, `GET ${p} without credentials`);
    }
    const apiPosts = [`/api/v1/alerts/${bind.id}/ack`, `/api/v1/alerts/${bind.id}/resolve`, `/api/v1/alerts/${bind.id}/note`, "/api/v1/suppressions",
      "/api/v1/suppressions/x/lift", "/api/v1/query", "/api/v1/who", "/api/v1/timeline", "/api/v1/scope", "/k8s-audit", "/api/v1/audit"];
    for (const p of apiPosts) {
      const res = await fetch(base + p, { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
      assert.equal(res.status, 401, `POST ${p} without credentials`);
    }
    assert.equal((await getJson(`/api/v1/alerts/${bind.id}`)).status, "open", "nothing changed the alert");

    // ---- the browser ----------------------------------------------------------------------------------
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    failurePage = page;
    const problems = [];
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    // Script errors and CSP violations ("Refused to ..."); a refused request (the wrong token's 401, a busy
    // server's 429 the console retries) is logged by Chromium as "Failed to load resource" and is expected.
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push("console error: " + m.text());
    });
    const shot = async (name) => page.screenshot({ path: join(shots, name + ".png"), fullPage: true });
    const text = async () => page.locator("main").innerText();

    log("as a reader: the alert is shown without any action, and the API refuses the actions");
    {
      const readerContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const rp = await readerContext.newPage();
      failurePage = rp;
      rp.on("pageerror", (e) => problems.push("page error (reader): " + e.message));
      await rp.goto(base + "/login?next=" + encodeURIComponent("/alerts/" + bind.id));
      await rp.fill("#token", READER_TOKEN);
      await rp.click("button[type=submit]");
      await rp.waitForURL(base + "/alerts/" + bind.id);
      await rp.getByRole("heading", { name: bind.rule.title }).waitFor();
      assert.match(await rp.locator("#who").innerText(), /signed in as soc-analyst \(reader\)/);
      for (const name of ["Acknowledge", "Resolve", "Assign", "Add note", "Suppress"]) {
        assert.equal(await rp.getByRole("button", { name }).count(), 0, `a reader is not offered ${name}`);
      }
      assert.equal(await rp.getByText("Suppress similar alerts").count(), 0);
      await rp.screenshot({ path: join(shots, "00-alert-as-reader.png"), fullPage: true });
      // What the page does not offer, the API refuses: with the reader's session and CSRF token, and with its token.
      const readerCookie = (await readerContext.cookies()).find((c) => c.name === "kubetrail_session");
      const rc = `kubetrail_session=${readerCookie.value}`;
      const rcsrf = (await (await fetch(base + "/api/v1/session", { headers: { Cookie: rc } })).json()).csrf;
      const ack = await fetch(`${base}/api/v1/alerts/${bind.id}/ack`, { method: "POST", headers: { Cookie: rc, "X-CSRF-Token": rcsrf, "Content-Type": "application/json" }, body: "" });
      assert.equal(ack.status, 403, "a reader's session cannot acknowledge");
      assert.match((await ack.json()).error, /needs the responder role/);
      const sup = await fetch(`${base}/api/v1/suppressions`, { method: "POST", headers: { Authorization: "Bearer " + READER_TOKEN, "Content-Type": "application/json" }, body: JSON.stringify({ rule: bind.rule.id, for: "1h", reason: "x" }) });
      assert.equal(sup.status, 403, "a reader's token cannot suppress");
      assert.match((await sup.json()).error, /needs the admin role/);
      const post = await fetch(base + "/k8s-audit", { method: "POST", headers: { Authorization: "Bearer " + READER_TOKEN, "Content-Type": "application/json" }, body: JSON.stringify(extra[0]) });
      assert.equal(post.status, 403, "a reader's token cannot post events");
      assert.equal((await getJson(`/api/v1/alerts/${bind.id}`)).status, "open", "the reader changed nothing");
      await readerContext.close();
      failurePage = page;
    }

    log("the console sends a visitor without a session to the login page");
    await page.goto(base + "/alerts");
    assert.equal(new URL(page.url()).pathname, "/login");
    await page.fill("#token", "not-the-token");
    await page.click("button[type=submit]");
    await page.getByText("That token is not accepted.").waitFor();
    await shot("01-login-refused");
    await page.fill("#token", TOKEN);
    await page.click("button[type=submit]");
    await page.waitForURL(base + "/alerts");
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "kubetrail_session");
    assert.ok(session && session.httpOnly && session.sameSite === "Strict", "an HttpOnly, SameSite=Strict session cookie");

    log("the alert queue lists the breach's alert; open it");
    const row = page.locator("tbody tr", { hasText: bind.rule.title }).filter({ hasText: bind.actor.username });
    await row.first().waitFor();
    assert.match(await page.locator("#who").innerText(), /signed in as platform-security \(admin\)/);
    await shot("02-alerts");
    // The filter narrows the queue to the actor.
    await page.fill("#f-actor", "report-runner");
    await page.click("form[data-filter=alerts] button[type=submit]");
    await page.waitForURL(/actor=report-runner/);
    await until("the actor filter to keep only that actor's alerts", async () => {
      const rows = await page.locator("tbody tr").allInnerTexts();
      return rows.length >= 1 && rows.length < alerts.length && rows.every((t) => t.includes("report-runner"));
    }, 10000);
    await page.locator(`a.alert-link[href="/alerts/${bind.id}"]`).first().click();
    await page.waitForURL(base + "/alerts/" + bind.id);
    await page.getByRole("heading", { name: bind.rule.title }).waitFor();
    const alertText = await text();
    for (const want of [bind.summary, "Runbook", "The actor's last hour", "First seen", "Scope report for", "open"]) {
      assert.ok(alertText.includes(want), `the alert page shows ${want}`);
    }
    assert.ok(await page.locator("a.event-link").count() >= 1, "the alert links its events");
    await shot("03-alert");

    log("acknowledge it in the console; the API sees the change, made by the logged-in identity");
    await page.getByRole("button", { name: "Acknowledge" }).click();
    await page.locator("main .status-acknowledged").first().waitFor();
    const acked = await getJson(`/api/v1/alerts/${bind.id}`);
    assert.equal(acked.status, "acknowledged");
    assert.equal(acked.history.at(-1).action, "ack");
    assert.equal(acked.history.at(-1).by, "api:platform-security");
    // A note through the console too.
    await page.fill("#note-text", "checked with the tools team: not their job");
    await page.getByRole("button", { name: "Add note" }).click();
    await until("the note", async () => (await getJson(`/api/v1/alerts/${bind.id}`)).history.some((c) => c.action === "note"));
    await page.locator("main td", { hasText: "checked with the tools team" }).waitFor();
    await shot("04-alert-acknowledged");

    log("a state change with the cookie but without the CSRF token is refused");
    const cookieHeader = `kubetrail_session=${session.value}`;
    const forged = await fetch(`${base}/api/v1/alerts/${bind.id}/resolve`, { method: "POST", headers: { Cookie: cookieHeader, "Content-Type": "application/json" }, body: "{}" });
    assert.equal(forged.status, 403);
    const csrf = (await (await fetch(base + "/api/v1/session", { headers: { Cookie: cookieHeader } })).json()).csrf;
    const crossSite = await fetch(`${base}/api/v1/alerts/${bind.id}/resolve`, { method: "POST", headers: { Cookie: cookieHeader, "X-CSRF-Token": csrf, Origin: "https://evil.example", "Content-Type": "application/json" }, body: "{}" });
    assert.equal(crossSite.status, 403);
    assert.equal((await getJson(`/api/v1/alerts/${bind.id}`)).status, "acknowledged", "neither forged request resolved it");

    log("from the alert to the attacker's scope report");
    await page.locator("a.scope-link").first().click();
    await page.waitForURL(/\/scope\?user=/);
    await page.locator("main h2").first().waitFor();
    const scopeText = await text();
    assert.ok(scopeText.includes(bind.actor.username), "the scope report names the actor");
    assert.ok((await page.locator("main table").count()) >= 1, "the scope report has its tables");
    assert.ok((await page.locator("a.history-link").count()) >= 1, "the scope report links the history of each object the actor changed");
    await shot("05-scope");

    log("the actor's timeline: chart and grouped table");
    await page.goto(base + "/timeline?" + new URLSearchParams({ user: bind.actor.username }));
    await page.locator("main .uplot").first().waitFor();
    await shot("06-timeline");

    log("search for the pod deletion and find who did it");
    await page.goto(base + "/search");
    await page.fill("#s-where", `verb = delete and resource = pods and name = "${DELETED_POD}"`);
    await page.click("form[data-filter=search] button[type=submit]");
    await page.waitForURL(/\/search\?where=/);
    const hit = page.locator("tbody tr", { hasText: DELETED_POD });
    await hit.waitFor();
    assert.ok((await hit.innerText()).includes(DELETER), "the table names who deleted the pod");
    assert.match(await page.locator("#result-count").innerText(), /^1 request matches/);
    await page.locator("main .uplot").first().waitFor();
    await shot("07-search");
    // Export links carry the query; the download is the matching request.
    const csvHref = await page.getByRole("link", { name: "Export CSV" }).getAttribute("href");
    const csv = await (await fetch(base + csvHref, { headers: auth })).text();
    assert.equal(csv.trim().split("\n").length, 2, "a header and the one deletion");
    assert.ok(csv.includes(DELETER));
    await hit.locator("a.event-link").click();
    await page.waitForURL(/\/events\/delete-the-pod\?at=/);
    await page.locator("pre.event-json").first().waitFor();
    assert.ok((await text()).includes('"auditID": "delete-the-pod"'), "the event view shows the stored JSON");
    assert.ok(await page.getByRole("link", { name: "Everything " + DELETER + " did" }).count() === 1);
    await shot("08-event");

    log("the tampered Deployment's history: the image swap by patch and the privileged sidecar, each with its author");
    {
      const hist = await getJson("/api/v1/history?" + new URLSearchParams({ resource: "deployments/payments-api", namespace: "prod-payments" }));
      const swap = hist.entries.find((e) => e.verb === "patch" && e.changes.some((c) => c.path.endsWith(".image") && String(c.after.value).startsWith("evil.example/")));
      const side = hist.entries.find((e) => e.verb === "update" && e.changes.some((c) => c.path.endsWith("securityContext.privileged") && c.after.value === true));
      assert.ok(swap && side, `the API's history has the swap and the sidecar: ${JSON.stringify(hist).slice(0, 2000)}`);
      const image = swap.changes.find((c) => c.path.endsWith(".image"));
      assert.equal(image.before.state, "value", "the image before the swap is known from the deploy bot's update");
      // From the patch's event to the object's history.
      await page.goto(base + "/events/" + encodeURIComponent(swap.audit_id) + "?" + new URLSearchParams({ at: swap.time }));
      await page.locator("a.history-link").first().click();
      await page.waitForURL(/\/history\?object=deployments(\.apps)?%2Fpayments-api/);
      const change = page.locator("li.change", { hasText: image.path + ": " + image.before.value + " → " + image.after.value });
      await change.first().waitFor();
      const entry = page.locator("article.history-entry", { has: change });
      assert.ok((await entry.first().innerText()).includes(swap.user), "the change names its author");
      assert.ok((await entry.first().innerText()).includes(swap.source_ips[0]), "and where it came from");
      await page.locator("li.change", { hasText: "securityContext.privileged: (absent) → true" }).first().waitFor();
      assert.ok(!(await text()).includes("kubetrail-redacted"), "a redacted value is never shown as its marker");
      await shot("08b-history");
      // The alert on the sidecar names the objects its actor changed in the hour, each linked to its history.
      const priv = await until("the privileged sidecar's alert", async () => (await getJson("/api/v1/alerts?all=true")).alerts
        .find((x) => x.rule.id === "kt-pod-privileged" && x.actor.username === side.user));
      assert.ok((priv.context.changedObjects || []).some((c) => c.name === "payments-api" && c.history === "kubetrail history deployments/payments-api -n prod-payments"),
        `the triage context names the Deployment: ${JSON.stringify(priv.context)}`);
      assert.ok(priv.investigate.some((c) => c.startsWith("kubetrail history deployments/payments-api -n prod-payments")), `and how to see its history: ${priv.investigate}`);
      await page.goto(base + "/alerts/" + priv.id);
      await page.getByText("Objects the actor changed in the hour").waitFor();
      await page.locator("a.history-link", { hasText: "deployments/payments-api in prod-payments" }).first().click();
      await page.waitForURL(/\/history\?object=deployments(\.apps)?%2Fpayments-api/);
      await page.locator("li.change").first().waitFor();
    }

    log("sessions: the exec into the payments pod with its command, the password redacted, linked to the actor's timeline");
    {
      const rows = (await getJson("/api/v1/sessions")).sections[0].rows;
      const exec = rows.find((r) => r.command.startsWith("mysql"));
      assert.ok(exec, `an exec running mysql: ${JSON.stringify(rows).slice(0, 2000)}`);
      assert.ok(exec.command.includes("[redacted]") && !exec.command.includes("S3cr3t"), `the password redacted: ${exec.command}`);
      assert.equal(exec.stdin, "yes");
      assert.equal(exec.tty, "yes");
      assert.ok(exec.duration && exec.end, `a start, an end and a duration: ${JSON.stringify(exec)}`);
      await page.goto(base + "/sessions");
      const row = page.locator("tbody tr", { hasText: exec.command }).first();
      await row.waitFor();
      assert.ok((await row.innerText()).includes(exec.duration), "the duration is shown");
      await shot("08c-sessions");
      await row.locator("a", { hasText: exec.user }).first().click();
      await page.waitForURL(/\/timeline\?user=/);
      assert.equal(new URL(page.url()).searchParams.get("user"), exec.user, "the session links to its actor's timeline");
    }

    log("who can: the contractor's grant between its creation and its revocation, as the API says; linked to her identity");
    {
      // The page before may still be loading its queries (two at a time): asked again until a slot is free.
      const ask = (path) => until(path, () => getJson(path), 30000);
      await page.goto(base + "/rbac");
      const q = await ask("/api/v1/query?" + new URLSearchParams({ where: 'name = "contractor-secrets" and resource = rolebindings', limit: "20" }));
      const write = (verb) => q.events.find((e) => e.verb === verb);
      const created = write("create");
      assert.ok(created && write("delete"), `the access-grant scenario's binding writes: ${JSON.stringify(q).slice(0, 1500)}`);
      const at = new Date(Date.parse(created.requestReceivedTimestamp) + 1000).toISOString();
      const params = { verb: "get", resource: "secrets", namespace: "prod-payments", at };
      const api = await ask("/api/v1/rbac/who-can?" + new URLSearchParams(params));
      assert.ok(api.allowed.some((a) => a.subject === "eve@contractor.example"), `the API names the contractor: ${JSON.stringify(api).slice(0, 1500)}`);
      await page.goto(base + "/rbac?" + new URLSearchParams(params));
      await page.locator("#who-can-at").waitFor();
      const subjects = await page.locator("tbody tr td:first-child").allInnerTexts();
      assert.deepEqual(subjects, api.allowed.map((a) => a.subject), "the console lists what the API answers, in order");
      await shot("08d-who-can");
      // After the revocation: gone.
      const after = new Date(Date.parse(write("delete").requestReceivedTimestamp) + 1000).toISOString();
      await page.goto(base + "/rbac?" + new URLSearchParams(Object.assign({}, params, { at: after })));
      await page.locator("#who-can-at").waitFor();
      assert.ok(!(await page.locator("tbody").innerText()).includes("eve@contractor.example"), "revoked: not listed");

      log("the contractor's identity page: her grant and its revocation, by the EKS admin, from where");
      await page.goto(base + "/rbac?" + new URLSearchParams(params));
      await page.locator("tbody a", { hasText: "eve@contractor.example" }).first().click();
      await page.waitForURL(/\/identity\?identity=eve/);
      await page.getByRole("heading", { name: "Changes" }).waitFor();
      const changes = await page.locator("table").last().innerText();
      assert.ok(changes.includes("granted") && changes.includes("revoked"), changes);
      assert.ok(changes.includes(created.user.username), `by the admin: ${changes}`);
      assert.ok(changes.includes(created.sourceIPs[0]), `from where: ${changes}`);

      log("the EKS admin behind the assumed role: whois by her session name, as the API says");
      const session = created.user.extra.sessionName[0];
      const who = await ask("/api/v1/whois?" + new URLSearchParams({ identity: session }));
      const ids = who.sections.find((x) => x.key === "identities").rows;
      assert.equal(ids.length, 1);
      assert.ok(ids[0].behind.startsWith("AWS role eks-platform-admins (account 111122223333), session " + session), ids[0].behind);
      await page.goto(base + "/identity?" + new URLSearchParams({ identity: session }));
      const row = page.locator("tbody tr", { hasText: ids[0].behind }).first();
      await row.waitFor();
      assert.ok((await row.innerText()).includes(created.user.username), "the console shows the session's identity and who is behind it");
      await page.getByText("cloud principals").first().waitFor();
      // Her grants are her session's: through her group's binding to cluster-admin.
      await page.locator("td", { hasText: 'ClusterRoleBinding "eks-platform-admins"' }).first().waitFor();
      // The credential cell links each user to its identity page, as text.
      assert.ok(!(await page.locator("body").innerText()).includes("http://"), "no link printed as its address");
      await shot("08e-identity");
    }

    log("paging over a large result");
    await page.goto(base + "/search?" + new URLSearchParams({ where: "verb = watch" }));
    await page.locator("a.next").waitFor();
    const ids = () => page.locator("tbody a.event-link").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
    const firstPage = await ids();
    assert.equal(firstPage.length, 100, "a page of 100 requests");
    await page.locator("a.next").click();
    await page.waitForURL(/offset=100/);
    await page.getByText(/showing 101–200/).waitFor();
    await page.getByRole("link", { name: "← Previous" }).waitFor();
    const second = await ids();
    assert.equal(second.length, 100);
    assert.ok(second.every((id) => !firstPage.includes(id)), "the next page shows other requests");

    log("attacker-controlled text is shown as text, never run");
    await page.goto(base + "/alerts/" + xssAlert.id);
    await page.getByText(XSS_AGENT, { exact: true }).first().waitFor();
    assert.ok((await page.getByText(XSS_AGENT, { exact: true }).count()) >= 2, "the user agent shown literally in the summary and the first-seen table");
    await page.goto(base + "/events/xss-secret-read");
    await page.locator("pre.event-json").first().waitFor();
    const eventText = await text();
    assert.ok(eventText.includes(XSS_NAME) && eventText.includes(XSS_AGENT), "the <script> text is visible as text");
    await page.goto(base + "/search?" + new URLSearchParams({ where: 'ip = "203.0.113.66"' }));
    await page.locator("tbody tr").first().waitFor();
    assert.ok((await text()).includes(XSS_USER), "the user name with markup is shown literally");
    assert.equal(await page.evaluate(() => window.__xss), undefined, "no injected script ran");
    assert.equal(await page.locator("main script, main img, main b").count(), 0, "no injected element exists");
    await shot("09-xss-as-text");

    log("the clusters page lists the cluster; the picker scopes every question to one");
    {
      const clusters = (await getJson("/api/v1/clusters")).sections[0].rows;
      assert.equal(clusters.length, 1, "one cluster posts here");
      const name = clusters[0].cluster;
      await page.goto(base + "/clusters");
      await page.locator("a.cluster-link").first().waitFor();
      assert.ok((await text()).includes(Number(clusters[0].events).toLocaleString("en-US")), "its event count");
      await shot("10a-clusters");
      const asked = [];
      const seen = (r) => { if (r.url().includes("/api/v1/query")) asked.push(r.url()); };
      page.on("request", seen);
      await page.selectOption("#cluster", name);
      const where = new URLSearchParams({ where: `name = "${DELETED_POD}"` });
      await page.goto(base + "/search?" + where);
      await page.locator("tbody tr", { hasText: DELETED_POD }).waitFor();
      assert.ok(asked.some((u) => new URL(u).searchParams.get("cluster") === name), `the search asked within ${name}: ${asked}`);
      // Another cluster's view: nothing of this one is in it.
      await page.evaluate(() => sessionStorage.setItem("kubetrail-cluster", "staging"));
      await page.goto(base + "/search?" + where);
      await page.getByText(/^0 requests match/).waitFor();
      assert.equal(await page.locator("#cluster").inputValue(), "staging", "the picker shows the cluster in force");
      await page.selectOption("#cluster", "");
      await page.goto(base + "/search?" + where);
      await page.getByText(/^1 request matches/).waitFor();
      page.off("request", seen);
    }

    log("the volume page shows the noisy group and its None rule");
    await page.goto(base + "/volume");
    await page.locator("#noisy-summary").waitFor();
    const noisy = page.locator("tbody tr", { hasText: "system:kube-controller-manager" }).filter({ has: page.locator(".noisy") });
    await noisy.first().waitFor();
    assert.ok((await noisy.first().innerText()).includes("level: None"), "a suggested None rule for the noisy group");
    assert.ok((await page.locator("main .uplot").count()) >= 2, "charts of events and bytes per hour");
    await shot("10-volume");

    log("the volume page lists the gaps of its range under its chart: apiserver-b's silence, exactly as the API says");
    {
      // What the API answers for the silence between apiserver-b's two events: within when each was posted.
      const rows = (await getJson("/api/v1/gaps?longer_than=2s")).sections[0].rows.filter((g) => g.source === GAP_SOURCE);
      const closed = rows.filter((g) => g.ongoing === "no");
      assert.equal(closed.length, 1, `one closed gap of ${GAP_SOURCE}: ${JSON.stringify(rows)}`);
      const gap = closed[0];
      const from = Date.parse(gap.from), to = Date.parse(gap.to);
      assert.ok(from >= gapStart.before - 1 && from <= gapStart.after + 1, `the gap starts when the first event arrived: ${gap.from}`);
      assert.ok(to >= gapEnd.before - 1 && to <= gapEnd.after + 1, `the gap ends when the second arrived: ${gap.to}`);
      const secs = Number((gap.length.match(/^(\d+)s$/) || [])[1]);
      assert.ok(secs >= GAP_MS / 1000 && secs < 60, `its length: ${gap.length}`);
      assert.ok(rows.some((g) => g.ongoing === "yes" && g.from === gap.to), "and the silence since its last event, ongoing");
      // The page, asked for gaps over 2s.
      const fmt = (t) => t.replace("T", " ").replace(/\.\d+Z$/, "Z");
      const want = [gap.cluster, GAP_SOURCE, fmt(gap.from), fmt(gap.to), gap.length, "no"];
      const tableRows = () => page.locator("#gaps tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
      await page.goto(base + "/volume?" + new URLSearchParams({ longer_than: "2s" }));
      await page.locator("#gaps tbody tr").first().waitFor();
      const shown = await tableRows();
      assert.ok(shown.some((r) => JSON.stringify(r) === JSON.stringify(want)), `the gap's row ${JSON.stringify(want)} in ${JSON.stringify(shown)}`);
      assert.ok(shown.some((r) => r[1] === GAP_SOURCE && r[2] === fmt(gap.to) && r[5] === "yes"), "and the ongoing silence's");
      assert.equal(await page.locator("#v-longer").inputValue(), "2s", "the form keeps the threshold");
      assert.match(await page.locator("#gaps").innerText(), /gaps longer than 2s/);
      await shot("10b-volume-gaps");
      // The default threshold (5m): a few seconds' silence is no gap.
      await page.goto(base + "/volume");
      await page.locator("#gaps p").first().waitFor();
      assert.match(await page.locator("#gaps").innerText(), /gaps longer than 5m/);
      const byDefault = await tableRows();
      assert.ok(!byDefault.some((r) => r[1] === GAP_SOURCE && r[5] === "no"), `no closed gap over 5m: ${JSON.stringify(byDefault)}`);
    }

    log("keyboard: j and Enter open an alert from the queue");
    await page.goto(base + "/alerts");
    await page.locator("tbody tr").first().waitFor();
    await page.keyboard.press("j");
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/alerts\/[^/]+$/);

    log("a narrow window and dark mode");
    await page.setViewportSize({ width: 420, height: 900 });
    await page.goto(base + "/alerts/" + bind.id);
    await page.getByRole("heading", { name: bind.rule.title }).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `no horizontal scrolling of the page at 420 px (${overflow} px too wide)`);
    await shot("11-alert-narrow");
    await page.emulateMedia({ colorScheme: "dark" });
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(base + "/volume");
    await page.locator("#noisy-summary").waitFor();
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(bg, "rgb(246, 247, 249)", "dark mode changes the background");
    await shot("12-volume-dark");

    log("first paint of the console (informational; the target lives in docs/benchmarks.md)");
    await page.emulateMedia({ colorScheme: "light" });
    await page.goto(base + "/alerts");
    await page.locator("tbody tr").first().waitFor();
    const paint = await page.evaluate(() => {
      const p = performance.getEntriesByName("first-contentful-paint")[0];
      return p ? Math.round(p.startTime) : null;
    });
    console.log(`[console-test] first contentful paint of /alerts: ${paint} ms`);

    log("log out ends the session");
    await page.locator("#logout button").click();
    await page.waitForURL(/\/login/);
    const after = await fetch(base + "/api/v1/session", { headers: { Cookie: cookieHeader } });
    assert.equal(after.status, 401, "the old cookie no longer works");

    assert.deepEqual(problems, [], "no script errors and no CSP violations in the browser");
    console.log(`[console-test] passed; screenshots in ${shots}`);
    passed = true;
  } finally {
    if (!passed && failurePage) {
      await failurePage.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
      console.error("[console-test] the page at failure: " + join(shots, "failure.png") + " (" + failurePage.url() + ")");
      console.error(await failurePage.locator("main").innerText().catch(() => "?"));
    }
    if (browser) await browser.close();
    stop();
    await new Promise((r) => {
      if (serve.exitCode !== null) return r();
      serve.once("exit", r);
      setTimeout(r, 15000).unref();
    });
    if (passed) rmSync(dir, { recursive: true, force: true });
    else console.error(`[console-test] the server's data and log are kept in ${dir}`);
  }
}

main().catch((e) => {
  process.exitCode = 1;
  console.error("[console-test] FAILED:", e && e.stack ? e.stack : e);
});
