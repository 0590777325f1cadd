// The ledger console: plain JavaScript, no build step, nothing fetched but this server's API.
// The token is kept in sessionStorage (this tab only). Every refusal shows the problem's detail.
"use strict";

const TOKEN_KEY = "ledger-token";
const state = { me: null };

// Page sizes. Every list is read a page at a time, following the API's `next` cursor; the
// console's own address may ask for smaller pages (/console/?limit=20), 1 to 1000 (the API's
// most), for a slow link or a test.
const API_MAX_PAGE = 1000;
const asked = Number.parseInt(new URLSearchParams(location.search).get("limit"), 10);
const CHOSEN_PAGE = asked >= 1 && asked <= API_MAX_PAGE ? asked : null;
const VIEW_PAGE = CHOSEN_PAGE || 200; // rows a view shows at once
const QUEUE_PAGE = CHOSEN_PAGE || 100; // refund requests (each read in full to show approvers)
const DOWNLOAD_PAGE = CHOSEN_PAGE || API_MAX_PAGE; // events a download reads per request
// A download reads at most this many pages (100,000 events at the API's page size), then
// stops and says so: a longer log is for `ledger export --format events`.
const MAX_DOWNLOAD_PAGES = 100;
// A refund request may name a deposit's payment reference: the console reads at most this many
// pages of a customer's history to offer them.
const MAX_DEPOSIT_PAGES = 10;
// A case holds at most 200 notes, 50 sendings of photos and its dozen lifecycle steps: the API's
// most steps a view gives (1000) shows them all.
const CASE_STEPS = 1000;

// -- small helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Puts children in place of a node's, leaving out the absent (null, undefined, false): a
// control that has nothing to offer (a pager at a list's only page) is no child, not "null".
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter(
    (c) => c !== null && c !== undefined && c !== false));
}

// Digits of each currency's minor unit where they are not 2: the ledger's own table
// (ledger/money.py, MINOR_UNIT_DIGITS; a test keeps the two the same). Not the browser's
// currency data, which disagrees for some (HUF, IDR, IQD, ...): amounts would be shown and
// taken at a wrong scale.
const MINOR_DIGITS = Object.freeze({
  BHD: 3, BIF: 0, CLP: 0, DJF: 0, GNF: 0, IQD: 3, ISK: 0, JOD: 3, JPY: 0, KMF: 0, KRW: 0,
  KWD: 3, LYD: 3, OMR: 3, PYG: 0, RWF: 0, TND: 3, UGX: 0, VND: 0, VUV: 0, XAF: 0, XOF: 0,
  XPF: 0,
});

function digits(currency) {
  return MINOR_DIGITS[currency] ?? 2;
}

