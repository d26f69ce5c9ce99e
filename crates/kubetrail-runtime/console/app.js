// The kubetrail console: a small single-page app over the /api/v1/ API.
//
// Audit events are attacker-controlled text (user agents, object names, annotations): everything from the
// API is put in the page with textContent (the `h` helper below), never as HTML. The CSP forbids inline
// script; this file is the only script besides the uPlot chart library.
"use strict";

(function () {
  const main = document.getElementById("main");
  let session = { identity: null, role: null, may: [], csrf: null };
  /** Whether the signed-in identity's role grants `role` (reader, responder, admin). */
  const may = (role) => (session.may || []).includes(role);
  // Each navigation takes a new ticket: an answer that arrives for an older one is dropped, so a slow
  // view never overwrites the page the analyst moved on to.
  let ticket = {};
  const STALE = new Error("stale");

  // ---- DOM helpers ----------------------------------------------------------------------------------

  /** An element: attributes (on* never), then children (strings become text nodes). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) throw new Error("no inline handlers");
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const link = (href, text, attrs) => h("a", Object.assign({ href, "data-nav": true }, attrs || {}), text);
  const clear = (el) => { while (el.firstChild) el.removeChild(el.firstChild); return el; };
  function show(...nodes) { clear(main).append(...nodes.flat(Infinity).filter(Boolean)); main.focus({ preventScroll: true }); }
  function toast(text) {
    let box = document.getElementById("toasts");
    if (!box) {
      box = h("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
      document.body.append(box);
    }
    const t = h("div", { class: "toast", role: "status" }, text);
    box.append(t);
    setTimeout(() => t.remove(), 3000);
  }
  function table(columns, rows, opts) {
    const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.title)));
    const body = h("tbody", {}, rows.map((r) => {
      const tr = h("tr", {}, columns.map((c) => {
        const v = c.cell(r);
        return h("td", { class: c.num ? "num" : null }, v instanceof Node ? v : String(v ?? ""));
      }));
      if (opts && opts.href) tr.dataset.href = opts.href(r);
      return tr;
    }));
    return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), body));
  }
  function kv(pairs) {
    return h("dl", { class: "kv" }, pairs.filter((p) => p[1] !== undefined && p[1] !== null && p[1] !== "")
      .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v instanceof Node ? v : String(v))]));
  }
  function errorBox(e) { return h("p", { class: "error", role: "alert" }, String(e.message || e)); }

  // ---- time and numbers -----------------------------------------------------------------------------

  const fmtTime = (t) => (t ? String(t).replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
  function age(t) {
    const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
    if (!isFinite(s)) return "";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  function bytes(n) {
    if (n === null || n === undefined) return "";
    const u = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  const pct = (x) => (x * 100).toFixed(1) + "%";
  const num = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"));

  /** A value quoted for the --where language. */
  const q = (v) => '"' + String(v).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n") + '"';

  // ---- API ------------------------------------------------------------------------------------------

  // The cluster picker's choice (this tab's): every question about events is scoped to it.
  const CLUSTER_KEY = "kubetrail-cluster";
  const picked = () => sessionStorage.getItem(CLUSTER_KEY) || "";
  const SCOPED = /^\/api\/v1\/(query|who|timeline|scope|history|sessions|histogram|export|events\/|volume|gaps|coverage)/;
  /** `path` with the picked cluster, for the questions about events. */
  function scoped(path) {
    const c = picked();
    if (!c || !SCOPED.test(path)) return path;
    return path + (path.includes("?") ? "&" : "?") + qs({ cluster: c });
  }

  async function api(path, opts) {
    const mine = ticket;
    opts = opts || {};
    path = scoped(path);
    const init = { method: opts.method || "GET", credentials: "same-origin", headers: { Accept: "application/json" } };
    if (init.method !== "GET") {
      init.headers["X-CSRF-Token"] = session.csrf || "";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body || {});
    }
    // The server runs a few queries at once and answers 429 with Retry-After beyond: wait and ask again.
    let r;
    for (let attempt = 0; ; attempt++) {
      r = await fetch(path, init);
      if (r.status !== 429 || attempt >= 20 || mine !== ticket) break;
      const wait = Math.min(5, parseFloat(r.headers.get("Retry-After") || "1") || 1);
      await new Promise((ok) => setTimeout(ok, wait * 1000 * (0.5 + Math.random() / 2)));
    }
    if (r.status === 401 || (r.redirected && new URL(r.url).pathname === "/login")) {
      location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new Error("not logged in");
    }
    let body;
    try { body = await r.json(); } catch (_) { body = {}; }
    if (mine !== ticket) throw STALE;
    if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
    return body;
  }
  const qs = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== undefined && v !== null && v !== "")).toString();

  // ---- charts ---------------------------------------------------------------------------------------

  const per = (sec) => ({ 1: "second", 60: "minute", 3600: "hour", 86400: "day", 604800: "week" }[sec] || (sec >= 3600 ? sec / 3600 + " hours" : sec >= 60 ? sec / 60 + " minutes" : sec + " s"));
  const compact = (v) => (v >= 1e9 ? (v / 1e9).toFixed(1) + "G" : v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e3 ? (v / 1e3).toFixed(1) + "k" : String(v));

  /** Bars of `values` at `times` (Unix seconds), each `step` seconds wide. */
  function barChart(title, times, values, label, step) {
    const box = h("div", { class: "chart", role: "img", "aria-label": title });
    if (typeof uPlot === "undefined" || times.length === 0) {
      box.append(h("p", { class: "muted" }, times.length ? "chart unavailable" : "nothing in this range"));
      return box;
    }
    const style = getComputedStyle(document.documentElement);
    const bar = style.getPropertyValue("--bar").trim() || "#2557d6";
    const fg = style.getPropertyValue("--fg").trim() || "#222";
    const grid = style.getPropertyValue("--line").trim() || "#ddd";
    const axis = { stroke: fg, grid: { stroke: grid }, ticks: { stroke: grid } };
    const width = () => Math.max(260, Math.min(main.clientWidth - 40, 1360));
    const plot = new uPlot({
      title, width: width(), height: 200,
      scales: {
        x: { time: true, range: () => [times[0] - step / 2, times[times.length - 1] + step / 2] },
        y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] },
      },
      axes: [axis, Object.assign({ size: 60, values: (u, vals) => vals.map(compact) }, axis)],
      legend: { show: true },
      series: [{}, { label, stroke: bar, fill: bar, paths: uPlot.paths.bars({ size: [0.85, 40] }), points: { show: false } }],
    }, [times, values], box);
    window.addEventListener("resize", () => plot.setSize({ width: width(), height: 200 }));
    return box;
  }

  // ---- views ----------------------------------------------------------------------------------------

  const SEVERITIES = ["critical", "high", "medium", "low", "informational"];
  const sevRank = (s) => SEVERITIES.length - SEVERITIES.indexOf(String(s).toLowerCase());
  const sev = (s) => h("span", { class: "sev sev-" + String(s).toLowerCase() }, String(s));
  const status = (s) => h("span", { class: "status status-" + s }, s);
  const target = (t) => (t ? [t.namespace, t.name].filter(Boolean).join("/") || t.resource || t.requestURI || "" : "");

  async function alertsView(params) {
    const f = {
      status: params.get("status") || "",
      severity: params.get("severity") || "",
      rule: params.get("rule") || "",
      namespace: params.get("namespace") || "",
      actor: params.get("actor") || "",
    };
    const sel = (name, options, value) => h("select", { name, id: "f-" + name },
      options.map(([v, t]) => h("option", { value: v, selected: v === value }, t)));
    const form = h("form", { class: "filters", role: "search", "data-filter": "alerts" },
      h("label", { for: "f-status" }, "Status", sel("status", [["", "open + acknowledged"], ["open", "open"], ["acknowledged", "acknowledged"], ["resolved", "resolved"], ["suppressed", "suppressed"], ["all", "all"]], f.status)),
      h("label", { for: "f-severity" }, "At least", sel("severity", [["", "any severity"]].concat(SEVERITIES.map((s) => [s, s])), f.severity)),
      h("label", { for: "f-rule" }, "Rule", h("input", { id: "f-rule", name: "rule", value: f.rule, placeholder: "rule id or title" })),
      h("label", { for: "f-namespace" }, "Namespace", h("input", { id: "f-namespace", name: "namespace", value: f.namespace })),
      h("label", { for: "f-actor" }, "Actor", h("input", { id: "f-actor", name: "actor", value: f.actor })),
      h("button", { type: "submit" }, "Filter"));
    show(h("h1", {}, "Alerts"), form, h("p", { class: "muted" }, "Loading…"));
    const query = f.status === "all" ? { all: "true" } : f.status ? { status: f.status } : {};
    const data = await api("/api/v1/alerts?" + qs(query));
    let alerts = data.alerts.filter((a) =>
      (!f.severity || sevRank(a.severity) >= sevRank(f.severity)) &&
      (!f.rule || (a.rule.id + " " + a.rule.title).toLowerCase().includes(f.rule.toLowerCase())) &&
      (!f.namespace || (a.target && a.target.namespace === f.namespace)) &&
      (!f.actor || a.actor.username.toLowerCase().includes(f.actor.toLowerCase())));
    alerts.sort((a, b) => sevRank(b.severity) - sevRank(a.severity) || Date.parse(b.time) - Date.parse(a.time));
    const rows = table([
      { title: "Severity", cell: (a) => sev(a.severity) },
      { title: "Alert", cell: (a) => link("/alerts/" + encodeURIComponent(a.id), a.rule.title, { class: "alert-link" }) },
      { title: "Actor", cell: (a) => a.actor.principal ? [a.actor.username, h("br"), h("span", { class: "muted principal" }, a.actor.principal)] : a.actor.username },
      { title: "Target", cell: (a) => target(a.target) },
      { title: "Age", cell: (a) => age(a.time), num: true },
      { title: "Status", cell: (a) => status(a.status) },
      { title: "Assignee", cell: (a) => a.assignee || "" },
    ], alerts, { href: (a) => "/alerts/" + encodeURIComponent(a.id) });
    show(h("h1", {}, "Alerts"), form,
      h("p", { class: "muted" }, alerts.length + " of " + data.count + " alerts · j/k to move, Enter to open"),
      alerts.length ? rows : h("p", {}, "No alert matches."));
  }

  async function alertView(id, refresh) {
    // A refresh after an action keeps the page until the new one is ready: no flash of "Loading…".
    if (!refresh) show(h("p", { class: "muted" }, "Loading…"));
    const a = await api("/api/v1/alerts/" + encodeURIComponent(id));
    const user = a.actor.username;
    const act = async (action, body) => {
      await api("/api/v1/alerts/" + encodeURIComponent(a.id) + "/" + action, { method: "POST", body });
      toast(action === "ack" ? "Acknowledged" : action === "resolve" ? "Resolved" : action === "reopen" ? "Reopened" : "Saved");
      await alertView(id, true);
    };
    const assignInput = h("input", { id: "assign-to", name: "to", value: a.assignee || "", placeholder: "analyst" });
    const noteInput = h("textarea", { id: "note-text", name: "text", placeholder: "what you found, what you did" });
    const supFor = h("select", { id: "sup-for", name: "for" }, ["1h", "4h", "24h", "7d"].map((d) => h("option", { value: d }, d)));
    const supBy = h("select", { id: "sup-by", name: "by" },
      h("option", { value: "rule+user" }, "this rule for this actor"),
      h("option", { value: "rule" }, "this rule for everyone"),
      h("option", { value: "user" }, "every rule for this actor"));
    const supReason = h("input", { id: "sup-reason", name: "reason", placeholder: "why (required)", required: true });
    const button = (text, cls, fn) => { const b = h("button", { type: "button", class: cls }, text); b.addEventListener("click", () => fn().catch((e) => toast(e.message))); return b; };
    // What the role cannot do is not offered (the API refuses it anyway).
    const actions = !may("responder") ? null : h("div", { class: "card actions", "aria-label": "Actions" },
      a.status === "open" ? button("Acknowledge", "", () => act("ack")) : null,
      a.status !== "resolved" ? button("Resolve", "secondary", () => act("resolve")) : button("Reopen", "secondary", () => act("reopen")),
      h("label", { for: "assign-to" }, "Assign to", assignInput), button("Assign", "secondary", () => act("assign", { to: assignInput.value })),
      h("label", { for: "note-text", class: "grow" }, "Note", noteInput), button("Add note", "secondary", () => act("note", { text: noteInput.value })));
    const suppress = !may("admin") ? null : h("details", { class: "card" }, h("summary", {}, "Suppress similar alerts"),
      h("div", { class: "actions" },
        h("label", { for: "sup-by" }, "Silence", supBy), h("label", { for: "sup-for" }, "For", supFor),
        h("label", { for: "sup-reason" }, "Reason", supReason),
        button("Suppress", "secondary", async () => {
          if (!supReason.value.trim()) throw new Error("a suppression needs a reason");
          const by = supBy.value;
          const body = { for: supFor.value, reason: supReason.value };
          if (by.includes("rule")) body.rule = a.rule.id;
          if (by.includes("user")) body.user = user;
          const s = await api("/api/v1/suppressions", { method: "POST", body });
          toast("Suppressed until " + fmtTime(s.until));
        })));
    const ctx = a.context || {};
    const activity = ctx.activity;
    const first = ctx.firstSeen;
    const sections = [];
    sections.push(h("div", { class: "card" }, kv([
      ["Rule", a.rule.id], ["Summary", a.summary], ["When", fmtTime(a.time) + (a.count > 1 ? " (" + a.count + " times, last " + fmtTime(a.lastTime) + ")" : "")],
      ["Actor", [link("/timeline?" + qs({ user }), user), " · ", link("/identity?" + qs({ identity: user }), "who is this?", { class: "identity-link" })]],
      ["Behind", a.actor.principal],
      ["Impersonating", a.actor.impersonatedUser], ["Groups", (a.actor.groups || []).join(", ")],
      ["Target", a.target ? [a.target.verb, a.target.resource + (a.target.subresource ? "/" + a.target.subresource : ""), target(a.target)].filter(Boolean).join(" ") : ""],
      ["Source IPs", (a.sourceIPs || []).join(", ")], ["User agent", a.userAgent], ["Cluster", a.cluster],
      ["ATT&CK", (a.attack || []).join(", ")], ["Assignee", a.assignee], ["Suppressed by", a.suppressed],
    ])));
    sections.push(h("h2", {}, "Events"), h("ul", {}, (a.auditIDs || []).map((x) => h("li", {}, link(eventHref(x, a.time), x, { class: "event-link" })))));
    if (activity) {
      sections.push(h("h2", {}, "The actor's last hour"),
        h("p", {}, activity.requests + " requests, " + activity.failures + " failed (code ≥ 400)"),
        table([{ title: "Verb", cell: (r) => r.verb }, { title: "Resource", cell: (r) => r.resource }, { title: "Requests", cell: (r) => r.requests, num: true }, { title: "Failed", cell: (r) => r.failures, num: true }], activity.top || []));
    }
    if (first) {
      const facts = [];
      const fact = (what, f) => { if (f) facts.push([what, f.value, f.new ? h("span", { class: "new" }, "new: not seen before") : "first seen " + (f.firstSeen || "")]); };
      fact("identity", first.identity);
      for (const ip of first.sourceIPs || []) fact("source IP", ip);
      fact("user agent", first.userAgent);
      sections.push(h("h2", {}, "First seen"), first.since ? h("p", { class: "muted" }, "kubetrail has watched since " + first.since) : null,
        table([{ title: "What", cell: (r) => r[0] }, { title: "Value", cell: (r) => r[1] }, { title: "", cell: (r) => r[2] }], facts));
    }
    if (ctx.otherAlerts && ctx.otherAlerts.length) {
      sections.push(h("h2", {}, "The actor's other alerts"), h("ul", {}, ctx.otherAlerts.map((o) => h("li", {}, link("/alerts/" + encodeURIComponent(o.id), o.rule + " (" + o.severity + ") · " + fmtTime(o.time))))));
    }
    if (ctx.changedObjects && ctx.changedObjects.length) {
      sections.push(h("h2", {}, "Objects the actor changed in the hour"), table([
        { title: "Object", cell: (c) => link(historyHref(c.resource, c.name, c.namespace, c.group), c.resource + "/" + c.name + (c.namespace ? " in " + c.namespace : ""), { class: "history-link" }) },
        { title: "Verbs", cell: (c) => (c.verbs || []).join(", ") }, { title: "Last", cell: (c) => fmtTime(c.last) }], ctx.changedObjects));
    }
    if (ctx.sessions && ctx.sessions.length) {
      sections.push(h("h2", {}, "Sessions the actor opened in the hour"), table([
        { title: "When", cell: (c) => fmtTime(c.time) }, { title: "Kind", cell: (c) => c.kind }, { title: "Pod", cell: (c) => c.pod },
        { title: "Container", cell: (c) => c.container || "" }, { title: "Command", cell: (c) => h("code", {}, c.command || "") }], ctx.sessions),
        h("p", {}, link("/sessions?" + qs({ user }), "Every session of " + user, { class: "sessions-link" })));
    }
    if (ctx.policy) sections.push(h("h2", {}, "What the audit policy hid"), h("p", {}, ctx.policy));
    if (a.runbook) sections.push(h("h2", {}, "Runbook"), h("pre", { class: "runbook" }, a.runbook));
    sections.push(h("h2", {}, "Investigate"), h("ul", {},
      h("li", {}, link("/scope?" + qs({ user }), "Scope report for " + user, { class: "scope-link" })),
      h("li", {}, link("/timeline?" + qs({ user }), "Timeline of " + user)),
      a.target && a.target.resource && a.target.name && !SESSION_KINDS.includes(a.target.subresource) ? h("li", {}, link(historyHref(a.target.resource, a.target.name, a.target.namespace), "History of " + a.target.resource + "/" + a.target.name, { class: "history-link" })) : null,
      h("li", {}, link("/search?" + qs({ where: "user = " + q(user) }), "Everything " + user + " did"))),
      (a.investigate || []).length ? h("pre", {}, a.investigate.join("\n")) : null);
    if (a.history && a.history.length) {
      sections.push(h("h2", {}, "History"), table([
        { title: "When", cell: (c) => fmtTime(c.at) }, { title: "Who", cell: (c) => c.by || "" },
        { title: "What", cell: (c) => [c.action, c.to, c.text].filter(Boolean).join(": ") }], a.history));
    }
    show(h("p", {}, link("/alerts", "← Alerts")),
      h("h1", {}, sev(a.severity), " ", a.rule.title),
      h("p", {}, "Status: ", status(a.status), a.assignee ? " · assigned to " + a.assignee : ""),
      actions, suppress, sections);
  }

  function searchForm(p) {
    return h("form", { class: "search", role: "search", "data-filter": "search" },
      h("label", { for: "s-where" }, "Where", h("input", { id: "s-where", name: "where", class: "where", value: p.where || "", placeholder: 'verb = delete and resource = pods and name = "web-1"' })),
      h("label", { for: "s-since" }, "Since", h("input", { id: "s-since", name: "since", value: p.since || "", placeholder: "24h, 7d, all or RFC 3339", size: 16 })),
      h("label", { for: "s-until" }, "Until", h("input", { id: "s-until", name: "until", value: p.until || "", placeholder: "now", size: 14 })),
      h("button", { type: "submit" }, "Search"));
  }

  function eventRow(e) {
    const o = e.objectRef || {};
    return {
      e, time: e.requestReceivedTimestamp || e.stageTimestamp, user: (e.user || {}).username || "", verb: e.verb || "",
      resource: o.resource ? o.resource + (o.subresource ? "/" + o.subresource : "") : (e.requestURI || ""),
      nsname: [o.namespace, o.name].filter(Boolean).join("/"), ip: (e.sourceIPs || [])[0] || "",
      code: (e.responseStatus || {}).code ?? "", id: e.auditID,
    };
  }

  async function searchView(params) {
    // The last day unless asked otherwise: a year of data is there, but a search usually starts recent.
    // `all` searches everything.
    const p = { where: params.get("where") || "", since: params.get("since") || "24h", until: params.get("until") || "" };
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    const limit = 100;
    const form = searchForm(p);
    show(h("h1", {}, "Search"), form, h("p", { class: "muted" }, "Loading…"));
    const scope = { where: p.where, since: p.since === "all" ? "" : p.since, until: p.until };
    const [hist, res] = await Promise.all([
      api("/api/v1/histogram?" + qs(scope)),
      api("/api/v1/query?" + qs(Object.assign({ limit, offset }, scope))),
    ]);
    const rows = res.events.map(eventRow);
    const page = (o) => "/search?" + qs(Object.assign({}, scope, { since: p.since, offset: o || null }));
    const exp = (format) => h("a", { class: "button secondary", href: scoped("/api/v1/export?" + qs(Object.assign({ format }, scope))), download: "kubetrail-export." + format }, "Export " + format.toUpperCase());
    show(h("h1", {}, "Search"), form,
      barChart("Requests matching, per " + per(hist.bucket_seconds), hist.buckets.map((b) => Date.parse(b[0]) / 1000), hist.buckets.map((b) => b[1]), "requests", hist.bucket_seconds),
      h("div", { class: "pager" },
        h("span", { class: "muted", id: "result-count" }, hist.total + (hist.total === 1 ? " request matches" : " requests match") + (rows.length ? " · showing " + (offset + 1) + "–" + (offset + rows.length) : "")),
        offset > 0 ? link(page(Math.max(0, offset - limit)), "← Previous") : null,
        res.truncated ? link(page(offset + limit), "Next →", { class: "next" }) : null,
        exp("jsonl"), exp("csv")),
      rows.length ? table([
        { title: "Time", cell: (r) => link(eventHref(r.id, r.time), fmtTime(r.time), { class: "event-link" }) },
        { title: "User", cell: (r) => link("/timeline?" + qs({ user: r.user }), r.user, { class: "user-link" }) },
        { title: "Verb", cell: (r) => r.verb },
        { title: "Resource", cell: (r) => r.resource },
        { title: "Namespace/name", cell: (r) => r.nsname },
        { title: "Source IP", cell: (r) => r.ip },
        { title: "Code", cell: (r) => r.code, num: true },
      ], rows) : h("p", {}, "Nothing matches."));
  }

  /** An event's page; `at` (its request time, when known) lets the server read one hour's files only. */
  function eventHref(id, at) {
    return "/events/" + encodeURIComponent(id) + (at ? "?" + qs({ at }) : "");
  }

  async function eventView(id, params) {
    show(h("p", { class: "muted" }, "Loading…"));
    const at = Date.parse(params.get("at") || "");
    const window = isFinite(at) ? { since: new Date(at - 3600e3).toISOString(), until: new Date(at + 3600e3).toISOString() } : {};
    const data = await api("/api/v1/events/" + encodeURIComponent(id) + "?" + qs(window));
    const last = data.stages[data.stages.length - 1] || {};
    const r = eventRow(last);
    const o = last.objectRef || {};
    const links = [];
    if (r.user) links.push(h("li", {}, link("/timeline?" + qs({ user: r.user }), "Timeline of " + r.user)), h("li", {}, link("/search?" + qs({ where: "user = " + q(r.user) }), "Everything " + r.user + " did")));
    if (o.resource) {
      const w = ["resource = " + q(o.resource)].concat(o.namespace ? ["namespace = " + q(o.namespace)] : [], o.name ? ["name = " + q(o.name)] : []).join(" and ");
      links.push(h("li", {}, link("/search?" + qs({ where: w }), "Everything done to " + (r.nsname || o.resource))));
    }
    if (o.resource && o.name && !SESSION_KINDS.includes(o.subresource)) links.push(h("li", {}, link(historyHref(o.resource, o.name, o.namespace, o.apiGroup), "History of " + o.resource + "/" + o.name + (o.namespace ? " in " + o.namespace : ""), { class: "history-link" })));
    if (o.resource === "pods" && SESSION_KINDS.includes(o.subresource) && r.user) links.push(h("li", {}, link("/sessions?" + qs({ user: r.user }), "Sessions " + r.user + " opened", { class: "sessions-link" })));
    if (r.ip) links.push(h("li", {}, link("/search?" + qs({ where: "ip = " + q(r.ip) }), "Everything from " + r.ip)));
    // A client chooses its Audit-ID header: several requests can share one. Each is shown, and named.
    const requestOf = (s) => (s.verb || "") + " " + (s.requestURI || "") + " at " + (s.requestReceivedTimestamp || "");
    const requests = new Set(data.stages.map(requestOf));
    const reused = requests.size > 1 ? [h("p", { class: "warning" }, requests.size + " different requests share this auditID (a reused Audit-ID header: kt-audit-id-reuse). Each stage below names its request." + (data.more ? " More are stored than shown: search for auditid = " + id + "." : ""))] : [];
    show(h("h1", {}, "Event " + id), reused,
      h("div", { class: "card" }, kv([["Time", fmtTime(r.time)], ["User", r.user], ["Verb", r.verb], ["Resource", r.resource], ["Namespace/name", r.nsname], ["Source IP", r.ip], ["Code", r.code], ["User agent", last.userAgent], ["Stages", data.stages.map((s) => s.stage).join(", ")]])),
      h("h2", {}, "Related"), h("ul", {}, links),
      data.stages.map((s) => [h("h2", {}, "Stage " + s.stage + (requests.size > 1 ? ": " + requestOf(s) : "")), h("pre", { class: "event-json" }, JSON.stringify(s, null, 2))]));
  }

  /** A report cell: times shortened, auditIDs and users linked, an object's history command linked to its page. */
  function reportCell(column, v, row) {
    if (v === null || v === undefined) return "";
    const text = String(v);
    if (column === "history" && row && row.resource && row.name) return link(historyHref(row.resource, row.name, row.namespace, row.api_group), text, { class: "history-link" });
    if (/^\d{4}-\d\d-\d\dT[\d:.]+Z$/.test(text)) return fmtTime(text);
    if ((column === "audit_id" || column === "audit_ids") && text) return link("/events/" + encodeURIComponent(text.split(",")[0]), text);
    if (column === "user" && text) return link("/timeline?" + qs({ user: text }), text);
    if (column === "credential" && text) return link("/timeline?" + qs({ credential_id: text }), text, { class: "credential-link" });
    if ((column === "identity" || column === "other_identity" || column === "users") && text) return h("span", {}, ...text.split(",").flatMap((u, i) => [i ? ", " : "", link("/identity?" + qs({ identity: u }), u)]));
    if (column === "subject" && row && row.user) return link("/identity?" + qs({ identity: row.user }), text);
    return text;
  }

  function reportTables(report) {
    return report.sections.map((s) => [
      h("h2", {}, s.title),
      s.rows.length ? table(s.columns.map((c) => ({ title: c.replace(/_/g, " "), cell: (r) => reportCell(c, r[c], r) })), s.rows) : h("p", { class: "muted" }, "none"),
      s.note ? h("p", { class: "muted" }, s.note) : null,
    ]);
  }

  function userForm(path, p) {
    return h("form", { class: "search", "data-filter": path },
      h("label", { for: "u-user" }, "User", h("input", { id: "u-user", name: "user", value: p.user || "", size: 40 })),
      h("label", { for: "u-cred" }, "Credential", h("input", { id: "u-cred", name: "credential_id", value: p.credential_id || "", size: 24, placeholder: "JTI=…, optional" })),
      h("label", { for: "u-since" }, "Since", h("input", { id: "u-since", name: "since", value: p.since || "", placeholder: "30d, all or RFC 3339", size: 16 })),
      h("label", { for: "u-until" }, "Until", h("input", { id: "u-until", name: "until", value: p.until || "", placeholder: "now", size: 12 })),
      h("button", { type: "submit" }, "Show"));
  }

  /** The identity pages' range: the last 30 days unless asked (`all`: everything stored). */
  function userParams(params) {
    return { user: params.get("user") || "", credential_id: params.get("credential_id") || "", since: params.get("since") || "30d", until: params.get("until") || "" };
  }
  /** Whose report: the user and/or the credential, as the API takes them. */
  const subject = (p) => Object.assign(p.user ? { user: p.user } : {}, p.credential_id ? { credential_id: p.credential_id } : {});
  const subjectText = (p) => p.user && p.credential_id ? p.user + " with credential " + p.credential_id : p.user || "credential " + p.credential_id;
  const apiRange = (p) => ({ since: p.since === "all" ? "" : p.since, until: p.until });

  async function timelineView(params) {
    const p = userParams(params);
    const form = userForm("timeline", p);
    if (!p.user && !p.credential_id) return show(h("h1", {}, "Timeline"), form, h("p", { class: "muted" }, "Whose activity? Give a user name (a service account is system:serviceaccount:NAMESPACE:NAME), or a credential id to follow one token."));
    show(h("h1", {}, "Timeline of " + subjectText(p)), form, h("p", { class: "muted" }, "Loading…"));
    const scope = apiRange(p);
    // The histogram is of the user's requests; a credential alone has none to draw from the filter language.
    const [hist, rep] = await Promise.all([
      p.user ? api("/api/v1/histogram?" + qs(Object.assign({ where: "user = " + q(p.user) }, scope))) : null,
      api("/api/v1/timeline?" + qs(Object.assign(subject(p), scope))),
    ]);
    show(h("h1", {}, "Timeline of " + subjectText(p)), form,
      h("p", {}, link("/scope?" + qs(Object.assign(subject(p), { since: p.since, until: p.until })), "Scope report (blast radius) →", { class: "scope-link" }),
        p.user ? [" · ", link("/identity?" + qs({ identity: p.user, since: p.since, until: p.until }), "Who is this? →", { class: "identity-link" })] : null),
      hist && !p.credential_id ? barChart("Requests per " + per(hist.bucket_seconds), hist.buckets.map((b) => Date.parse(b[0]) / 1000), hist.buckets.map((b) => b[1]), "requests", hist.bucket_seconds) : null,
      reportTables(rep));
  }

  async function scopeView(params) {
    const p = userParams(params);
    const form = userForm("scope", p);
    if (!p.user && !p.credential_id) return show(h("h1", {}, "Scope report"), form, h("p", { class: "muted" }, "The incident report on a suspect identity (or one of its credentials): what it read, changed, created and deleted, from where."));
    show(h("h1", {}, "Scope report: " + subjectText(p)), form, h("p", { class: "muted" }, "Loading…"));
    const rep = await api("/api/v1/scope?" + qs(Object.assign(subject(p), apiRange(p))));
    const print = h("button", { type: "button", class: "secondary no-print" }, "Print report");
    print.addEventListener("click", () => window.print());
    show(h("h1", {}, rep.title || "Scope report: " + subjectText(p)), form,
      h("p", { class: "muted" }, "Generated " + fmtTime(new Date().toISOString()) + " by kubetrail" + (session.identity ? " for " + session.identity : "") + (p.since ? " · since " + p.since : "") + (p.until ? " · until " + p.until : "")),
      print, reportTables(rep));
  }

  // ---- identities and RBAC ---------------------------------------------------------------------------

  async function identityView(params) {
    const p = { identity: params.get("identity") || "", since: params.get("since") || "30d", until: params.get("until") || "" };
    const form = h("form", { class: "search", "data-filter": "identity" },
      h("label", { for: "i-identity" }, "Identity", h("input", { id: "i-identity", name: "identity", value: p.identity, required: true, size: 48, placeholder: "user, AWS ARN or session name, JTI=…" })),
      h("label", { for: "i-since" }, "Since", h("input", { id: "i-since", name: "since", value: p.since, placeholder: "30d, all or RFC 3339", size: 16 })),
      h("label", { for: "i-until" }, "Until", h("input", { id: "i-until", name: "until", value: p.until, placeholder: "now", size: 12 })),
      h("button", { type: "submit" }, "Look up"));
    if (!p.identity) return show(h("h1", {}, "Identity"), form, h("p", { class: "muted" }, "Who or what is behind an identity: a username, an AWS ARN or session name (the human behind an EKS role), or a credential id (a service-account token's JTI=…, a certificate's X509SHA256=…, an access key id)."));
    show(h("h1", {}, "Who is " + p.identity), form, h("p", { class: "muted" }, "Loading…"));
    const range = apiRange(p);
    const rep = await api("/api/v1/whois?" + qs(Object.assign({ identity: p.identity }, range)));
    const users = (rep.sections.find((s) => s.key === "identities") || { rows: [] }).rows.map((r) => r.user);
    // The grants of the identity found (a session name or a credential resolves to its username).
    const grantee = users.length === 1 ? users[0] : p.identity;
    const grants = await api("/api/v1/rbac/grants?" + qs(Object.assign({ user: grantee }, range))).catch((e) => ({ error: e }));
    show(h("h1", {}, "Who is " + p.identity), form,
      h("p", {}, users.slice(0, 5).flatMap((u, i) => [i ? " · " : "", link("/timeline?" + qs({ user: u, since: p.since, until: p.until }), "Timeline of " + u, { class: "scope-link" }), " · ", link("/scope?" + qs({ user: u, since: p.since, until: p.until }), "scope")])),
      reportTables(rep),
      h("h2", {}, "RBAC grants over time" + (grantee !== p.identity ? " of " + grantee : "")),
      grants.error ? errorBox(grants.error) : rbacGrants(grants));
  }

  /** What an identity was granted (now, or at the end of the range) and the changes to it in the range. */
  function rbacGrants(g) {
    return [
      (g.notes || []).map((n) => h("p", { class: "warning" }, n)),
      g.grants && g.grants.length ? table([
        { title: "Via", cell: (r) => r.binding },
        { title: "Role", cell: (r) => r.role },
        { title: "Where", cell: (r) => r.namespace || "cluster-wide" },
        { title: "Rule", cell: (r) => r.rule },
        { title: "Certain", cell: (r) => r.uncertain ? "no: " + r.uncertain : "yes" },
      ], g.grants) : h("p", { class: "muted", id: "no-grants" }, g.base ? "no grant as of " + fmtTime(g.at) : "no RBAC snapshot imported (kubetrail rbac import)"),
      g.changes && g.changes.length ? [h("h3", {}, "Changes"), table([
        { title: "When", cell: (r) => link(eventHref(r.audit_id, r.time), fmtTime(r.time)) },
        { title: "Change", cell: (r) => r.added ? "granted" : "revoked" },
        { title: "Via", cell: (r) => r.binding },
        { title: "Role", cell: (r) => r.role },
        { title: "By", cell: (r) => link("/identity?" + qs({ identity: r.by }), r.by) },
        { title: "From", cell: (r) => (r.source_ips || []).join(", ") },
      ], g.changes)] : null,
    ];
  }

  async function rbacView(params) {
    const p = { verb: params.get("verb") || "", resource: params.get("resource") || "", namespace: params.get("namespace") || "", at: params.get("at") || "" };
    const form = h("form", { class: "search", "data-filter": "rbac" },
      h("label", { for: "r-verb" }, "Verb", h("input", { id: "r-verb", name: "verb", value: p.verb, required: true, size: 8, placeholder: "get" })),
      h("label", { for: "r-resource" }, "Resource", h("input", { id: "r-resource", name: "resource", value: p.resource, required: true, size: 24, placeholder: "secrets, deployments.apps, pods/exec" })),
      h("label", { for: "r-ns" }, "Namespace", h("input", { id: "r-ns", name: "namespace", value: p.namespace, size: 16, placeholder: "cluster-wide: empty" })),
      h("label", { for: "r-at" }, "At", h("input", { id: "r-at", name: "at", value: p.at, size: 22, placeholder: "now, 3d or RFC 3339" })),
      h("button", { type: "submit" }, "Who can?"));
    if (!p.verb || !p.resource) return show(h("h1", {}, "Who can"), form, h("p", { class: "muted" }, "Who could do something at any moment: the RBAC snapshot imported with kubetrail rbac import, and every RBAC write recorded since, evaluated as the apiserver's authorizer does."));
    show(h("h1", {}, "Who can " + p.verb + " " + p.resource), form, h("p", { class: "muted" }, "Loading…"));
    const w = await api("/api/v1/rbac/who-can?" + qs({ verb: p.verb, resource: p.resource, namespace: p.namespace, at: p.at }));
    show(h("h1", {}, "Who can " + p.verb + " " + p.resource + (p.namespace ? " in " + p.namespace : "")), form,
      h("p", { class: "muted", id: "who-can-at" }, "As of " + fmtTime(w.at) + " (snapshot of " + fmtTime(w.base) + " and " + w.writes + " RBAC write(s) since)"),
      (w.notes || []).map((n) => h("p", { class: "warning" }, n)),
      table([
        { title: "Subject", cell: (r) => r.kind === "Group" ? r.subject : link("/identity?" + qs({ identity: r.subject }), r.subject) },
        { title: "Kind", cell: (r) => r.kind },
        { title: "Why", cell: (r) => r.why },
        { title: "Certain", cell: (r) => r.uncertain ? "no" : "yes" },
      ], w.allowed));
  }

  // ---- object history and sessions ------------------------------------------------------------------

  const SESSION_KINDS = ["exec", "attach", "portforward"];
  /** An object's history page; with its API group, so a custom resource is not taken for the built-in kind of its plural. */
  function historyHref(resource, name, namespace, group) {
    return "/history?" + qs({ object: resource + (group ? "." + group : "") + "/" + name, namespace: namespace || "" });
  }

  /** One side of a change (`{state, value}`): never a redaction marker, which the server never sends. */
  function sideText(v) {
    if (!v) return "?";
    if (v.state === "absent") return "(absent)";
    if (v.state === "unknown") return "?";
    if (v.state === "redacted") return "[redacted]";
    const x = v.value;
    // A string that could read as something else (a number, "(absent)", "[redacted]", empty, spaces) in quotes,
    // as the CLI writes it: a value the watched chose must not pass for kubetrail's own words.
    const bare = typeof x === "string" && x !== "" && !/[\s\p{Cc}]/u.test(x) && !/^(true|false|null|\?)$/.test(x) &&
      !/^[(\[{"]/.test(x) && !isFinite(Number(x));
    return bare ? x : JSON.stringify(x);
  }
  function changeText(c) {
    const redacted = c.before && c.after && c.before.state === "redacted" && c.after.state === "redacted";
    return [h("code", { class: "path" }, c.path), ": ", sideText(c.before), " → ", redacted ? "[redacted, changed]" : sideText(c.after)];
  }

  function historyForm(p) {
    return h("form", { class: "search", "data-filter": "history" },
      h("label", { for: "h-object" }, "Object", h("input", { id: "h-object", name: "object", value: p.object || "", required: true, size: 36, placeholder: "deployments/payments-api" })),
      h("label", { for: "h-ns" }, "Namespace", h("input", { id: "h-ns", name: "namespace", value: p.namespace || "", size: 16, placeholder: "cluster-scoped: empty" })),
      h("label", { for: "h-since" }, "Since", h("input", { id: "h-since", name: "since", value: p.since || "", placeholder: "30d, all or RFC 3339", size: 16 })),
      h("label", { for: "h-until" }, "Until", h("input", { id: "h-until", name: "until", value: p.until || "", placeholder: "now", size: 12 })),
      h("button", { type: "submit" }, "Show"));
  }

  async function historyView(params) {
    const p = { object: params.get("object") || "", namespace: params.get("namespace") || "", since: params.get("since") || "30d", until: params.get("until") || "" };
    const form = historyForm(p);
    if (!p.object) return show(h("h1", {}, "Object history"), form, h("p", { class: "muted" }, "Every write of one object, change by change: give RESOURCE/NAME (deployments/payments-api) and its namespace."));
    show(h("h1", {}, "History of " + p.object), form, h("p", { class: "muted" }, "Loading…"));
    const hist = await api("/api/v1/history?" + qs(Object.assign({ resource: p.object, namespace: p.namespace }, apiRange(p))));
    const entries = hist.entries.map((e) => h("article", { class: "card history-entry" },
      h("p", { class: "history-head" },
        link(eventHref(e.audit_id, e.time), fmtTime(e.time), { class: "event-link" }), " · ",
        h("b", {}, e.verb + (e.subresource ? " (" + e.subresource + ")" : "")),
        e.patch ? " · " + e.patch.replace(/_/g, " ") + " patch" + (e.patch_assumed ? " (inferred)" : "") : "",
        " · by ", link("/timeline?" + qs({ user: e.user }), e.user, { class: "user-link" }),
        e.impersonated_user ? " as " + e.impersonated_user : "",
        (e.source_ips || []).length ? " from " + e.source_ips.join(", ") : "",
        " · code " + (e.code ?? "none"), hist.namespace ? "" : (e.namespace ? " · in " + e.namespace : "")),
      e.user_agent ? h("p", { class: "muted" }, "user agent: " + e.user_agent) : null,
      // A create sets every field: folded, the changes after it are what the page is about.
      e.changes.length && e.action === "created" && e.changes.length > 8
        ? h("details", {}, h("summary", {}, e.changes.length + (e.more ? "+" : "") + " fields set"), h("ul", { class: "changes" }, e.changes.map((c) => h("li", { class: "change" }, changeText(c)))))
        : e.changes.length ? h("ul", { class: "changes" }, e.changes.map((c) => h("li", { class: "change" }, changeText(c)))) : null,
      e.more ? h("p", { class: "muted" }, "… and " + e.more + " more change(s)") : null,
      (e.notes || []).map((n) => h("p", { class: "muted note" }, n))));
    show(h("h1", {}, "History of " + hist.object), form,
      h("p", { class: "muted", id: "history-count" }, hist.entries.length + (hist.entries.length === 1 ? " write" : " writes") + (hist.truncated ? " (the first ones)" : "")),
      (hist.notes || []).map((n) => h("p", { class: "warning" }, n)),
      entries);
  }

  async function sessionsView(params) {
    const p = { user: params.get("user") || "", namespace: params.get("namespace") || "", since: params.get("since") || "30d", until: params.get("until") || "" };
    const form = h("form", { class: "search", "data-filter": "sessions" },
      h("label", { for: "x-user" }, "User", h("input", { id: "x-user", name: "user", value: p.user, size: 32, placeholder: "anyone" })),
      h("label", { for: "x-ns" }, "Namespace", h("input", { id: "x-ns", name: "namespace", value: p.namespace, size: 16, placeholder: "any" })),
      h("label", { for: "x-since" }, "Since", h("input", { id: "x-since", name: "since", value: p.since, placeholder: "30d, all or RFC 3339", size: 16 })),
      h("label", { for: "x-until" }, "Until", h("input", { id: "x-until", name: "until", value: p.until, placeholder: "now", size: 12 })),
      h("button", { type: "submit" }, "Show"));
    show(h("h1", {}, "Sessions"), form, h("p", { class: "muted" }, "Loading…"));
    const rep = await api("/api/v1/sessions?" + qs(Object.assign({ user: p.user, namespace: p.namespace }, apiRange(p))));
    show(h("h1", {}, rep.title ? rep.title.charAt(0).toUpperCase() + rep.title.slice(1) : "Sessions"), form,
      h("p", { class: "muted" }, "Every exec, attach and port-forward: the command as sent (passwords redacted), with stdin and terminal, start, end and duration."),
      reportTables(rep));
  }

  /** The gaps of a range (`/api/v1/gaps`'s report): a table of each silence, or why there is none. */
  function gapsTable(g) {
    if (g.error) return h("div", { id: "gaps" }, errorBox(g.error));
    const s = g.sections[0];
    return h("div", { id: "gaps" },
      h("p", { class: "muted" }, g.title),
      s.rows.length ? table([
        { title: "Cluster", cell: (r) => r.cluster || "(unnamed)" },
        { title: "Source", cell: (r) => r.source },
        { title: "From", cell: (r) => fmtTime(r.from) },
        { title: "To", cell: (r) => fmtTime(r.to) },
        { title: "Length", cell: (r) => r.length, num: true },
        { title: "Ongoing", cell: (r) => r.ongoing },
      ], s.rows) : h("p", {}, "No gap: every source delivered events all through the range."),
      s.note ? h("p", { class: "muted" }, s.note) : null);
  }

  async function volumeView(params) {
    const p = { since: params.get("since") || "", until: params.get("until") || "" };
    const longer = params.get("longer_than") || "";
    const form = h("form", { class: "search", "data-filter": "volume" },
      h("label", { for: "v-since" }, "Since", h("input", { id: "v-since", name: "since", value: p.since, placeholder: "7d", size: 12 })),
      h("label", { for: "v-until" }, "Until", h("input", { id: "v-until", name: "until", value: p.until, placeholder: "now", size: 12 })),
      h("label", { for: "v-longer" }, "Gaps over", h("input", { id: "v-longer", name: "longer_than", value: longer, placeholder: "5m", size: 6 })),
      h("button", { type: "submit" }, "Show"));
    show(h("h1", {}, "Volume"), form, h("p", { class: "muted" }, "Loading…"));
    // The gaps' own error (a threshold that is not a duration) is shown in their place, not instead of the page.
    const [v, g] = await Promise.all([
      api("/api/v1/volume?" + qs(p)),
      api("/api/v1/gaps?" + qs(Object.assign({ longer_than: longer }, p))).catch((e) => { if (e === STALE) throw e; return { error: e }; }),
    ]);
    const t = v.hours.map((x) => Date.parse(x.hour) / 1000);
    const stat = (label, value) => h("div", { class: "stat" }, label, h("b", {}, value));
    const gb = (x) => (x === null || x === undefined ? "–" : x.toFixed(x < 10 ? 2 : 1) + " GB");
    const groupTable = (title, rows, key) => [h("h2", {}, title), rows.length ? table([
      { title: "Group", cell: (g) => [g.user, g.verb, g.resource].filter(Boolean).join(" · ") },
      { title: "Events", cell: (g) => num(g.events), num: true },
      { title: "Share", cell: (g) => { const bar = h("span", { class: "share" }); bar.style.width = Math.max(1, Math.round(g.share * 120)) + "px"; return h("span", { class: g.noisy ? "noisy" : null }, bar, pct(g.share)); } },
      { title: "Suggested None rule", cell: (g) => (g.suggestion ? h("pre", { class: "rule" }, g.suggestion) : "") },
    ], rows, { key }) : h("p", { class: "muted" }, "none")];
    const noisy = [].concat(v.groups.user, v.groups.user_verb, v.groups.user_verb_resource).filter((g) => g.noisy);
    show(h("h1", {}, "Volume"), form,
      h("div", { class: "stats" },
        stat("Events stored", num(v.events)), stat("JSON per day", gb(v.json_gb_per_day)), stat("Stored per day", gb(v.stored_gb_per_day)),
        stat("Retention footprint (" + v.retention_days + " d)", gb(v.retention_gb)), stat("Average event", bytes(v.avg_event_bytes))),
      h("p", { class: noisy.length ? "noisy" : "muted", id: "noisy-summary" }, noisy.length
        ? noisy.length + " noisy group" + (noisy.length > 1 ? "s" : "") + " over " + pct(v.noisy_share) + " of the events: a None rule for each is suggested below."
        : "No group is over " + pct(v.noisy_share) + " of the events."),
      h("h2", {}, "Per hour"),
      barChart("Events per hour", t, v.hours.map((x) => x.events), "events", 3600),
      barChart("Stored JSON bytes per hour", t, v.hours.map((x) => x.json_bytes), "bytes", 3600),
      h("h2", {}, "Gaps"),
      gapsTable(g),
      groupTable("Top users", v.groups.user, "user"),
      groupTable("Top users and verbs", v.groups.user_verb, "user_verb"),
      groupTable("Top users, verbs and resources", v.groups.user_verb_resource, "user_verb_resource"),
      h("h2", {}, "Sinks"),
      v.sinks.length ? table([
        { title: "Sink", cell: (s) => s.name }, { title: "Type", cell: (s) => s.kind },
        { title: "Lag (events)", cell: (s) => num(s.lag_events), num: true },
        { title: "Lag (s)", cell: (s) => s.lag_seconds, num: true },
        { title: "Sent", cell: (s) => num(s.sent), num: true }, { title: "Failed", cell: (s) => num(s.failed), num: true },
        { title: "Last error", cell: (s) => s.last_error || "" }, { title: "As of", cell: (s) => fmtTime(s.at) },
      ], v.sinks) : h("p", { class: "muted" }, "No sink is configured (sinks: in the config ships events to ClickHouse, S3, a SIEM)."));
  }

  async function clustersView() {
    show(h("h1", {}, "Clusters"), h("p", { class: "muted" }, "Loading…"));
    const rep = await api("/api/v1/clusters");
    const rows = rep.sections[0].rows;
    show(h("h1", {}, "Clusters"),
      h("p", { class: "muted" }, "Every cluster whose events this console can see (a fleet's, when it answers from ClickHouse). " +
        "Pick one to scope every search, timeline, scope report and volume to it."),
      table([
        { title: "Cluster", cell: (r) => link("/clusters?" + qs({ pick: r.cluster }), r.cluster || "(unnamed)", { class: "cluster-link" }) },
        { title: "Events", cell: (r) => num(r.events), num: true },
        { title: "First", cell: (r) => fmtTime(r.first) },
        { title: "Last", cell: (r) => fmtTime(r.last) },
        { title: "Last hour", cell: (r) => num(r.last_hour), num: true },
        { title: "Per second", cell: (r) => r.per_second, num: true },
        { title: "Quiet for", cell: (r) => r.quiet_for },
      ], rows),
      h("p", { class: "muted" }, rep.sections[0].note || ""));
    fillPicker(rows.map((r) => r.cluster));
  }

  /** The header's cluster picker: all clusters, or one. */
  function fillPicker(names) {
    const sel = document.getElementById("cluster");
    if (!sel) return;
    const c = picked();
    const all = Array.from(new Set(names.concat(c ? [c] : []))).sort();
    clear(sel).append(h("option", { value: "" }, "All clusters"), ...all.map((n) => h("option", { value: n, selected: n === c }, n)));
  }

  // ---- routing --------------------------------------------------------------------------------------

  async function route() {
    ticket = {};
    const path = location.pathname;
    const params = new URLSearchParams(location.search);
    for (const a of document.querySelectorAll(".top nav a")) {
      const on = path === a.getAttribute("href") || (path.startsWith(a.getAttribute("href") + "/")) || (path === "/" && a.getAttribute("href") === "/alerts") || (path.startsWith("/events/") && a.getAttribute("href") === "/search") || ((path === "/scope" || path === "/identity") && a.getAttribute("href") === "/timeline") || (path === "/history" && a.getAttribute("href") === "/search");
      if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    try {
      let m;
      if (path === "/" || path === "/alerts") await alertsView(params);
      else if ((m = path.match(/^\/alerts\/([^/]+)$/))) await alertView(decodeURIComponent(m[1]));
      else if (path === "/search") await searchView(params);
      else if ((m = path.match(/^\/events\/([^/]+)$/))) await eventView(decodeURIComponent(m[1]), params);
      else if (path === "/timeline") await timelineView(params);
      else if (path === "/scope") await scopeView(params);
      else if (path === "/history") await historyView(params);
      else if (path === "/sessions") await sessionsView(params);
      else if (path === "/identity") await identityView(params);
      else if (path === "/rbac") await rbacView(params);
      else if (path === "/volume") await volumeView(params);
      else if (path === "/clusters" && params.has("pick")) {
        sessionStorage.setItem(CLUSTER_KEY, params.get("pick"));
        history.replaceState(null, "", "/clusters");
        await clustersView();
      } else if (path === "/clusters") await clustersView();
      else show(h("h1", {}, "Not found"), h("p", {}, link("/alerts", "Alerts")));
      document.title = "kubetrail · " + ((main.querySelector("h1") || {}).textContent || "");
    } catch (e) {
      if (e === STALE) return;
      show(h("h1", {}, "Something went wrong"), errorBox(e));
    }
  }

  function go(href) {
    history.pushState(null, "", href);
    window.scrollTo(0, 0);
    route();
  }

  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-nav]");
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    ev.preventDefault();
    go(url.pathname + url.search);
  });
  document.addEventListener("submit", (ev) => {
    const form = ev.target.closest("form[data-filter]");
    if (!form) return;
    ev.preventDefault();
    const data = new FormData(form);
    const o = {};
    for (const [k, v] of data.entries()) o[k] = v;
    const to = { alerts: "/alerts", search: "/search", timeline: "/timeline", scope: "/scope", volume: "/volume", history: "/history", sessions: "/sessions" }[form.dataset.filter];
    go(to + "?" + qs(o));
  });
  // Keyboard: j/k move through table rows, Enter opens the selected one, / focuses the first search box.
  document.addEventListener("keydown", (ev) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (ev.key === "/" && !typing) {
      const input = main.querySelector("form input");
      if (input) { ev.preventDefault(); input.focus(); }
      return;
    }
    if (typing || ev.metaKey || ev.ctrlKey || ev.altKey) return;
    const rows = [...main.querySelectorAll("tbody tr")];
    if (!rows.length) return;
    let i = rows.findIndex((r) => r.classList.contains("selected"));
    if (ev.key === "j" || ev.key === "k") {
      if (i >= 0) rows[i].classList.remove("selected");
      i = ev.key === "j" ? Math.min(rows.length - 1, i + 1) : Math.max(0, i - 1);
      rows[i].classList.add("selected");
      rows[i].scrollIntoView({ block: "nearest" });
    } else if (ev.key === "Enter" && i >= 0) {
      const a = rows[i].querySelector("a[data-nav]");
      if (rows[i].dataset.href) go(rows[i].dataset.href); else if (a) go(a.getAttribute("href"));
    }
  });
  window.addEventListener("popstate", route);
  document.getElementById("cluster").addEventListener("change", (ev) => {
    if (ev.target.value) sessionStorage.setItem(CLUSTER_KEY, ev.target.value);
    else sessionStorage.removeItem(CLUSTER_KEY);
    route();
  });

  (async function start() {
    try {
      session = await api("/api/v1/session");
      document.getElementById("who").textContent = session.identity ? "signed in as " + session.identity + " (" + session.role + ")" : "local access";
      document.getElementById("logout").hidden = !session.identity;
    } catch (e) {
      if (e.message === "not logged in") return;
    }
    fillPicker([]);
    route();
    // Names only, of the last 30 days (counting every cluster's events on each page would be a scan).
    api("/api/v1/clusters/names?" + qs({ since: "30d" })).then((r) => fillPicker(r.clusters), () => {});
  })();
})();
