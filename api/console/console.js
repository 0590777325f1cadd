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

function when(text) {
  return text ? String(text).replace("T", " ").slice(0, 19) : "";
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

class Problem extends Error {}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  const options = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(path, options);
  const type = reply.headers.get("Content-Type") || "";
  if (!reply.ok) {
    let detail = `${reply.status} ${reply.statusText}`;
    if (type.includes("json")) {
      const problem = await reply.json();
      detail = problem.detail || problem.title || detail;
    }
    // The token no longer holds (a wrong one, or revoked or rotated since): forget it and what
    // it showed, whichever call found out.
    if (reply.status === 401) signOut();
    throw new Problem(detail);
  }
  return type.includes("json") ? reply.json() : reply.text();
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
  const first = nav.querySelector("li:not([hidden]) a");
  const wanted = location.hash && nav.querySelector(`li:not([hidden]) a[href="${location.hash}"]`);
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

const VIEWS = {
  "#customers": customersView,
  "#refunds": refundsView,
  "#reconciliation": reconciliationView,
  "#journal": journalView,
  "#events": eventsView,
  "#verify": verifyView,
  "#exports": exportsView,
};

function route() {
  if (!state.me) return;
  const [name, ...args] = location.hash.split("/");
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

async function customersView(username) {
  const input = h("input", { id: "customer", name: "customer", required: true,
                             autocomplete: "off", value: username || "" });
  const form = h("form", { class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    location.hash = `#customers/${encodeURIComponent(input.value.trim().toLowerCase())}`;
    if (input.value.trim().toLowerCase() === username) route();
  } }, h("label", { for: "customer", text: "Customer" }), input,
     h("button", { type: "submit", text: "Find" }));
  const area = h("div", { id: "customer-area" });
  show("Customers", form, area);
  if (username) await showCustomer(username, area);
}

async function showCustomer(username, area) {
  const account = await api("GET", `/v1/accounts/${encodeURIComponent(username)}`);
  const refundable = await api("GET",
    `/v1/accounts/${encodeURIComponent(username)}/refundable?limit=200`);
  const c = account.currency;
  const amount = (id, label, value) => h("div", {},
    h("label", { for: id, text: label }), h("output", { id, text: money(value, c) }));
  const parts = [
    h("h3", { text: `${account.username} (${c})` }),
    h("div", { class: "amounts", "aria-label": "Balance" },
      amount("posted", "Posted", account.posted), amount("held", "Held", account.held),
      amount("available", "Available", account.available),
      amount("refundable", "Refundable", account.refundable)),
  ];

  const orders = refundable.orders;
  parts.push(h("h3", { text: "Orders" }));
  parts.push(orders.length === 0 ? h("p", { text: "No orders." }) : h("table", { "aria-label": "Orders" },
    h("thead", {}, h("tr", {}, h("th", { text: "Order" }), h("th", { class: "money", text: "Paid" }),
      h("th", { class: "money", text: "Credited back" }),
      h("th", { class: "money", text: "Refundable" }), h("th", { text: "Cases" }),
      h("th", { text: "Actions" }))),
    h("tbody", {}, orders.map((o) => h("tr", {},
      h("td", { text: o.order_no }), h("td", { class: "money", text: money(o.paid, c) }),
      h("td", { class: "money", text: money(o.credited_back, c) }),
      h("td", { class: "money", text: money(o.refundable, c) }),
      h("td", {}, o.case_details.map((k) => h("div", {},
        h("a", { href: `#customers/${encodeURIComponent(username)}`,
                 onclick: (e) => { e.preventDefault(); attempt(() => openCase(k.id, area)); } },
          `${k.kind.replace(/_/g, " ")} case: ${k.state.replace(/_/g, " ")}`)))),
      h("td", {}, state.me.role === "cs" ? h("button", { type: "button",
        "aria-label": `Open a return case for ${o.order_no}`,
        onclick: () => caseForm(username, o.order_no, area) }, "Open return case") : null))))));

  if (state.me.role === "cs") parts.push(refundRequestForm(account, orders));

  const history = h("section", { id: "history", "aria-labelledby": "history-title" });
  parts.push(history);
  parts.push(h("div", { id: "case-area" }));
  await showHistory(username, c, null, history);
  area.replaceChildren(...parts);
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
      h("tbody", {}, page.items.map((item) => h("tr", {},
        h("td", { text: item.position }),
        h("td", { text: when(item.at) }), h("td", { text: item.type.replace(/_/g, " ") }),
        h("td", { class: "money", text: money(item.signed_amount || item.amount, c) }),
        h("td", { class: "money", text: money(item.available_after, c) }),
        h("td", { text: item.actor }))))),
    pager("History", after, page.next,
      (cursor) => attempt(async () => {
        await showHistory(username, c, cursor, holder);
        holder.querySelector("table").focus();
      })));
  loaded(page.items.length, "history entries");
}