// Minor units shown in major units with the currency: USD 12.34, JPY 1,200, BHD 1.234. Integer
// digits, never a division in floating point.
function money(minor, currency) {
  const d = digits(currency);
  const units = BigInt(minor);
  const negative = units < 0n;
  const text = (negative ? -units : units).toString().padStart(d + 1, "0");
  const whole = text.slice(0, text.length - d).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${currency} ${negative ? "-" : ""}${whole}${d ? "." + text.slice(-d) : ""}`;
}

// Major units typed by a person, as minor units (blank: null): digits, a point and at most the
// currency's decimals, read as text (no rounding: 5.555 USD is refused, never 5.56). A
// refusal is shown as the server's are (a Problem), in words.
function toMinor(text, currency) {
  const trimmed = String(text || "").replace(/,/g, "").trim();
  if (!trimmed) return null;
  const d = digits(currency);
  const found = /^([0-9]+)(?:\.([0-9]*))?$/.exec(trimmed);
  if (!found) throw new Problem(`${text} is not an amount: write it like 12.50`);
  const fraction = found[2] || "";
  if (fraction.length > d) {
    throw new Problem(d ? `${text} has more than the ${d} decimals ${currency} has`
      : `${text}: ${currency} has no decimals`);
  }
  const minor = BigInt(found[1] + fraction.padEnd(d, "0"));
  if (minor > BigInt(Number.MAX_SAFE_INTEGER)) throw new Problem(`${text} is too large an amount`);
  return Number(minor);
}

// A page's query: its size and, after the first, the previous page's `next`.
function paged(limit, after) {
  return `limit=${limit}` + (after ? `&after=${encodeURIComponent(after)}` : "");
}

// Buttons that move through a list: back to its first page, and on to the next one (none at
// the end, where the API's `next` is null).
function pager(label, after, next, go) {
  const buttons = [];
  if (after) {
    buttons.push(h("button", { type: "button", class: "secondary", onclick: () => go(null) },
      "First page"));
  }
  if (next) buttons.push(h("button", { type: "button", onclick: () => go(next) }, "Next page"));
  if (buttons.length === 0) return null;
  return h("nav", { class: "pager", "aria-label": `${label} pages` }, buttons);
}

// A time as the ledger gives it (RFC 3339, UTC), said so.
function when(text) {
  return text ? `${String(text).replace("T", " ").slice(0, 19)} UTC` : "";
}

function today(offsetDays = 0) {
  const d = new Date(Date.now() + offsetDays * 86400000);
  return d.toISOString().slice(0, 10);
}

// The person an actor names: "finance:ann" -> ann; a shared role token's person is its role.
function personOf(actor, data) {
  if (data && data.person) return data.person;
  if (!actor) return "";
  const [role, rest] = actor.split(":");
  return /^[0-9a-f]{8}$/.test(rest || "") ? role : rest || role;
}

function say(message) {
  document.getElementById("problem").textContent = "";
  document.getElementById("notice").textContent = message || "";
}

// Said to a screen reader in a few words when a view or a page of a list has loaded (the view
// itself is not a live region: its whole text would be read out at every change).
function loaded(count, what) {
  document.getElementById("loaded").textContent = `Loaded ${count} ${what}.`;
}

function complain(message) {
  document.getElementById("notice").textContent = "";
  document.getElementById("problem").textContent = message;
}

// A refusal to show as it is said (the server's, or the console's own: status 0).
class Problem extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

// A validation error's message, with the field it is about unless it names it already
// ("amount must be more than 0", "items.0.description: must be text that is not blank").
function fieldMessage(error) {
  const name = String(error.field || "").split(".").pop();
  return name && !error.message.startsWith(name) ? `${error.field}: ${error.message}`
    : error.message;
}

// What a problem says, for a person: a validation error's own messages (its detail only says
// "the request is not valid"), and a 503 as what it means to them, its detail after it.
function problemWords(status, problem, fallback) {
  const messages = (problem.errors || []).filter((e) => e.message).map(fieldMessage);
  const detail = messages.length ? messages.join("; ")
    : problem.detail || problem.title || fallback;
  return status === 503
    ? `The ledger is busy or catching up; try again in a moment. (${detail})` : detail;
}

// A write sends its Idempotency-Key (see writes()).
async function api(method, path, body, key) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  const options = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (key) headers["Idempotency-Key"] = key;
  const reply = await fetch(path, options);
  const type = reply.headers.get("Content-Type") || "";
  if (!reply.ok) {
    const problem = type.includes("json") ? await reply.json() : {};
    // The token no longer holds (a wrong one, or revoked or rotated since): forget it and what
    // it showed, whichever call found out.
    if (reply.status === 401) signOut();
    throw new Problem(problemWords(reply.status, problem, `${reply.status} ${reply.statusText}`),
      reply.status);
  }
  return type.includes("json") ? reply.json() : reply.text();
}

// An Idempotency-Key: 128 random bits in hex (crypto.randomUUID exists only in a secure
// context, which a console served over plain http to another host is not).
function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0")).join("");
}

// Makes a form (or a lone button) write safely. Its Idempotency-Key is made once per fill: a
// double click, or sending again after an answer that never came (a 503, a dropped link),
// is done once. A new key once the person changes the form (the same key with another body is
// 422 idempotency_key_reused), once the write is done, and once the ledger refused it (nothing
// was done: a later try is decided anew). Its button is off while the request is in flight.
function writes(button, write, form) {
  let key = newKey();
  const send = () => {
    if (button.disabled) return;
    button.disabled = true;
    attempt(async () => {
      try {
        await write(key);
        key = newKey();
      } catch (error) {
        if (error instanceof Problem && error.status >= 400 && error.status < 500) key = newKey();
        throw error;
      } finally {
        button.disabled = false;
      }
    });
  };
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    for (const type of ["input", "change"]) form.addEventListener(type, () => { key = newKey(); });
    return form;
  }
  button.addEventListener("click", send);
  return button;
}

async function attempt(action) {
  try {
    await action();
  } catch (error) {
    complain(error instanceof Problem ? error.message : `Something went wrong: ${error.message}`);
  }
}

// -- signing in ------------------------------------------------------------------------------

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  state.me = await api("GET", "/v1/me");
  document.getElementById("sign-in").hidden = true;
  document.getElementById("who").hidden = false;
  document.getElementById("who-text").textContent =
    `Signed in as ${state.me.person} (${state.me.role})`;
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const item of nav.querySelectorAll("li")) {
    item.hidden = !item.dataset.roles.split(" ").includes(state.me.role);
  }
  document.getElementById("view").hidden = false;
  const links = [...nav.querySelectorAll("li:not([hidden]) a")];
  const first = links[0];
  // A reload, a bookmark or a colleague's link: its section (#customers of
  // #customers/ann/<case>) among this role's, compared as text (never put into a selector),
  // then the whole address.
  const section = location.hash.split(/[/?]/)[0];
  const wanted = section && links.find((link) => link.getAttribute("href") === section);
  if (wanted) route();
  else if (first) location.hash = first.getAttribute("href");
  else document.getElementById("view").replaceChildren(
    h("p", { text: "There is nothing for this role in the console." }));
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.me = null;
  say("");
  document.getElementById("sign-in").hidden = false;
  document.getElementById("who").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("view").hidden = true;
  document.getElementById("view").replaceChildren();
}

// -- routing ---------------------------------------------------------------------------------

// A place's filters, after "?" in its address (#journal?account=customer%3Aann, or
// #journal/<cursor>?...): the API's own query parameters, so a reload or a link shows the same
// list. Only the names a view offers are read.
function placeFilters(fields) {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  const filters = new URLSearchParams();
  for (const { name } of fields) {
    const value = (query.get(name) || "").trim();
    if (value) filters.set(name, value);
  }
  return filters;
}

// A place's address: its section, a page's cursor, its filters.
function placeAddress(section, cursor, filters) {
  const query = filters && filters.toString();
  return section + (cursor ? `/${encodeURIComponent(cursor)}` : "") + (query ? `?${query}` : "");
}

function go(address) {
  if (location.hash === address) route();
  else location.hash = address;
}

const VIEWS = {
  "#customers": customersView,
  "#cases": casesView,
  "#refunds": refundsView,
  "#reconciliation": reconciliationView,
  "#journal": journalView,
  "#events": eventsView,
  "#verify": verifyView,
  "#exports": exportsView,
};

function route() {
  if (!state.me) return;
  const [name, ...args] = location.hash.split("?")[0].split("/");
  const view = VIEWS[name];
  if (!view) return;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  say("");
  attempt(async () => {
    await view(...args.map((a) => (a ? decodeURIComponent(a) : null)));
    // A keyboard's place was on something the view replaced: give it the view's title.
    const title = document.getElementById("view-title");
    if (title && (!document.activeElement || document.activeElement === document.body)) title.focus();
  });
}

function show(title, ...children) {
  const view = document.getElementById("view");
  const heading = h("h2", { id: "view-title", tabindex: "-1", text: title });
  fill(view, heading, children);
  view.setAttribute("aria-labelledby", "view-title");
}

// -- customers (customer service; finance and auditors read) ---------------------------------

async function customersView(username, caseId) {
  const input = h("input", { id: "customer", name: "customer", required: true,
                             autocomplete: "off", value: username || "" });
  const form = h("form", { class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    const wanted = `#customers/${encodeURIComponent(input.value.trim().toLowerCase())}`;
    if (location.hash === wanted) route();
    else location.hash = wanted;
  } }, h("label", { for: "customer", text: "Customer" }), input,
     h("button", { type: "submit", text: "Find" }));
  const browsing = placeFilters(BROWSE_FILTERS);
  const prefix = h("input", { id: "name-prefix", required: true, autocomplete: "off",
                              value: browsing.get("prefix") });
  const browse = h("form", { class: "inline", role: "search", "aria-label": "Browse customers",
                             onsubmit: (event) => {
    event.preventDefault();
    go(placeAddress("#customers", null, new URLSearchParams({ prefix: prefix.value.trim() })));
  } }, h("label", { for: "name-prefix", text: "Name begins with" }), prefix,
     h("button", { type: "submit", text: "Browse" }));
  const area = h("div", { id: "customer-area" });
  show("Customers", form, browse, area);
  if (username) await showCustomer(username, area);
  else if (browsing.has("prefix")) await showCustomerList(browsing, area);
  if (username && caseId) await openCase(caseId, area);
}

// Customers whose user name begins with a prefix (any case), in user-name order, a page at a
// time (#customers?prefix=an; the API's next is the last name shown).
const BROWSE_FILTERS = [{ name: "prefix" }, { name: "after" }];

async function showCustomerList(browsing, area) {
  const prefix = browsing.get("prefix");
  const after = browsing.get("after");
  const page = await api("GET", `/v1/accounts?prefix=${encodeURIComponent(prefix)}&`
    + paged(VIEW_PAGE, after));
  const address = (cursor) => placeAddress("#customers", null,
    new URLSearchParams(cursor ? { prefix, after: cursor } : { prefix }));
  fill(area,
    h("h3", { id: "browse-title", text: `Customers whose names begin with ${prefix}` }),
    page.items.length === 0 ? h("p", { text: `No customer's name begins with ${prefix}.` })
      : h("table", { "aria-labelledby": "browse-title" },
        h("thead", {}, h("tr", {}, h("th", { text: "Customer" }), h("th", { text: "Currency" }),
          ["Posted", "Held", "Available"].map((t) => h("th", { class: "money", text: t })))),
        h("tbody", {}, page.items.map((a) => h("tr", {},
          h("td", {}, h("a", { href: `#customers/${encodeURIComponent(a.username)}`,
                               text: a.username })),
          h("td", { text: a.currency }),
          [a.posted, a.held, a.available].map((v) => h("td", { class: "money",
                                                               text: money(v, a.currency) })))))),
    pager("Customers", after, page.next, (cursor) => go(address(cursor))));
  const [first, last] = [page.items[0], page.items[page.items.length - 1]];
  document.getElementById("loaded").textContent = `Loaded ${page.items.length} `
    + (first === last ? "customer whose name begins" : "customers whose names begin")
    + ` with ${prefix}` + (!first ? "" : first === last ? `: ${first.username}`
      : `: ${first.username} to ${last.username}`) + ".";
}

