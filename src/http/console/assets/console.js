// The tenant-router admin console. Plain JavaScript, no build step, served from
// the binary under a strict Content-Security-Policy: no inline code, and every
// value from the API is put on the page as text (textContent), never as markup.
// Everything goes through the admin API; the session is an HttpOnly cookie, and
// each write carries the session's CSRF token.
"use strict";

const state = { csrf: null, multiTenant: true, timer: null, rates: new Map(), view: 0 };

// ---- helpers ---------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (sel, root) => (root || document).querySelector(sel);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) data = await response.json();
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 && path !== "/admin/session") showSignIn("Your session has ended: sign in again.");
    throw new ApiError(response.status, error.code || "error", error.message || `${response.status} ${response.statusText}`);
  }
  return data;
}

function flash(message, kind) {
  const box = $("#flash");
  state.flashAt = Date.now();
  box.replaceChildren(el("p", { class: `flash ${kind || "ok"}`, text: message }));
  box.firstChild.scrollIntoView({ block: "nearest" });
}

function failed(error) {
  flash(error instanceof ApiError ? `${error.message} (${error.code})` : String(error), "error");
}

const enc = encodeURIComponent;

function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind}`, text });
}

function table(headers, rows, caption) {
  return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    el("table", {},
      el("caption", { class: "sr-only", text: caption }),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows)));
}

function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return el("div", { class: "field" },
    el("label", { for: id, text: label }), input,
    hint ? el("small", { class: "hint", text: hint }) : null);
}

function section(title, ...children) {
  return el("section", { class: "card" }, el("h2", { text: title }), ...children);
}

function setView(title, ...children) {
  stopTimer();
  state.view++;
  document.title = `${title} · tenant-router console`;
  const view = $("#view");
  view.replaceChildren(el("h1", { text: title }), ...children);
  // Which rendering this is: tests wait for a page to be drawn anew.
  view.dataset.render = String(state.view);
  return state.view;
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

// Runs `fn` every `ms` while the page still shows `view` (the number setView
// returned); a view left before its first load finished starts no timer.
function every(view, ms, fn) {
  if (view !== state.view) return;
  stopTimer();
  state.timer = setInterval(() => {
    if (view !== state.view) return stopTimer();
    if (!document.hidden) fn();
  }, ms);
}

// ---- session ----------------------------------------------------------------

function showSignIn(message) {
  stopTimer();
  state.csrf = null;
  $("#nav").hidden = true;
  $("#view").replaceChildren();
  $("#sign-in").hidden = false;
  if (message) flash(message, "error");
  $("#admin-token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#admin-token");
  const token = input.value;
  input.value = "";
  if (!token) return flash("Enter the admin token.", "error");
  try {
    const session = await api("POST", "/admin/session", { token });
    started(session);
    flash("Signed in.");
  } catch (error) {
    failed(error);
    input.focus();
  }
}

function started(session) {
  state.csrf = session.csrf_token;
  state.multiTenant = session.multi_tenant;
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  route();
}

async function signOut() {
  try { await api("DELETE", "/admin/session"); } catch (error) { /* signed out either way */ }
  showSignIn();
  flash("Signed out.");
}

// ---- tenants ------------------------------------------------------------------

function queryOf(hash) {
  const at = hash.indexOf("?");
  return new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
}

function rate(id, requests, errors, at) {
  const before = state.rates.get(id);
  state.rates.set(id, { requests, errors, at });
  if (!before || requests === null || at <= before.at || requests < before.requests) return [null, null];
  const secs = (at - before.at) / 1000;
  return [(requests - before.requests) / secs, (errors - before.errors) / secs];
}

function health(row) {
  if (row.health === "ok") return badge(`ok · ${row.round_trip_ms.toFixed(1)} ms`, "good");
  if (row.health === "idle") return badge("idle", "muted");
  return badge(row.health, "bad");
}

async function tenantsView(params) {
  const q = params.get("q") || "";
  const status = params.get("status") || "";
  const offset = Number(params.get("offset") || 0);
  const search = el("input", { type: "search", value: q, placeholder: "id, name, domain, e-mail", autocomplete: "off" });
  const filter = el("select", {},
    el("option", { value: "", text: "all" }),
    el("option", { value: "active", text: "active" }),
    el("option", { value: "suspended", text: "suspended" }));
  filter.value = status;
  const go = (off) => {
    const p = new URLSearchParams();
    if (search.value.trim()) p.set("q", search.value.trim());
    if (filter.value) p.set("status", filter.value);
    if (off) p.set("offset", String(off));
    location.hash = `#/tenants${p.toString() ? "?" + p : ""}`;
  };
  let debounce = null;
  search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => go(0), 300); });
  filter.addEventListener("change", () => go(0));
  const body = el("div", { "aria-live": "polite" }, el("p", { text: "Loading…" }));
  const view = setView("Tenants",
    el("form", { class: "filters", role: "search", on: { submit: (e) => { e.preventDefault(); go(0); } } },
      field("Search", search), field("Status", filter)),
    body);
  if (q) { search.focus(); search.setSelectionRange(q.length, q.length); }

  const load = async () => {
    const p = new URLSearchParams({ limit: "20", offset: String(offset) });
    if (q) p.set("q", q);
    if (status) p.set("status", status);
    let page;
    try { page = await api("GET", `/api/admin/tenants?${p}`); } catch (error) { return view === state.view && failed(error); }
    if (view !== state.view) return;
    const rows = page.items.map((t) => {
      const [rps, eps] = rate(t.id, t.requests_total, t.errors_total, page.read_at_ms);
      return el("tr", { dataset: { tenant: t.id } },
        el("td", {}, el("a", { href: `#/tenant/${enc(t.id)}`, text: t.id })),
        el("td", { text: t.company_name || "—" }),
        el("td", {}, t.is_active ? badge("active", "good") : badge("suspended", "bad")),
        el("td", { text: t.domain }),
        el("td", { text: t.isolation }),
        el("td", { text: t.server || "—" }),
        el("td", { text: t.pool_open ? `open · ${t.connections}/${t.max_connections ?? "?"}` : "closed" }),
        el("td", {}, t.breaker_open ? badge("breaker open", "bad") : health(t)),
        el("td", { class: "num", text: rps === null ? "…" : rps.toFixed(1) }),
        el("td", { class: "num", text: eps === null ? "…" : eps.toFixed(2) }));
    });
    const last = Math.min(page.offset + page.items.length, page.total);
    body.replaceChildren(
      page.total === 0 ? el("p", { text: "No tenant matches." }) :
        table(["Tenant", "Company", "Status", "Domain", "Isolation", "Server", "Pool", "Health", "req/s", "5xx/s"], rows, "Tenants"),
      el("div", { class: "pager" },
        el("button", { type: "button", disabled: page.offset === 0, text: "Previous", on: { click: () => go(Math.max(0, page.offset - page.limit)) } }),
        el("span", { text: page.total ? `${page.offset + 1}–${last} of ${page.total}` : "" }),
        el("button", { type: "button", disabled: page.next_offset === null, text: "Next", on: { click: () => go(page.next_offset) } })),
      el("p", { class: "hint", text: "Rates are this replica's, over the last 5 s; the list refreshes every 5 s." }));
  };
  await load();
  every(view, 5000, load);
}