function refundRequestForm(account, orders) {
  const c = account.currency;
  const order = h("select", { id: "refund-order" },
    orders.map((o) => h("option", { value: o.order_no, text: o.order_no })));
  const amount = h("input", { id: "refund-amount", inputmode: "decimal", required: true });
  const reason = h("input", { id: "refund-reason" });
  return h("section", { "aria-labelledby": "refund-title" },
    h("h3", { id: "refund-title", text: "Balance refund request" }),
    h("form", { class: "inline", onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        await api("POST", `/v1/accounts/${encodeURIComponent(account.username)}/refund-requests`,
          { order_no: order.value, amount: toMinor(amount.value, c), reason: reason.value });
        await showCustomer(account.username, document.getElementById("customer-area"));
        say(`Requested a refund of ${money(toMinor(amount.value, c), c)} for ${account.username}.`);
      });
    } }, h("label", { for: "refund-order", text: "Order" }), order,
       h("label", { for: "refund-amount", text: `Amount (${c})` }), amount,
       h("label", { for: "refund-reason", text: "Reason" }), reason,
       h("button", { type: "submit", text: "Request refund" })));
}

// -- return cases ----------------------------------------------------------------------------

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
  target.replaceChildren(h("section", { class: "case", "aria-labelledby": "new-case" },
    h("h3", { id: "new-case", text: `New return case for ${orderNo}` }),
    h("form", { class: "inline", onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const opened = await api("POST", "/v1/return-cases", {
          username, order_no: orderNo, kind: kind.value, shipped_on: shipped.value,
          items: [{ description: item.value, quantity: Number(quantity.value) }],
          evidence: { goods_photos: goods.value ? [goods.value] : [],
                      package_photos: box.value ? [box.value] : [] },
          conditions: { replaced_or_modified: false, parts_missing: false, opened_media: false,
                        has_quality_assurance: qa.checked },
          note: note.value,
        });
        say("The case is open.");
        await showCustomer(username, area);
        await openCase(opened.id, area);
      });
    } }, field("case-kind", "Kind", kind), field("case-shipped", "Shipped on", shipped),
       field("case-item", "Item", item), field("case-quantity", "Quantity", quantity),
       field("case-goods-photo", "Goods photo", goods),
       field("case-package-photo", "Package photo", box),
       field("case-qa", "Has quality assurance", qa), field("case-note", "Note", note),
       h("button", { type: "submit", text: "Open case" }))));
  item.focus();
}

// The steps of API.md, by action: the button's name and the fields the step asks for.
const STEPS = {
  "supplier-review": { name: "Supplier review", fields: [["note", "Note", "text", ""]] },
  accept: { name: "Accept", fields: [["return_by", "Return by", "date", () => today(14)],
                                     ["return_address", "Return address", "text", ""]] },
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
                                       ["tracking", "Outbound tracking", "text", ""]] },
  close: { name: "Close", fields: [["note", "Note", "text", ""]] },
  cancel: { name: "Cancel", fields: [["reason", "Reason", "text", ""]] },
};