async function showCustomer(username, area) {
  const account = await api("GET", `/v1/accounts/${encodeURIComponent(username)}`);
  const c = account.currency;
  const amount = (id, label, value) => h("div", {},
    h("label", { for: id, text: label }), h("output", { id, text: money(value, c) }));
  const [refundForm, offer] = state.me.role === "cs"
    ? refundRequestForm(account, await depositReferences(username)) : [null, null];
  const orders = h("section", { id: "orders", "aria-labelledby": "orders-title" });
  const requests = h("section", { id: "refund-requests", "aria-labelledby": "requests-title" });
  const history = h("section", { id: "history", "aria-labelledby": "history-title" });
  await showOrders(username, c, null, orders, area, offer);
  await showRefundRequests(username, null, requests, area);
  await showHistory(username, c, null, history);
  fill(area,
    h("h3", { text: `${account.username} (${c})` }),
    h("div", { class: "amounts", "aria-label": "Balance" },
      amount("posted", "Posted", account.posted), amount("held", "Held", account.held),
      amount("available", "Available", account.available),
      amount("refundable", "Refundable", account.refundable)),
    orders, refundForm, requests, history, h("div", { id: "case-area" }));
}

// The account's orders, a page at a time; the refund request form is offered the page's.
async function showOrders(username, c, after, holder, area, offer) {
  const page = await api("GET",
    `/v1/accounts/${encodeURIComponent(username)}/refundable?${paged(VIEW_PAGE, after)}`);
  const orders = page.orders;
  fill(holder,
    h("h3", { id: "orders-title", text: "Orders" }),
    orders.length === 0 ? h("p", { text: "No orders." }) : h("table", { "aria-label": "Orders",
                                                                        tabindex: "-1" },
      h("thead", {}, h("tr", {}, h("th", { text: "Order" }), h("th", { class: "money", text: "Paid" }),
        h("th", { class: "money", text: "Credited back" }),
        h("th", { class: "money", text: "Refundable" }), h("th", { text: "Cases" }),
        h("th", { text: "Actions" }))),
      h("tbody", {}, orders.map((o) => h("tr", {},
        h("td", { text: o.order_no }), h("td", { class: "money", text: money(o.paid, c) }),
        h("td", { class: "money", text: money(o.credited_back, c) }),
        h("td", { class: "money", text: money(o.refundable, c) }),
        h("td", {}, o.case_details.map((k) => h("div", {},
          h("a", { href: caseAddress(username, k.id),
                   onclick: (e) => { e.preventDefault(); attempt(() => openCase(k.id, area)); } },
            `${k.kind.replace(/_/g, " ")} case: ${k.state.replace(/_/g, " ")}`)))),
        h("td", {}, state.me.role === "cs" ? h("button", { type: "button",
          "aria-label": `Open a return case for ${o.order_no}`,
          onclick: () => caseForm(username, o.order_no, area) }, "Open return case") : null))))),
    pager("Orders", after, page.next, (cursor) => attempt(async () => {
      await showOrders(username, c, cursor, holder, area, offer);
      holder.querySelector("table").focus();
      loaded(holder.querySelectorAll("tbody tr").length, "orders");
    })));
  if (offer) offer(orders);
}

// The payment references of the account's deposits, which a refund request may name (a
// customer who only deposited has no order): from at most MAX_DEPOSIT_PAGES pages of history.
async function depositReferences(username) {
  const references = [];
  let after = null;
  for (let pages = 0; pages < MAX_DEPOSIT_PAGES; pages += 1) {
    const page = await api("GET",
      `/v1/accounts/${encodeURIComponent(username)}/history?${paged(DOWNLOAD_PAGE, after)}`);
    for (const item of page.items) {
      if (item.type === "deposit_received" && item.data.reference) {
        references.push(item.data.reference);
      }
    }
    after = page.next;
    if (!after) break;
  }
  return references;
}

// Approvals: the steps that name an approving person (a first or a final approval).
function approversOf(request) {
  return request.steps.filter((s) => s.data
    && ("person" in s.data || (s.status === "approved" && "note" in s.data)))
    .map((s) => personOf(s.actor, s.data));
}

// The customer's open refund requests (requested or approved: money held), a page at a time;
// customer service may cancel one for the customer.
async function showRefundRequests(username, after, holder, area) {
  const page = await api("GET", `/v1/refund-requests?status=open&username=`
    + `${encodeURIComponent(username)}&${paged(QUEUE_PAGE, after)}`);
  const details = await Promise.all(page.items.map((r) => api("GET", `/v1/refund-requests/${r.id}`)));
  const rows = details.map((r) => {
    const what = `${money(r.amount, r.currency)} for ${r.order_no}`;
    const form = h("div", {});
    return h("tr", { "data-id": r.id, "aria-label": `Refund request of ${what}` },
      h("td", { text: r.order_no }), h("td", { class: "money", text: money(r.amount, r.currency) }),
      h("td", { text: r.reason }), h("td", { text: r.status }),
      h("td", { text: approversOf(r).join(", ") || "none" }),
      h("td", { text: when(r.requested_at) }),
      h("td", {}, state.me.role === "cs" ? h("button", { type: "button",
        "aria-label": `Cancel refund request of ${what}`,
        onclick: () => cancelRequestForm(r, form, area) }, "Cancel refund request") : null, form));
  });
  fill(holder,
    h("h3", { id: "requests-title", tabindex: "-1", text: "Open refund requests" }),
    rows.length === 0 ? h("p", { text: "No open refund requests." }) : h("table", {
      "aria-label": "Open refund requests", tabindex: "-1" },
      h("thead", {}, h("tr", {}, ["Order", "Amount", "Reason", "Status", "Approved by", "Requested",
        "Actions"].map((t) => h("th", { class: t === "Amount" ? "money" : null, text: t })))),
      h("tbody", {}, rows)),
    pager("Open refund requests", after, page.next, (cursor) => attempt(async () => {
      await showRefundRequests(username, cursor, holder, area);
      holder.querySelector("table").focus();
      loaded(holder.querySelectorAll("tbody tr").length, "refund requests");
    })));
}

function cancelRequestForm(request, holder, area) {
  const id = `cancel-${request.id}`;
  const input = h("input", { id, required: true });
  const submit = h("button", { type: "submit", text: "Confirm cancellation" });
  holder.replaceChildren(writes(submit, async (key) => {
    await api("POST", `/v1/refund-requests/${request.id}/cancel`, { reason: input.value }, key);
    await showCustomer(request.username, area);
    say(`Cancelled the refund request of ${money(request.amount, request.currency)} for `
      + `${request.username}.`);
    document.getElementById("requests-title").focus();
  }, h("form", { class: "inline", "aria-label": "Cancel refund request" },
    h("label", { for: id, text: "Reason" }), input, submit)));
  input.focus();
}