// ---- one tenant ---------------------------------------------------------------------

const FEATURES = ["products", "cash_flow", "patient_management", "treatment_tracking", "dental_supplies",
  "bom_management", "production_tracking", "material_management"];
const COMMON = ["products", "cash_flow"];

function numberInput(value, min) {
  return el("input", { type: "number", min: String(min ?? 0), step: "1", inputmode: "numeric", value: value ?? "" });
}

function dl(pairs) {
  return el("dl", { class: "pairs" }, pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v ?? "—")]));
}

function brandingPreview(t) {
  const b = t.branding || {};
  const card = el("div", { class: "brand-preview" });
  if (b.primary_color) card.style.borderColor = b.primary_color;
  const head = el("div", { class: "brand-head" });
  if (b.primary_color) head.style.backgroundColor = b.primary_color;
  const logo = b.logo_url || "";
  if ((logo.startsWith("https://") || (logo.startsWith("/") && !logo.startsWith("//"))) && !logo.includes("\\")) {
    head.append(el("img", { src: b.logo_url, alt: `${b.company_name || t.id} logo`, width: "40", height: "40" }));
  }
  head.append(el("strong", { text: b.company_name || t.id }));
  card.append(head);
  const c = t.contact_info || {};
  card.append(el("p", { text: [c.phone, c.email, c.address].filter(Boolean).join(" · ") || "No contact details" }));
  if (b.secondary_color) {
    const swatch = el("span", { class: "swatch", title: `secondary ${b.secondary_color}` });
    swatch.style.backgroundColor = b.secondary_color;
    card.append(swatch);
  }
  return card;
}