async function openCase(caseId, area) {
  const found = await api("GET", `/v1/return-cases/${caseId}`);
  const target = document.getElementById("case-area") || area;
  const c = found.currency;
  const stepForm = h("div", { id: "step-form" });
  const buttons = found.allowed_actions.filter((a) => STEPS[a]).map((action) =>
    h("button", { type: "button", onclick: () => showStepForm(found, action, stepForm, area) },
      STEPS[action].name));
  const noteText = h("textarea", { id: "case-note-text", rows: "2", cols: "50" });
  const canNote = found.allowed_actions.includes("notes");
  target.replaceChildren(h("section", { class: "case", "aria-labelledby": "case-title" },
    h("h3", { id: "case-title", tabindex: "-1",
              text: `Case for ${found.order_no}: ${found.state.replace(/_/g, " ")}` }),
    h("p", { class: "muted" }, `${found.kind.replace(/_/g, " ")} · opened ${found.opened_on}`
      + ` · shipped ${found.shipped_on}`
      + (found.return_by ? ` · return by ${found.return_by}` : "")
      + (found.refund_amount ? ` · refunded ${money(found.refund_amount, c)}` : "")),
    state.me.role === "cs" ? h("div", { role: "group", "aria-label": "Steps" }, buttons) : null,
    stepForm,
    h("h4", { text: "Steps" }),
    h("ol", {}, found.steps.map((s) => h("li", {},
      `${when(s.at)} ${s.step.replace(/_/g, " ")} by ${s.actor}`
      + (s.data && s.data.note ? `: ${s.data.note}` : "")
      + (s.data && s.data.text ? `: ${s.data.text}` : "")))),
    state.me.role === "cs" && canNote ? h("form", { class: "inline", onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        await api("POST", `/v1/return-cases/${caseId}/notes`, { text: noteText.value });
        say("Note added.");
        await openCase(caseId, area);
      });
    } }, h("label", { for: "case-note-text", text: "Note text" }), noteText,
       h("button", { type: "submit", text: "Add note" })) : null));
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
  holder.replaceChildren(h("form", { class: "inline", "aria-label": step.name,
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const body = {};
        for (const [name, [kind, input]] of Object.entries(inputs)) {
          if (kind === "checkbox") body[name] = input.checked;
          else if (kind === "money") {
            const minor = toMinor(input.value, found.currency);
            if (minor !== null) body[name] = minor;
          } else if (input.value !== "") body[name] = input.value;
        }
        if (action === "resolve" && body.outcome !== "refund") delete body.refund_amount;
        await api("POST", `/v1/return-cases/${found.id}/${action}`, body);
        say(`${step.name}: done.`);
        await showCustomer(found.username, area);
        await openCase(found.id, area);
      });
    } }, fields, h("button", { type: "submit", text: `Confirm ${step.name.toLowerCase()}` })));
  const first = holder.querySelector("input, select");
  if (first) first.focus();
}

// -- finance: the refund queue ---------------------------------------------------------------