// The account's history, oldest first, a page at a time.
async function showHistory(username, c, after, holder) {
  const page = await api("GET",
    `/v1/accounts/${encodeURIComponent(username)}/history?${paged(VIEW_PAGE, after)}`);
  fill(holder,
    h("h3", { id: "history-title", text: "History" }),
    h("table", { "aria-label": "History", tabindex: "-1" },
      h("thead", {}, h("tr", {}, h("th", { text: "Position" }), h("th", { text: "When" }),
        h("th", { text: "What" }), h("th", { class: "money", text: "Amount" }),
        h("th", { class: "money", text: "Available after" }), h("th", { text: "Who" }))),
      // The amount as the event moved the posted balance; a hold and its release move only
      // the available one (a hold down, a release up): that change, never the unsigned amount.
      h("tbody", {}, page.items.map((item) => h("tr", {},
        h("td", { text: item.position }),
        h("td", { text: when(item.at) }), h("td", { text: item.type.replace(/_/g, " ") }),
        h("td", { class: "money", text: money(item.signed_amount || item.available_change, c) }),
        h("td", { class: "money", text: money(item.available_after, c) }),
        h("td", { text: item.actor }))))),
    pager("History", after, page.next,
      (cursor) => attempt(async () => {
        await showHistory(username, c, cursor, holder);
        holder.querySelector("table").focus();
      })));
  loaded(page.items.length, "history entries");
}

// A refund request names one of the account's orders (those of the page the Orders table
// shows) or one of its deposits' payment references.
function refundRequestForm(account, deposits) {
  const c = account.currency;
  const orders = h("optgroup", { label: "Orders" });
  const order = h("select", { id: "refund-order" }, orders,
    deposits.length === 0 ? null : h("optgroup", { label: "Deposits" },
      deposits.map((d) => h("option", { value: d, text: `Deposit ${d}` }))));
  const amount = h("input", { id: "refund-amount", inputmode: "decimal", required: true });
  const reason = h("input", { id: "refund-reason" });
  const submit = h("button", { type: "submit", text: "Request refund" });
  const form = writes(submit, async (key) => {
    const minor = toMinor(amount.value, c);
    await api("POST", `/v1/accounts/${encodeURIComponent(account.username)}/refund-requests`,
      { order_no: order.value, amount: minor, reason: reason.value }, key);
    await showCustomer(account.username, document.getElementById("customer-area"));
    say(`Requested a refund of ${money(minor, c)} for ${account.username}.`);
  }, h("form", { class: "inline" }, h("label", { for: "refund-order", text: "Order" }), order,
    h("label", { for: "refund-amount", text: `Amount (${c})` }), amount,
    h("label", { for: "refund-reason", text: "Reason" }), reason, submit));
  const offer = (page) => {
    orders.replaceChildren(...page.map((o) => h("option", { value: o.order_no,
                                                             text: `Order ${o.order_no}` })));
    orders.hidden = page.length === 0;
    // Another order chosen is another request: a new key (writes()).
    order.dispatchEvent(new Event("change", { bubbles: true }));
  };
  return [h("section", { "aria-labelledby": "refund-title" },
    h("h3", { id: "refund-title", text: "Balance refund request" }), form), offer];
}

// -- return cases ----------------------------------------------------------------------------

// A case's own address: the customer's page with the case open (a link, a bookmark, a reload).
function caseAddress(username, caseId) {
  return `#customers/${encodeURIComponent(username)}/${encodeURIComponent(caseId)}`;
}

function caseForm(username, orderNo, area) {
  const target = document.getElementById("case-area");
  const field = (id, label, input) => [h("label", { for: id, text: label }), input];
  const kind = h("select", { id: "case-kind" }, ["defective", "damaged", "delivery_error",
    "quality_problem"].map((k) => h("option", { value: k, text: k.replace(/_/g, " ") })));
  const shipped = h("input", { id: "case-shipped", type: "date", value: today(-10) });
  const item = h("input", { id: "case-item", required: true });
  const quantity = h("input", { id: "case-quantity", type: "number", min: "1", value: "1" });
  const goods = h("input", { id: "case-goods-photo" });
  const box = h("input", { id: "case-package-photo" });
  const qa = h("input", { id: "case-qa", type: "checkbox", checked: true });
  const note = h("input", { id: "case-note" });
  const submit = h("button", { type: "submit", text: "Open case" });
  target.replaceChildren(h("section", { class: "case", "aria-labelledby": "new-case" },
    h("h3", { id: "new-case", text: `New return case for ${orderNo}` }),
    writes(submit, async (key) => {
      const opened = await api("POST", "/v1/return-cases", {
        username, order_no: orderNo, kind: kind.value, shipped_on: shipped.value,
        items: [{ description: item.value, quantity: Number(quantity.value) }],
        evidence: { goods_photos: goods.value ? [goods.value] : [],
                    package_photos: box.value ? [box.value] : [] },
        conditions: { replaced_or_modified: false, parts_missing: false, opened_media: false,
                      has_quality_assurance: qa.checked },
        note: note.value,
      }, key);
      say("The case is open.");
      await showCustomer(username, area);
      await openCase(opened.id, area);
    }, h("form", { class: "inline" },
      field("case-kind", "Kind", kind), field("case-shipped", "Shipped on", shipped),
      field("case-item", "Item", item), field("case-quantity", "Quantity", quantity),
      field("case-goods-photo", "Goods photo", goods),
      field("case-package-photo", "Package photo", box),
      field("case-qa", "Has quality assurance", qa), field("case-note", "Note", note), submit))));
  item.focus();
}

// The steps of API.md (and api/README's evidence), by action: the button's name and the fields
// the step asks for.
const STEPS = {
  "supplier-review": { name: "Supplier review", fields: [["note", "Note", "text", ""]] },
  accept: { name: "Accept", fields: [["return_by", "Return by", "date", () => today(14)],
                                     ["return_address", "Return address", "text", ""],
                                     ["instructions", "Instructions", "text", ""]] },
  reject: { name: "Reject", fields: [["reason", "Reason", "text", ""]] },
  "ship-back": { name: "Ship back", fields: [["tracking", "Tracking", "text", ""]] },
  receive: { name: "Receive", fields: [["postmark_date", "Postmark date", "date", () => today()],
                                       ["goods", "Goods came back", "checkbox", true],
                                       ["original_packaging", "In original packaging", "checkbox", true],
                                       ["acceptance_copy", "With the acceptance copy", "checkbox", true]] },
  expire: { name: "Expire", fields: [["note", "Note", "text", ""]] },
  forward: { name: "Forward", fields: [["note", "Note", "text", ""]] },
  resolve: { name: "Resolve", fields: [["outcome", "Outcome", "select", ["refund", "exchange", "repair"]],
                                       ["refund_amount", "Refund amount", "money", ""],
                                       ["freight_amount", "Freight", "money", "0"],
                                       ["freight_waiver_reason", "Waive freight because", "text", ""],
                                       ["tracking", "Outbound tracking", "text", ""]] },
  close: { name: "Close", fields: [["note", "Note", "text", ""]] },
  cancel: { name: "Cancel", fields: [["reason", "Reason", "text", ""]] },
  evidence: { name: "Add photos", fields: [["goods_photos", "Goods photo", "photo", ""],
                                           ["package_photos", "Package photo", "photo", ""]] },
};

// Why a case is overdue (api/README: a deadline passed, never mere slowness), in words.
const OVERDUE_WORDS = {
  past_return_by: "the last postmark date has passed and nothing was posted back",
  unresolved_after_receipt: "the goods came back over 60 days ago and the case is not resolved",
};

function overdueWords(found) {
  return found.overdue_reasons.map((r) => OVERDUE_WORDS[r] || r.replace(/_/g, " ")).join("; ");
}