async function patch(id, body, done) {
  try {
    await api("PATCH", `/api/admin/tenants/${enc(id)}`, body);
    flash(done);
    return true;
  } catch (error) {
    failed(error);
    return false;
  }
}

async function tenantView(id) {
  setView(`Tenant ${id}`, el("p", { text: "Loading…" }));
  let t;
  try { t = await api("GET", `/api/tenants/${enc(id)}/config`); } catch (error) {
    setView(`Tenant ${id}`, el("p", { text: "This tenant could not be loaded." }));
    return failed(error);
  }
  const reload = () => tenantView(id);
  const healthBox = el("span", { text: "…" });
  const checkHealth = async () => {
    healthBox.replaceChildren(el("span", { text: "checking…" }));
    try {
      const h = await api("GET", `/api/tenants/${enc(id)}/health`);
      healthBox.replaceChildren(badge(`ok · ${h.round_trip_ms.toFixed(1)} ms`, "good"));
    } catch (error) {
      healthBox.replaceChildren(badge(error.code, "bad"));
    }
  };

  // Actions
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", id: "toggle-active", text: t.is_active ? "Suspend" : "Activate",
      on: { click: async () => { if (await patch(id, { is_active: !t.is_active }, t.is_active ? `Tenant ${id} suspended.` : `Tenant ${id} activated.`)) reload(); } } }),
    el("button", { type: "button", id: "migrate-one", text: "Migrate",
      on: { click: async (e) => {
        e.target.disabled = true;
        try {
          const r = await api("POST", `/api/admin/tenants/${enc(id)}/migrate`);
          flash(`Tenant ${id} migrated: ${r.applied} migration(s) applied.`);
          reload();
        } catch (error) { failed(error); e.target.disabled = false; }
      } } }),
    el("button", { type: "button", text: "Check health", on: { click: checkHealth } }));

  // Features
  const chosen = new Set(t.features);
  const featureBoxes = FEATURES.map((f) => {
    const box = el("input", { type: "checkbox", value: f, checked: chosen.has(f), disabled: COMMON.includes(f) });
    return el("label", { class: "check" }, box, ` ${f.replace(/_/g, " ")}`);
  });
  const featureForm = el("form", { on: { submit: async (e) => {
    e.preventDefault();
    const list = [...featureForm.querySelectorAll("input:checked")].map((i) => i.value).filter((f) => !COMMON.includes(f));
    if (await patch(id, { features: list }, "Features saved.")) reload();
  } } }, el("fieldset", {}, el("legend", { text: "Features (products and cash flow are every tenant's)" }), featureBoxes),
  el("button", { type: "submit", id: "save-features", text: "Save features" }));

  // Branding and contact
  const b = t.branding || {};
  const c = t.contact_info || {};
  const inputs = {
    company_name: el("input", { value: b.company_name || "", maxlength: "100" }),
    primary_color: el("input", { value: b.primary_color || "", placeholder: "#2E86AB", maxlength: "7" }),
    secondary_color: el("input", { value: b.secondary_color || "", placeholder: "#A23B72", maxlength: "7" }),
    logo_url: el("input", { value: b.logo_url || "", placeholder: "https://… or /assets/…" }),
    phone: el("input", { value: c.phone || "", type: "tel" }),
    email: el("input", { value: c.email || "", type: "email" }),
    address: el("input", { value: c.address || "" }),
  };
  const pick = (keys) => Object.fromEntries(keys.map((k) => [k, inputs[k].value.trim()]).filter(([, v]) => v));
  const brandingForm = el("form", { on: { submit: async (e) => {
    e.preventDefault();
    const body = { branding: pick(["company_name", "primary_color", "secondary_color", "logo_url"]),
      contact_info: pick(["phone", "email", "address"]) };
    if (await patch(id, body, "Branding and contact details saved.")) reload();
  } } },
  field("Company name", inputs.company_name), field("Primary colour", inputs.primary_color, "#RRGGBB"),
  field("Secondary colour", inputs.secondary_color), field("Logo URL", inputs.logo_url),
  field("Phone", inputs.phone), field("E-mail", inputs.email), field("Address", inputs.address),
  el("button", { type: "submit", id: "save-branding", text: "Save branding" }));

  // Limits
  const l = t.limits || {};
  const limits = {
    rate_limit_per_sec: numberInput(l.rate_limit_per_sec),
    rate_limit_burst: numberInput(l.rate_limit_burst),
    max_concurrent_requests: numberInput(l.max_concurrent_requests),
    storage_quota_bytes: numberInput(l.storage_quota_bytes),
    max_connections: numberInput((t.pool || {}).max_connections, 1),
  };
  const limitsForm = el("form", { on: { submit: async (e) => {
    e.preventDefault();
    const body = {};
    for (const [k, input] of Object.entries(limits)) if (input.value !== "") body[k] = Number(input.value);
    if (!Object.keys(body).length) return flash("Nothing to save: every limit is empty (the service defaults apply).", "error");
    if (await patch(id, body, "Limits saved.")) reload();
  } } },
  field("Requests per second", limits.rate_limit_per_sec, "0: no limit"),
  field("Burst", limits.rate_limit_burst), field("Concurrent requests", limits.max_concurrent_requests, "0: no limit"),
  field("Storage quota (bytes)", limits.storage_quota_bytes, "0: no quota"),
  field("Connections at most", limits.max_connections),
  el("button", { type: "submit", id: "save-limits", text: "Save limits" }));

  // Delete
  const confirmInput = el("input", { id: "delete-confirm", autocomplete: "off", spellcheck: "false" });
  const dropBox = el("input", { type: "checkbox", id: "delete-drop" });
  const deleteForm = el("form", { class: "danger", on: { submit: async (e) => {
    e.preventDefault();
    if (confirmInput.value !== id) return flash(`Type ${id} to confirm.`, "error");
    try {
      await api("DELETE", `/api/admin/tenants/${enc(id)}?drop_database=${dropBox.checked}`);
      flash(`Tenant ${id} deleted${dropBox.checked ? " and its database dropped" : "; its database is kept"}.`);
      location.hash = "#/tenants";
    } catch (error) { failed(error); }
  } } },
  el("p", { text: "Deleting removes the tenant from every replica. Its database is kept unless you ask for it to be dropped." }),
  field(`Type ${id} to confirm`, confirmInput),
  el("label", { class: "check" }, dropBox, " Also drop its database (cannot be undone)"),
  el("button", { type: "submit", class: "bad", id: "delete-tenant", text: "Delete tenant" }));

  const migrations = el("div", {}, el("p", { text: "Loading…" }));
  const usage = el("div", {}, el("p", { text: "Loading…" }));
  const audit = el("div", {}, el("p", { text: "Loading…" }));

  setView(`Tenant ${id}`,
    el("p", { class: "crumbs", dataset: { tenant: id } }, el("a", { href: "#/tenants", text: "← All tenants" })),
    section("Overview", dl([
      ["Status", t.is_active ? badge("active", "good") : badge("suspended", "bad")],
      ["Domain", t.domain], ["Subdomain", t.subdomain], ["Isolation", t.isolation],
      ["Defined in", t.source], ["GST number", t.gst_number], ["Pool", t.pool_open ? "open" : "closed"],
      ["Health", healthBox],
    ]), actions),
    section("Branding", brandingPreview(t), brandingForm),
    section("Features", featureForm),
    section("Limits", limitsForm),
    section("Migrations", migrations),
    section("Usage (last 30 days)", usage),
    section("Recent audit rows", audit),
    section("Delete", deleteForm));
  checkHealth();

  api("GET", `/api/admin/tenants/${enc(id)}/migrations`).then((m) => {
    const pending = m.migrations.filter((x) => x.status !== "applied").length;
    migrations.replaceChildren(
      el("p", { text: `${m.migrations.length - pending} applied, ${pending} pending.` }),
      table(["Migration", "Status"], m.migrations.map((x) => el("tr", {},
        el("td", { text: x.name }), el("td", {}, x.status === "applied" ? badge("applied", "good") : badge(x.status, "warn")))), "Migrations"));
  }, (error) => migrations.replaceChildren(el("p", { class: "error", text: `Not available: ${error.message}` })));

  api("GET", `/api/admin/tenants/${enc(id)}/usage`).then((u) => {
    const tot = u.total || {};
    usage.replaceChildren(dl([
      ["Requests", String(tot.requests ?? 0)], ["Writes", String(tot.writes ?? 0)],
      ["Rows written", String(tot.rows_written ?? 0)], ["Active users", String(tot.active_users ?? 0)],
      ["Storage", fmtBytes(tot.storage_bytes)],
    ]));
  }, (error) => usage.replaceChildren(el("p", { text: `Not available: ${error.message}` })));

  api("GET", `/api/admin/tenants/${enc(id)}/audit?limit=10`).then((a) => {
    audit.replaceChildren(a.items.length === 0 ? el("p", { text: "No audit rows yet." }) :
      table(["When", "Who", "Action", "Entity"], a.items.map((r) => el("tr", {},
        el("td", { text: new Date(r.at).toLocaleString() }),
        el("td", { text: r.actor ? `${r.actor.kind}${r.actor.name ? " " + r.actor.name : ""}` : "—" }),
        el("td", { text: r.action }),
        el("td", { text: `${r.entity}${r.entity_id ? " " + r.entity_id : ""}` }))), "Audit rows"));
  }, (error) => audit.replaceChildren(el("p", { text: `Not available: ${error.message}` })));
}