async function refundsView(status, after) {
  const chosen = status || "open";
  const filter = h("select", { id: "refund-status", onchange: () => {
    location.hash = `#refunds/${filter.value}`;
  } }, ["open", "requested", "approved", "paid", "rejected", "cancelled"].map((s) =>
    h("option", { value: s, text: s, selected: s === chosen })));
  const page = await api("GET",
    `/v1/refund-requests?status=${encodeURIComponent(chosen)}&${paged(QUEUE_PAGE, after)}`);
  const details = await Promise.all(page.items.map((r) => api("GET", `/v1/refund-requests/${r.id}`)));
  const me = state.me;
  const rows = details.map((r) => {
    // Approvals: the steps that name an approving person (a first or a final approval).
    const approvers = r.steps.filter((s) => s.data
      && ("person" in s.data || (s.status === "approved" && "note" in s.data)))
      .map((s) => personOf(s.actor, s.data));
    const actions = h("td", {});
    const form = h("div", {});
    if (me.role === "finance" && (r.status === "requested" || r.status === "approved")) {
      const iApproved = approvers.includes(me.person);
      const why = `why-${r.id}`;
      const approve = h("button", { type: "button", disabled: r.status !== "requested" || iApproved,
        "aria-describedby": iApproved && r.status === "requested" ? why : null,
        onclick: () => attempt(async () => {
          await api("POST", `/v1/refund-requests/${r.id}/approve`, { note: "" });
          say(`Approved the refund for ${r.username}.`);
          await refundsView(chosen, after);
        }) }, "Approve");
      const reject = h("button", { type: "button",
        onclick: () => decisionForm(r, "reject", form, chosen, after) },
        "Reject");
      const pay = h("button", { type: "button", disabled: r.status !== "approved" || iApproved,
        "aria-describedby": iApproved ? why : null,
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
      h("td", { text: when(r.requested_at) }), actions);
  });
  show("Refund requests",
    h("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "refund-status", text: "Status" }), filter),
    rows.length === 0 ? h("p", { text: "No refund requests." }) : h("table", {
      "aria-label": `Refund requests: ${chosen}` },
      h("thead", {}, h("tr", {}, ["Customer", "Amount", "Order", "Reason", "Status", "Approved by",
        "Requested", "Actions"].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows)),
    pager("Refund requests", after, page.next, (cursor) => {
      location.hash = `#refunds/${chosen}` + (cursor ? `/${cursor}` : "");
    }));
  loaded(rows.length, "refund requests");
}

function decisionForm(request, action, holder, chosen, after) {
  const id = `${action}-${request.id}`;
  const label = action === "pay" ? "Payout reference" : "Reason";
  const input = h("input", { id, required: true });
  holder.replaceChildren(h("form", { class: "inline", onsubmit: (event) => {
    event.preventDefault();
    attempt(async () => {
      const body = action === "pay" ? { payout_reference: input.value } : { reason: input.value };
      await api("POST", `/v1/refund-requests/${request.id}/${action}`, body);
      say(action === "pay" ? `Paid ${money(request.amount, request.currency)} to ${request.username}.`
                           : `Rejected the refund for ${request.username}.`);
      await refundsView(chosen, after);
    });
  } }, h("label", { for: id, text: label }), input,
     h("button", { type: "submit", text: action === "pay" ? "Confirm payout" : "Confirm rejection" })));
  input.focus();
}

// -- finance and audit: the books ------------------------------------------------------------

async function reconciliationView() {
  const report = await api("GET", "/v1/reconciliation");
  const all = report.currencies || [report];
  show("Reconciliation",
    h("p", { class: report.ok ? "good" : "bad",
             text: report.ok ? "Every invariant holds." : "Something does not hold (highlighted)." }),
    all.map((r) => h("section", { "aria-label": r.currency },
      h("h3", { text: `${r.currency} at position ${r.position}` }),
      h("table", { "aria-label": `${r.currency} reconciliation` }, h("tbody", {},
        Object.entries(r.totals).map(([k, v]) => h("tr", {}, h("th", { text: k.replace(/_/g, " ") }),
          h("td", { class: "money", text: money(v, r.currency) }))),
        h("tr", { class: r.trial_balance === 0 ? null : "bad" }, h("th", { text: "trial balance" }),
          h("td", { class: "money", text: money(r.trial_balance, r.currency) })),
        Object.entries(r.invariants).map(([k, ok]) => h("tr", { class: ok ? null : "bad" },
          h("th", { text: k.replace(/_/g, " ") }),
          h("td", { text: ok ? "holds" : "does not hold" }))))))));
  loaded(all.length, all.length === 1 ? "currency" : "currencies");
}

async function journalView(after) {
  const page = await api("GET", `/v1/journal?${paged(VIEW_PAGE, after)}`);
  show("Journal", h("table", { "aria-label": "Journal" },
    h("thead", {}, h("tr", {}, ["Position", "When", "What", "Customer", "Order", "Who", "Account",
      "Amount"].map((t) => h("th", { text: t })))),
    h("tbody", {}, page.items.flatMap((e) => e.postings.map((p, i) => h("tr", {},
      h("td", { text: i === 0 ? e.position : "" }), h("td", { text: i === 0 ? when(e.at) : "" }),
      h("td", { text: i === 0 ? e.type.replace(/_/g, " ") : "" }),
      h("td", { text: i === 0 ? e.username : "" }), h("td", { text: i === 0 ? e.order_no || "" : "" }),
      h("td", { text: i === 0 ? e.actor || "" : "" }),
      h("td", { text: p.account }), h("td", { class: "money", text: money(p.amount, e.currency) })))))),
  pager("Journal", after, page.next, (cursor) => {
    location.hash = cursor ? `#journal/${cursor}` : "#journal";
  }));
  loaded(page.items.length, "journal entries");
}

async function eventsView(after) {
  const page = await api("GET", `/v1/events?${paged(VIEW_PAGE, after)}`);
  show("Event log", h("table", { "aria-label": "Event log" },
    h("thead", {}, h("tr", {}, ["Position", "When", "Event", "Stream", "Who"].map((t) =>
      h("th", { text: t })))),
    h("tbody", {}, page.items.map((e) => h("tr", {},
      h("td", { text: e.position }), h("td", { text: when(e.at) }),
      h("td", { text: `${e.aggregate}: ${e.name.replace(/_/g, " ")}` }),
      h("td", { class: "muted", text: e.stream }), h("td", { text: e.actor || "" }))))),
  pager("Event log", after, page.next, (cursor) => {
    location.hash = cursor ? `#events/${cursor}` : "#events";
  }));
  loaded(page.items.length, "events");
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