// A step as a line: when, what, who, and what it said (a note, a reason, or a refusal's words
// rather than its code) and its tracking number.
function stepLine(s) {
  const d = s.data || {};
  const said = [d.note, d.text, d.words || d.reason].filter(Boolean);
  return `${when(s.at)} ${s.step.replace(/_/g, " ")} by ${s.actor}`
    + (said.length ? `: ${said.join(" · ")}` : "")
    + (d.tracking ? ` · tracking ${d.tracking}` : "");
}

async function openCase(caseId, area) {
  const found = await api("GET",
    `/v1/return-cases/${encodeURIComponent(caseId)}?steps_limit=${CASE_STEPS}`);
  if (location.hash.startsWith("#customers/")) {
    history.replaceState(null, "", caseAddress(found.username, found.id));
  }
  const target = document.getElementById("case-area") || area;
  const c = found.currency;
  const stepForm = h("div", { id: "step-form" });
  const buttons = found.allowed_actions.filter((a) => STEPS[a]).map((action) =>
    h("button", { type: "button", onclick: () => showStepForm(found, action, stepForm, area) },
      STEPS[action].name));
  const noteText = h("textarea", { id: "case-note-text", rows: "2", cols: "50" });
  const canNote = found.allowed_actions.includes("notes");
  const refused = found.steps.find((s) => s.step === "refused");
  const submit = h("button", { type: "submit", text: "Add note" });
  target.replaceChildren(h("section", { class: "case", "aria-labelledby": "case-title" },
    h("h3", { id: "case-title", tabindex: "-1",
              text: `Case for ${found.order_no}: ${found.state.replace(/_/g, " ")}` }),
    h("p", { class: "muted" }, `${found.kind.replace(/_/g, " ")} · opened ${found.opened_on}`
      + ` · shipped ${found.shipped_on}`
      + ` · ${found.days_open} ${found.days_open === 1 ? "day" : "days"} open`
      + (found.return_by ? ` · return by ${found.return_by}` : "")
      + (found.refund_amount ? ` · refunded ${money(found.refund_amount, c)}` : "")),
    found.overdue ? h("p", { class: "bad", text: `Overdue: ${overdueWords(found)}.` }) : null,
    found.refusal_reason ? h("p", { class: "bad", text: "Refused: "
      + ((refused && refused.data.words) || found.refusal_reason.replace(/_/g, " ")) }) : null,
    state.me.role === "cs" ? h("div", { role: "group", "aria-label": "Steps" }, buttons) : null,
    stepForm,
    h("h4", { text: "Steps" }),
    h("ol", {}, found.steps.map((s) => h("li", { text: stepLine(s) }))),
    state.me.role === "cs" && canNote ? writes(submit, async (key) => {
      await api("POST", `/v1/return-cases/${found.id}/notes`, { text: noteText.value }, key);
      say("Note added.");
      await openCase(found.id, area);
    }, h("form", { class: "inline" }, h("label", { for: "case-note-text", text: "Note text" }),
      noteText, submit)) : null));
  document.getElementById("case-title").focus();
}

function showStepForm(found, action, holder, area) {
  const step = STEPS[action];
  const inputs = {};
  const fields = step.fields.map(([name, label, kind, initial]) => {
    const id = `step-${name}`;
    const value = typeof initial === "function" ? initial() : initial;
    let input;
    if (kind === "select") {
      input = h("select", { id }, value.map((v) => h("option", { value: v, text: v })));
    } else if (kind === "checkbox") {
      input = h("input", { id, type: "checkbox", checked: value });
    } else {
      input = h("input", { id, type: kind === "date" ? "date" : "text", value });
    }
    inputs[name] = [kind, input];
    return [h("label", { for: id, text: kind === "money" ? `${label} (${found.currency})` : label }),
            input];
  });
  const submit = h("button", { type: "submit", text: `Confirm ${step.name.toLowerCase()}` });
  holder.replaceChildren(writes(submit, async (key) => {
    const body = {};
    for (const [name, [kind, input]] of Object.entries(inputs)) {
      if (kind === "checkbox") body[name] = input.checked;
      else if (kind === "money") {
        const minor = toMinor(input.value, found.currency);
        if (minor !== null) body[name] = minor;
      } else if (kind === "photo") {
        if (input.value !== "") body[name] = [input.value];
      } else if (input.value !== "") body[name] = input.value;
    }
    if (action === "resolve" && body.outcome !== "refund") delete body.refund_amount;
    await api("POST", `/v1/return-cases/${found.id}/${action}`, body, key);
    say(`${step.name}: done.`);
    await showCustomer(found.username, area);
    await openCase(found.id, area);
  }, h("form", { class: "inline", "aria-label": step.name }, fields, submit)));
  const first = holder.querySelector("input, select");
  if (first) first.focus();
}

// -- customer service: the return case work queue -------------------------------------------

// Every case still in progress (opened to with_supplier), or only those past a deadline.
const CASE_QUEUES = { open: "state=open", overdue: "state=open&overdue=true" };