// ---- provisioning ---------------------------------------------------------------------

function provisionView() {
  const id = el("input", { id: "new-id", required: true, autocomplete: "off", spellcheck: "false", pattern: "[a-z0-9][a-z0-9_\\-]{0,62}" });
  const domain = el("select", { id: "new-domain" }, ["dental", "manufacturing", "default"].map((d) => el("option", { value: d, text: d })));
  const company = el("input", { id: "new-company", maxlength: "100" });
  const storage = el("select", { id: "new-storage" },
    el("option", { value: "sqlite", text: "a SQLite file" }),
    el("option", { value: "postgres", text: "PostgreSQL (give its URL)" }));
  const file = el("input", { id: "new-file", autocomplete: "off", spellcheck: "false", placeholder: "data/<id>.db" });
  const sqliteFields = el("div", {}, field("File", file, "relative to the service's working directory; default data/<id>.db"));
  const url = el("input", { id: "new-url", type: "password", autocomplete: "off", spellcheck: "false", placeholder: "postgres://user:password@host:5432/db" });
  const isolation = el("select", { id: "new-isolation" },
    el("option", { value: "database", text: "its own database" }), el("option", { value: "schema", text: "a schema of that database" }));
  const pgFields = el("div", { hidden: true }, field("Database URL (never shown again)", url), field("Isolation", isolation));
  storage.addEventListener("change", () => {
    pgFields.hidden = storage.value !== "postgres";
    sqliteFields.hidden = storage.value !== "sqlite";
  });
  const owner = el("input", { id: "new-owner", autocomplete: "off", spellcheck: "false" });
  const password = el("input", { id: "new-password", type: "password", autocomplete: "new-password" });
  const seed = el("input", { id: "new-seed", type: "checkbox" });
  const form = el("form", { on: { submit: async (e) => {
    e.preventDefault();
    const tenantId = id.value.trim();
    const body = { id: tenantId, domain: domain.value };
    if (storage.value === "sqlite") body.database_url = `sqlite://${file.value.trim() || `data/${tenantId}.db`}?mode=rwc`;
    else { body.database_url = url.value.trim(); body.isolation = isolation.value; }
    if (company.value.trim()) body.branding = { company_name: company.value.trim() };
    if (owner.value.trim() || password.value) body.owner = { username: owner.value.trim(), password: password.value };
    if (seed.checked) body.seed_demo_data = true;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await api("POST", "/api/admin/tenants", body);
      url.value = ""; password.value = "";
      flash(`Tenant ${tenantId} provisioned.`);
      location.hash = `#/tenant/${enc(tenantId)}`;
    } catch (error) { failed(error); button.disabled = false; }
  } } },
  field("Tenant id", id, "lowercase letters, digits, _ and -; at most 63"),
  field("Domain", domain), field("Company name", company), field("Storage", storage), sqliteFields, pgFields,
  el("fieldset", {}, el("legend", { text: "First owner (optional)" }),
    field("Username", owner), field("Password", password, "at least 8 characters")),
  el("label", { class: "check" }, seed, " Seed demo data"),
  el("button", { type: "submit", id: "provision", text: "Provision" }));
  setView("Provision a tenant", section("New tenant", form));
  id.focus();
}

