// Console benchmark: how fast each page of the web console paints and shows its answer in headless Chromium,
// against a running `kubetrail serve` over a large data directory (scripts/bench-console sets it up).
//
// For each page: RUNS loads (after one warm-up), each a fresh navigation; first contentful paint (the
// browser's own measure) and "ready" (the page's answer in the DOM: table rows, charts), median and max.
// Usage: BASE=http://127.0.0.1:19445 TOKEN=... USER_ID=dave@example.com RUNS=5 node bench.mjs
import { chromium } from "playwright-core";

const base = process.env.BASE;
const token = process.env.TOKEN;
const runs = Number(process.env.RUNS || 5);
const user = process.env.USER_ID || "dave@example.com";
// [name, path, what shows the answer, runs (default RUNS)]
const pages = [
  ["alerts", "/alerts", "main h1"],
  ["search, last 24 h (default)", "/search", "main .uplot"],
  ["timeline of one identity, last 30 days (default)", "/timeline?" + new URLSearchParams({ user }), "main .uplot"],
  ["volume, last 7 days (default)", "/volume", "#noisy-summary"],
  ["search: who deleted pods, the whole year", "/search?" + new URLSearchParams({ where: "verb = delete and resource = pods", since: "all" }), "main tbody tr", 1],
  ["timeline of one identity, the whole year", "/timeline?" + new URLSearchParams({ user, since: "all" }), "main .uplot", 1],
];

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
await page.goto(base + "/login");
await page.fill("#token", token);
await page.click("button[type=submit]");
await page.waitForURL((u) => !u.pathname.startsWith("/login"));

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const rows = [];
for (const [name, path, ready, n] of pages) {
  const fcp = [];
  const done = [];
  for (let i = 0; i <= (n || runs); i++) {
    const t0 = Date.now();
    await page.goto(base + path);
    await page.locator(ready).first().waitFor({ timeout: 120000 });
    const elapsed = Date.now() - t0;
    const paint = await page.evaluate(() => (performance.getEntriesByName("first-contentful-paint")[0] || {}).startTime || null);
    if (i === 0) continue; // warm-up
    fcp.push(Math.round(paint));
    done.push(elapsed);
  }
  rows.push({ page: name, fcp_ms_median: median(fcp), fcp_ms_max: Math.max(...fcp), ready_ms_median: median(done), ready_ms_max: Math.max(...done) });
}
await browser.close();
console.log("| page | first paint, median (max) | answer shown, median (max) |");
console.log("| --- | ---: | ---: |");
for (const r of rows) console.log(`| ${r.page} | ${r.fcp_ms_median} ms (${r.fcp_ms_max}) | ${r.ready_ms_median} ms (${r.ready_ms_max}) |`);