async function casesView(queue, after) {
  const chosen = CASE_QUEUES[queue] ? queue : "open";
  const filter = h("select", { id: "case-queue", onchange: () => {
    location.hash = `#cases/${filter.value}`;
  } }, [["open", "Open"], ["overdue", "Overdue"]].map(([value, text]) =>
    h("option", { value, text, selected: value === chosen })));
  const page = await api("GET",
    `/v1/return-cases?${CASE_QUEUES[chosen]}&${paged(VIEW_PAGE, after)}`);
  show("Return cases",
    h("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "case-queue", text: "Queue" }), filter),
    page.items.length === 0 ? h("p", { text: "No return cases." }) : h("table", {
      "aria-label": `Return cases: ${chosen}` },
      h("thead", {}, h("tr", {}, ["Order", "Customer", "Kind", "State", "Opened", "Days open",
        "Overdue"].map((t) => h("th", { text: t })))),
      h("tbody", {}, page.items.map((k) => h("tr", { "data-id": k.id },
        h("td", {}, h("a", { href: caseAddress(k.username, k.id),
                             "aria-label": `Case for ${k.order_no} of ${k.username}`,
                             text: k.order_no })),
        h("td", { text: k.username }), h("td", { text: k.kind.replace(/_/g, " ") }),
        h("td", { text: k.state.replace(/_/g, " ") }), h("td", { text: k.opened_on }),
        h("td", { text: k.days_open }),
        h("td", { class: k.overdue ? "bad" : null, text: k.overdue ? overdueWords(k) : "no" }))))),
    pager("Return cases", after, page.next, (cursor) => {
      location.hash = `#cases/${chosen}` + (cursor ? `/${encodeURIComponent(cursor)}` : "");
    }));
  loaded(page.items.length, "return cases");
}

// -- finance: the refund queue ---------------------------------------------------------------

// What the queue's totals are, by the status shown.
const TOTAL_WORDS = {
  open: "Waiting (requested or approved)", requested: "Waiting for approval",
  approved: "Approved, waiting to be paid", paid: "Paid", rejected: "Rejected",
  cancelled: "Cancelled",
};

// A request's age: whole days since it was requested, on the shop's clock (the API's age_days).
function ageWords(days) {
  if (!Number.isInteger(days)) return "";
  return days === 0 ? "today" : days === 1 ? "1 day" : `${days} days`;
}

// The API's totals of the queue, per currency over every page the status keeps (summed by the
// ledger in integer minor units; the page shown may hold only some of them), in words.
function totalWords(total) {
  return `${money(total.amount, total.currency)} in ${total.count} `
    + `${total.count === 1 ? "request" : "requests"}, the oldest requested `
    + when(total.oldest_requested_at);
}

function queueTotals(chosen, totals) {
  return h("section", { "aria-labelledby": "totals-title" },
    h("h3", { id: "totals-title", text: `${TOTAL_WORDS[chosen] || chosen}, by currency` }),
    totals.length === 0 ? h("p", { text: "None." }) : h("ul", { "aria-label": "Totals by currency" },
      totals.map((t) => h("li", { text: totalWords(t) }))));
}

async function refundsView(status, after) {
  const chosen = status || "open";
  const filter = h("select", { id: "refund-status", onchange: () => {
    location.hash = `#refunds/${filter.value}`;
  } }, ["open", "requested", "approved", "paid", "rejected", "cancelled"].map((s) =>
    h("option", { value: s, text: s, selected: s === chosen })));
  const page = await api("GET",
    `/v1/refund-requests?status=${encodeURIComponent(chosen)}&${paged(QUEUE_PAGE, after)}`);
  const details = await Promise.all(page.items.map((r) => api("GET", `/v1/refund-requests/${r.id}`)));
  const ages = new Map(page.items.map((r) => [r.id, r.age_days]));
  const totals = page.totals || [];
  const me = state.me;
  const rows = details.map((r) => {
    const approvers = approversOf(r);
    const actions = h("td", {});
    const form = h("div", {});
    if (me.role === "finance" && (r.status === "requested" || r.status === "approved")) {
      const iApproved = approvers.includes(me.person);
      const why = `why-${r.id}`;
      // Each button says whose request it decides (a screen reader's list of buttons).
      const whose = `${r.username} ${money(r.amount, r.currency)}`;
      const approve = writes(h("button", { type: "button",
        disabled: r.status !== "requested" || iApproved, "aria-label": `Approve ${whose}`,
        "aria-describedby": iApproved && r.status === "requested" ? why : null }, "Approve"),
      async (key) => {
        await api("POST", `/v1/refund-requests/${r.id}/approve`, { note: "" }, key);
        say(`Approved the refund for ${r.username}.`);
        await refundsView(chosen, after);
        focusRequest(r.id);
      });
      const reject = h("button", { type: "button", "aria-label": `Reject ${whose}`,
        onclick: () => decisionForm(r, "reject", form, chosen, after) },
        "Reject");
      const pay = h("button", { type: "button", disabled: r.status !== "approved" || iApproved,
        "aria-label": `Pay ${whose}`, "aria-describedby": iApproved ? why : null,
        onclick: () => decisionForm(r, "pay", form, chosen, after) }, "Pay");
      actions.append(approve, reject, pay);
      if (iApproved) {
        actions.append(h("span", { id: why, class: "why", text: r.status === "approved"
          ? "Four eyes: you approved this request, so another finance person must pay it."
          : "Four eyes: you gave the first approval; the second must come from another person." }));
      }
      actions.append(form);
    }
    return h("tr", { "data-id": r.id, "aria-label": `Refund request of ${r.username}` },
      h("td", {}, h("a", { href: `#customers/${encodeURIComponent(r.username)}`, text: r.username })),
      h("td", { class: "money", text: money(r.amount, r.currency) }),
      h("td", { text: r.order_no }), h("td", { text: r.reason }),
      h("td", { text: r.status }), h("td", { text: approvers.join(", ") || "none" }),
      h("td", { text: when(r.requested_at) }), h("td", { text: ageWords(ages.get(r.id)) }),
      actions);
  });
  show("Refund requests",
    h("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "refund-status", text: "Status" }), filter),
    queueTotals(chosen, totals),
    rows.length === 0 ? h("p", { text: "No refund requests." }) : h("table", {
      "aria-label": `Refund requests: ${chosen}` },
      h("thead", {}, h("tr", {}, ["Customer", "Amount", "Order", "Reason", "Status", "Approved by",
        "Requested", "Age", "Actions"].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows)),
    pager("Refund requests", after, page.next, (cursor) => {
      location.hash = `#refunds/${chosen}` + (cursor ? `/${cursor}` : "");
    }));
  document.getElementById("loaded").textContent = `Loaded ${rows.length} refund `
    + `${rows.length === 1 ? "request" : "requests"}`
    + (totals.length ? `; ${TOTAL_WORDS[chosen].toLowerCase()}: `
      + totals.map((t) => money(t.amount, t.currency)).join(", ") : "") + ".";
}

// After a decision the queue is drawn anew: the keyboard stays on the same request (its first
// button still enabled) or, once the request has left the list, on the view's title.
function focusRequest(id) {
  const row = [...document.querySelectorAll("#view tbody tr")].find((tr) => tr.dataset.id === id);
  const button = row && [...row.querySelectorAll("button")].find((b) => !b.disabled);
  (button || document.getElementById("view-title")).focus();
}

function decisionForm(request, action, holder, chosen, after) {
  const id = `${action}-${request.id}`;
  const label = action === "pay" ? "Payout reference" : "Reason";
  const input = h("input", { id, required: true });
  const submit = h("button", { type: "submit",
                               text: action === "pay" ? "Confirm payout" : "Confirm rejection" });
  holder.replaceChildren(writes(submit, async (key) => {
    const body = action === "pay" ? { payout_reference: input.value } : { reason: input.value };
    await api("POST", `/v1/refund-requests/${request.id}/${action}`, body, key);
    say(action === "pay" ? `Paid ${money(request.amount, request.currency)} to ${request.username}.`
                         : `Rejected the refund for ${request.username}.`);
    await refundsView(chosen, after);
    focusRequest(request.id);
  }, h("form", { class: "inline" }, h("label", { for: id, text: label }), input, submit)));
  input.focus();
}

// -- finance and audit: the books ------------------------------------------------------------

// A reconciliation now, or as the ledger stood at a moment (UTC) the address keeps
// (#reconciliation/2026-12-04T09:30:00Z), so a reload or a link shows the same moment.
async function reconciliationView(asOf) {
  const input = h("input", { id: "as-of", type: "datetime-local", step: "1",
                             value: asOf ? asOf.slice(0, 19) : null });
  const form = h("form", { class: "inline", onsubmit: (event) => {
    event.preventDefault();
    // The input has no zone: its value is read as UTC, to the second.
    const moment = input.value.length === 16 ? `${input.value}:00` : input.value.slice(0, 19);
    const wanted = moment ? `#reconciliation/${encodeURIComponent(`${moment}Z`)}` : "#reconciliation";
    if (location.hash === wanted) route();
    else location.hash = wanted;
  } }, h("label", { for: "as-of", text: "As of (UTC)" }), input,
     h("button", { type: "submit", text: "Reconcile" }),
     asOf ? h("button", { type: "button", class: "secondary",
                          onclick: () => { location.hash = "#reconciliation"; } }, "Now") : null);
  const report = await api("GET",
    `/v1/reconciliation${asOf ? `?as_of=${encodeURIComponent(asOf)}` : ""}`);
  const all = report.currencies || [report];
  const rows = (entries, currency) => entries.map(([k, v]) => h("tr", {},
    h("th", { text: k.replace(/_/g, " ") }), h("td", { class: "money", text: money(v, currency) })));
  show("Reconciliation", form,
    h("p", { class: report.ok ? "good" : "bad",
             text: report.ok ? "Every invariant holds." : "Something does not hold (highlighted)." }),
    all.length === 0 ? h("p", { text: "No currency was in use then." }) : null,
    all.map((r) => h("section", { "aria-label": r.currency },
      h("h3", { text: `${r.currency} at position ${r.position}`
        + (asOf ? `, as the ledger stood at ${when(asOf)}` : "") }),
      h("table", { "aria-label": `${r.currency} reconciliation` }, h("tbody", {},
        rows(Object.entries(r.totals), r.currency),
        h("tr", { class: r.trial_balance === 0 ? null : "bad" }, h("th", { text: "trial balance" }),
          h("td", { class: "money", text: money(r.trial_balance, r.currency) })),
        Object.entries(r.invariants).map(([k, ok]) => h("tr", { class: ok ? null : "bad" },
          h("th", { text: k.replace(/_/g, " ") }),
          h("td", { text: ok ? "holds" : "does not hold" }))))),
      h("table", { "aria-label": `${r.currency} customer balances` },
        h("caption", { text: "Customer balances, summed" }),
        h("tbody", {}, rows(Object.entries(r.customer_balances), r.currency))),
      h("table", { "aria-label": `${r.currency} chart balances` },
        h("caption", { text: "Chart balances (debits positive)" }),
        h("tbody", {}, rows(Object.entries(r.chart_balances), r.currency))))));
  loaded(all.length, all.length === 1 ? "currency" : "currencies");
}

// -- the journal and the event log: filters, and each event's data ---------------------------

// A moment typed in a datetime-local input (it has no zone: read as UTC, to the second), as
// RFC 3339; blank: "".
function utcMoment(value) {
  if (!value) return "";
  return `${value.length === 16 ? `${value}:00` : value.slice(0, 19)}Z`;
}

// The filters each list offers: only the query parameters the API takes (api/README:
// /v1/journal takes account, currency, since and until; /v1/events stream, type, since and
// until). Times are typed in UTC.
const CHART_ACCOUNTS = ["clearing:deposits", "clearing:payouts", "orders:paid",
  "suppliers:receivable", "revenue:freight"];
const SINCE = { name: "since", label: "Since (UTC)", moment: true };
const UNTIL = { name: "until", label: "Until (UTC)", moment: true };
const JOURNAL_FILTERS = [
  { name: "account", label: "Account", hint: "e.g. customer:ann",
    list: CHART_ACCOUNTS },
  { name: "currency", label: "Currency", hint: "e.g. USD" },
  SINCE, UNTIL,
];
const EVENT_FILTERS = [
  { name: "stream", label: "Stream", hint: "a user name or a stream's id" },
  { name: "type", label: "Event type", hint: "e.g. deposit_received" },
  SINCE, UNTIL,
];

// A list's filter form: sending it goes to the list's first page with the filters chosen (in
// the address); "Clear filters" back to the whole list.
function filterForm(section, fields, filters) {
  const inputs = fields.map((field) => {
    const id = `filter-${field.name}`;
    const value = filters.get(field.name);
    const input = field.moment
      ? h("input", { id, type: "datetime-local", step: "1", value: value ? value.slice(0, 19) : null })
      : h("input", { id, autocomplete: "off", placeholder: field.hint, value,
                     list: field.list ? `${id}-list` : null });
    return [field, input, h("label", { for: id, text: field.label }), input,
      field.list ? h("datalist", { id: `${id}-list` },
        field.list.map((option) => h("option", { value: option }))) : null];
  });
  return h("form", { class: "inline", role: "search", "aria-label": "Filters",
                     onsubmit: (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [field, input] of inputs) {
      const value = field.moment ? utcMoment(input.value) : input.value.trim();
      if (value) chosen.set(field.name, field.name === "currency" ? value.toUpperCase() : value);
    }
    go(placeAddress(section, null, chosen));
  } }, inputs.map(([, , ...parts]) => parts), h("button", { type: "submit", text: "Apply filters" }),
  filters.toString() ? h("button", { type: "button", class: "secondary",
                                     onclick: () => go(section) }, "Clear filters") : null);
}

// The filters in words: "account customer:ann, since 2026-12-04 09:30:00 UTC".
function filterWords(fields, filters) {
  return fields.filter((field) => filters.has(field.name)).map((field) =>
    `${field.label.replace(" (UTC)", "").toLowerCase()} `
    + (field.moment ? when(filters.get(field.name)) : filters.get(field.name))).join(", ");
}

// Said when a page of the journal or the log has loaded: how many, matching what, and which
// positions, so that the next page is not heard as the same words again.
function loadedPage(items, one, many, fields, filters) {
  const words = filterWords(fields, filters);
  const [first, last] = [items[0], items[items.length - 1]];
  const positions = !first ? "" : first === last ? `, position ${first.position}`
    : `, positions ${first.position} to ${last.position}`;
  document.getElementById("loaded").textContent = `Loaded ${items.length} `
    + `${items.length === 1 ? one : many}${words ? ` matching ${words}` : ""}${positions}.`;
}

// A list read with its form's filters: a refusal (a filter the API does not take as typed) is
// said, and the form stays there to correct it.
async function readList(title, form, path) {
  try {
    return await api("GET", path);
  } catch (error) {
    if (state.me) show(title, form);
    throw error;
  }
}

function withFilters(filters) {
  const query = filters.toString();
  return query ? `&${query}` : "";
}

async function journalView(after) {
  const filters = placeFilters(JOURNAL_FILTERS);
  const form = filterForm("#journal", JOURNAL_FILTERS, filters);
  const page = await readList("Journal", form,
    `/v1/journal?${paged(VIEW_PAGE, after)}${withFilters(filters)}`);
  show("Journal", form, page.items.length === 0 ? h("p", { text: filters.toString()
    ? "No journal entries match these filters." : "The journal has no entries yet." })
    : h("table", { "aria-label": "Journal" },
      h("thead", {}, h("tr", {}, ["Position", "When", "What", "Customer", "Order", "Who",
        "Account", "Amount"].map((t) => h("th", { text: t })))),
      h("tbody", {}, page.items.flatMap((e) => e.postings.map((p, i) => h("tr", {},
        h("td", { text: i === 0 ? e.position : "" }), h("td", { text: i === 0 ? when(e.at) : "" }),
        h("td", { text: i === 0 ? e.type.replace(/_/g, " ") : "" }),
        h("td", { text: i === 0 ? e.username : "" }),
        h("td", { text: i === 0 ? e.order_no || "" : "" }),
        h("td", { text: i === 0 ? e.actor || "" : "" }), h("td", { text: p.account }),
        h("td", { class: "money", text: money(p.amount, e.currency) })))))),
  pager("Journal", after, page.next, (cursor) => go(placeAddress("#journal", cursor, filters))));
  loadedPage(page.items, "journal entry", "journal entries", JOURNAL_FILTERS, filters);
}

// What each stream's money is in, as learned from what this tab has read: an account's events
// name no currency (its opening does, and so do the journal's entries for it); a refund
// request's and a case's opening name theirs. At most MAX_KNOWN_STREAMS kept.
const STREAM_CURRENCIES = new Map();
const MAX_KNOWN_STREAMS = 10000;
const AMOUNT_FIELD = /^(?:.+_)?amount$/; // amount, refund_amount, freight_amount

function learnCurrency(stream, currency) {
  if (!stream || !currency || STREAM_CURRENCIES.get(stream) === currency) return;
  if (STREAM_CURRENCIES.size >= MAX_KNOWN_STREAMS) STREAM_CURRENCIES.clear();
  STREAM_CURRENCIES.set(stream, currency);
}

function currencyOf(event, byPosition) {
  const d = event.data || {};
  return d.currency || byPosition.get(event.position) || STREAM_CURRENCIES.get(event.stream)
    || STREAM_CURRENCIES.get(d.request_id) || STREAM_CURRENCIES.get(d.case_id) || null;
}

function hasAmount(event) {
  return Object.entries(event.data || {}).some(([key, value]) =>
    AMOUNT_FIELD.test(key) && Number.isInteger(value));
}

// The currencies of a page of the log, by position: from the events themselves and, for an
// amount whose currency they do not say, from the journal's entries at the same positions (one
// read of at most the page's span of positions). Without the journal (busy, catching up) such
// an amount is shown in minor units, said so.
async function eventCurrencies(items) {
  const byPosition = new Map();
  for (const e of items) learnCurrency(e.stream, e.data && e.data.currency);
  const unknown = items.filter((e) => hasAmount(e) && !currencyOf(e, byPosition));
  if (unknown.length) {
    const [first, last] = [unknown[0].position, unknown[unknown.length - 1].position];
    try {
      const journal = await api("GET",
        `/v1/journal?${paged(Math.min(API_MAX_PAGE, last - first + 1), String(first - 1))}`);
      for (const entry of journal.items.filter((j) => j.position <= last)) {
        byPosition.set(entry.position, entry.currency);
        learnCurrency(String(entry.event_id).split("/")[0], entry.currency);
      }
    } catch (error) {
      if (!(error instanceof Problem) || error.status === 401) throw error;
    }
  }
  const found = new Map();
  for (const e of items) {
    const currency = currencyOf(e, byPosition);
    learnCurrency(e.stream, currency);
    if (currency) found.set(e.position, currency);
  }
  return found;
}

// A value of an event's data in words: an amount in major units with its currency (in minor
// units, said so, where the currency is not known), yes or no, none, lists and nested fields
// spelt out.
function dataWords(key, value, currency) {
  if (AMOUNT_FIELD.test(key) && Number.isInteger(value)) {
    return currency ? money(value, currency) : `${value} minor units`;
  }
  if (value === null || value === undefined) return "none";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) {
    return value.length ? value.map((v) => dataWords("", v, currency)).join("; ") : "none";
  }
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) =>
      `${k.replace(/_/g, " ")}: ${dataWords(k, v, currency)}`).join(", ");
  }
  return String(value);
}