// ---- migrations ----------------------------------------------------------------------------

const STATE_KIND = { queued: "muted", running: "warn", up_to_date: "good", migrated: "good", failed: "bad" };

function jobPanel(job) {
  const failedIds = job.tenants.filter((t) => t.state === "failed").map((t) => t.tenant_id);
  return el("div", { class: "job", dataset: { job: String(job.id), status: job.status } },
    el("p", {}, el("strong", { text: `Run ${job.id}: ${job.status}` }),
      ` · ${job.done}/${job.total} done · ${job.migrated} migrated · ${job.up_to_date} up to date · ${job.failed} failed`),
    el("progress", { max: String(job.total), value: String(job.done), "aria-label": `Run ${job.id} progress` }),
    failedIds.length && job.status === "finished" ?
      el("button", { type: "button", id: "rerun-failed", text: `Re-run the ${failedIds.length} failed`,
        on: { click: () => startJob({ tenants: failedIds }) } }) : null,
    table(["Tenant", "State", "Applied", "Time", "Error"], job.tenants.map((t) => el("tr", { dataset: { tenant: t.tenant_id } },
      el("td", {}, el("a", { href: `#/tenant/${enc(t.tenant_id)}`, text: t.tenant_id })),
      el("td", {}, badge(t.state.replace(/_/g, " "), STATE_KIND[t.state])),
      el("td", { text: t.state === "migrated" ? `${t.pending.length}` : "" }),
      el("td", { class: "num", text: t.duration_ms === null ? "" : `${t.duration_ms} ms` }),
      el("td", { class: "error", text: t.error || "" }))), `Run ${job.id} tenants`));
}

async function startJob(body) {
  try {
    const job = await api("POST", "/api/admin/migrations", body);
    flash(`Migration run ${job.id} started for ${job.total} tenant(s).`);
    location.hash = `#/migrations/${job.id}`;
  } catch (error) { failed(error); }
}

async function migrationsView(jobId) {
  const concurrency = numberInput(4, 1);
  concurrency.max = "16";
  const start = el("form", { on: { submit: (e) => { e.preventDefault(); startJob({ concurrency: Number(concurrency.value || 4) }); } } },
    el("p", { text: "Checks every tenant and applies what is pending; a failing tenant does not stop the others." }),
    field("Tenants at once", concurrency), el("button", { type: "submit", id: "migrate-all", text: "Migrate all tenants" }));
  const current = el("div", { "aria-live": "polite" });
  const history = el("div");
  const view = setView("Migrations", section("Migrate every tenant", start), section("Progress", current), section("Earlier runs", history));
  const load = async () => {
    let list;
    let shown = null;
    try {
      list = await api("GET", "/api/admin/migrations");
      const id = jobId || (list.jobs[0] && list.jobs[0].id);
      if (id) shown = await api("GET", `/api/admin/migrations/${enc(id)}`);
    } catch (error) { return view === state.view && failed(error); }
    if (view !== state.view) return;
    const jobs = list.jobs;
    current.replaceChildren(shown ? jobPanel(shown) : el("p", { text: "No run yet on this replica." }));
    history.replaceChildren(jobs.length ? el("ul", {}, jobs.map((j) => el("li", {},
      el("a", { href: `#/migrations/${j.id}`, text: `Run ${j.id}` }),
      ` · ${j.status} · ${j.total} tenants · ${j.failed} failed · ${new Date(j.started_at).toLocaleString()}`))) :
      el("p", { text: "None." }));
    if (!shown || shown.status === "finished") stopTimer();
    return shown;
  };
  const first = await load();
  if (first && first.status === "running") every(view, 1000, load);
}