// An event's data, field by field (as text, never as HTML).
function eventData(event, currency) {
  const fields = Object.entries(event.data || {});
  return fields.length === 0 ? null : h("dl", { class: "data" }, fields.map(([key, value]) => [
    h("dt", { text: key.replace(/_/g, " ") }), h("dd", { text: dataWords(key, value, currency) })]));
}

async function eventsView(after) {
  const filters = placeFilters(EVENT_FILTERS);
  const form = filterForm("#events", EVENT_FILTERS, filters);
  const page = await readList("Event log", form,
    `/v1/events?${paged(VIEW_PAGE, after)}${withFilters(filters)}`);
  const currencies = await eventCurrencies(page.items);
  // A filtered page reads a bounded stretch of the log: it may match nothing and still have a
  // next page.
  const none = page.next ? "None of the events this page read match; Next page reads on."
    : filters.toString() ? "No events match these filters." : "The log has no events yet.";
  show("Event log", form, page.items.length === 0 ? h("p", { text: none })
    : h("table", { "aria-label": "Event log" },
      h("thead", {}, h("tr", {}, ["Position", "When", "Event", "Stream", "Who", "Data"].map((t) =>
        h("th", { text: t })))),
      h("tbody", {}, page.items.map((e) => h("tr", { "data-position": e.position },
        h("td", { text: e.position }), h("td", { text: when(e.at) }),
        h("td", { text: `${e.aggregate}: ${e.name.replace(/_/g, " ")}` }),
        h("td", { class: "muted" }, h("a", {
          href: placeAddress("#events", null, new URLSearchParams({ stream: e.stream })),
          "aria-label": `Events of stream ${e.stream}`, text: e.stream })),
        h("td", { text: e.actor || "" }),
        h("td", {}, eventData(e, currencies.get(e.position))))))),
  pager("Event log", after, page.next, (cursor) => go(placeAddress("#events", cursor, filters))));
  loadedPage(page.items, "event", "events", EVENT_FILTERS, filters);
}

// The whole event log, page after page, at most MAX_DOWNLOAD_PAGES of them: an API page of
// events ({items, next}), whose next is null when it holds the whole log and otherwise says
// where to read on.
async function wholeLog() {
  const items = [];
  let after = null;
  for (let pages = 0; pages < MAX_DOWNLOAD_PAGES; pages += 1) {
    const page = await api("GET", `/v1/events?${paged(DOWNLOAD_PAGE, after)}`);
    items.push(...page.items);
    after = page.next;
    if (!after) break;
  }
  return { items, next: after };
}

async function verifyView() {
  const result = h("div", { id: "verify-result", role: "status" });
  show("Verify", h("p", { text: "Re-derive history and check it: the hash chain, every invariant at "
    + "every position, and the read models against a fresh replay." }),
  h("button", { type: "button", onclick: () => attempt(async () => {
    result.textContent = "Verifying…";
    const report = await api("GET", "/v1/audit/verify");
    result.replaceChildren(
      h("p", { class: report.ok ? "good" : "bad", text: report.ok
        ? `Everything holds: ${report.events_checked} events checked.`
        : `NOT OK: ${report.events_checked} events checked; first bad position ${report.first_bad_position}.` }),
      h("ul", {}, report.problems.map((p) => h("li", { class: "bad", text: p }))));
  }) }, "Verify"), result);
}

function save(file, type, content) {
  const blob = new Blob([typeof content === "string" ? content : JSON.stringify(content, null, 2)],
    { type });
  const link = h("a", { href: URL.createObjectURL(blob), download: file });
  document.body.append(link);
  link.click();
  link.remove();
}

async function exportsView() {
  const download = (label, path, file, type) => h("button", { type: "button",
    onclick: () => attempt(async () => {
      save(file, type, await api("GET", path));
      say(`Downloaded ${file}.`);
    }) }, label);
  const downloadLog = h("button", { type: "button", onclick: () => attempt(async () => {
    say("Reading the event log…");
    const log = await wholeLog();
    save("events.json", "application/json", log);
    say(log.next === null
      ? `Downloaded events.json: the whole log, ${log.items.length} events.`
      : `Downloaded events.json: only the first ${log.items.length} events (the console stops `
        + `after ${MAX_DOWNLOAD_PAGES} pages); its next says where to read on, and `
        + "`ledger export --format events` writes the whole log.");
  }) }, "Download the event log (JSON)");
  show("Exports",
    h("p", { text: "Files to download, made by this server now." }),
    h("ul", {},
      h("li", {}, download("Download the journal (Beancount)", "/v1/export/beancount",
        "ledger.beancount", "text/plain")),
      h("li", {}, download("Download the journal (CSV)", "/v1/export/csv",
        "ledger.csv", "text/csv")),
      h("li", {}, download("Download the journal (hledger)", "/v1/export/hledger",
        "ledger.journal", "text/plain")),
      h("li", {}, downloadLog),
      h("li", {}, download("Download the reconciliation (JSON)", "/v1/reconciliation",
        "reconciliation.json", "application/json"))));
}

// -- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    attempt(async () => {
      await signIn(input.value.trim());
      input.value = "";
    });
  });
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) attempt(() => signIn(kept));
});