// ---- servers --------------------------------------------------------------------------------

// The share of a server's schema-tenant checkouts served by the tenant's home
// connection (where its statements are prepared), or a dash where none was made.
function homeShare(s) {
  const total = s.home_checkouts + s.away_checkouts;
  return total > 0 ? `${(100 * s.home_checkouts / total).toFixed(1)} % of ${total}` : "–";
}

async function serversView() {
  const body = el("div", {}, el("p", { text: "Loading…" }));
  const view = setView("Servers", body);
  const load = async () => {
    let p;
    try { p = await api("GET", "/api/admin/pools"); } catch (error) { return view === state.view && failed(error); }
    if (view !== state.view) return;
    body.replaceChildren(
      section("Servers", p.servers.length === 0 ? el("p", { text: "No connection made yet." }) :
        table(["Server", "Limit", "Open", "In use", "Idle", "Waiting", "Peak", "Opened", "Timeouts", "Served at home"], p.servers.map((s) => el("tr", {},
          el("td", { text: s.server }), el("td", { class: "num", text: s.limit || "not read yet" }),
          ...[s.open, s.in_use, s.idle, s.waiting, s.peak_open, s.opened, s.timeouts].map((n) => el("td", { class: "num", text: String(n) })),
          el("td", { class: "num", dataset: { home: "" }, text: homeShare(s) }))), "Servers")),
      section("Connection pools", p.connection_pools.length === 0 ? el("p", { text: "None open." }) :
        table(Object.keys(p.connection_pools[0]), p.connection_pools.map((c) => el("tr", {},
          Object.values(c).map((v) => el("td", { text: String(v) })))), "Connection pools")),
      section("Totals", dl([
        ["Tenant handles open", String(p.pools_open)], ["Built since start", String(p.pools_built)],
        ["Connections open", String(p.connections_open)], ["Process-wide cap", p.connections_budget ? String(p.connections_budget) : "none"],
        ["Failures", String(p.pool_failures)], ["Short-circuited", String(p.short_circuited)], ["Budget timeouts", String(p.budget_timeouts)],
      ])));
  };
  await load();
  every(view, 5000, load);
}

// ---- routing --------------------------------------------------------------------------------

function route() {
  if (!state.csrf) return;
  const hash = location.hash || "#/tenants";
  const path = hash.split("?")[0];
  let parts;
  try { parts = path.replace(/^#\/?/, "").split("/").map(decodeURIComponent); } catch (error) { parts = ["tenants"]; }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === (parts[0] === "tenant" ? "tenants" : parts[0])) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("#main").focus({ preventScroll: true });
  if (!state.multiTenant && ["new", "migrations"].includes(parts[0])) {
    return setView("Not available", el("p", { text: "This service runs as one tenant (MULTI_TENANT_ENABLED=false): tenants cannot be provisioned or migrated here." }));
  }
  switch (parts[0]) {
    case "tenant":
      if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(parts[1] || "")) return setView("No such tenant", el("p", { text: "That is not a tenant id." }));
      return tenantView(parts[1]);
    case "new": return provisionView();
    case "migrations": return migrationsView(parts[1]);
    case "servers": return serversView();
    default: return tenantsView(queryOf(hash));
  }
}

async function boot() {
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => {
    // A message shown just before the change (e.g. "provisioned") stays.
    if (!state.flashAt || Date.now() - state.flashAt > 1500) $("#flash").replaceChildren();
    route();
  });
  try {
    const session = await api("GET", "/admin/session");
    if (session.signed_in) started(session); else showSignIn();
  } catch (error) {
    showSignIn();
    failed(error);
  }
}

document.addEventListener("DOMContentLoaded", boot);
