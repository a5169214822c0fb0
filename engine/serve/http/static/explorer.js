// The explorer: plain DOM and SVG over the server's /v1/... JSON routes (no framework, no build step,
// no other host). Text from the corpus is only ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, query: null };

// ------------------------------------------------------------------------------------------------
// Calls

async function api(route, body) {
  const headers = { "Content-Type": "application/json" };
  const token = $("auth-token").value || localStorage.getItem("ngram-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch("/v1/" + route, { method: "POST", headers, body: JSON.stringify(body || {}) });
  const data = await r.json();
  if (!r.ok) {
    if (r.status === 401) $("settings").open = true;
    const e = data.error || {};
    throw new Error(`${e.code || r.status}: ${e.message || r.statusText}`);
  }
  return data;
}

const decoded = new Map();
async function detok(ids) {
  if (!ids.length) return "";
  const key = ids.join(",");
  if (!decoded.has(key)) decoded.set(key, api("detokenize", { token_ids: ids }).then((r) => r.text));
  return decoded.get(key);
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function fmt(n) { return Number(n).toLocaleString("en-US"); }
function visible(s) { return s.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5"); }

// ------------------------------------------------------------------------------------------------
// Query tab

function parseQuery() {
  const raw = $("query").value;
  if ($("as-ids").checked) {
    const ids = raw.split(/[\s,]+/).filter(Boolean).map(Number);
    if (ids.some((x) => !Number.isInteger(x) || x < 0)) throw new Error("token ids must be non-negative integers");
    return { token_ids: { ids } };
  }
  return { text: raw };
}

async function runQuery(ev) {
  if (ev) ev.preventDefault();
  showError(null);
  delete $("query-tab").dataset.done;
  try {
    const query = parseQuery();
    const ids = query.token_ids ? query.token_ids.ids : (await api("tokenize", { text: query.text })).token_ids;
    if (!ids.length) throw new Error("the query is empty");
    state.query = ids;
    const idq = { token_ids: { ids } };
    await Promise.all([
      renderTokens(ids),
      api("count", { query: idq }).then((r) => { $("count").textContent = fmt(r.count); $("count").dataset.count = r.count; }),
      api("next_token_distribution", { prompt: idq }).then(renderNtd),
      renderInfgram(ids),
      api("search_documents", { query: idq, max_docs: 10, max_disp_len: 80 }).then((items) => renderDocs(items, ids)),
    ]);
    $("query-tab").dataset.done = "1";  // every part is drawn (the tests wait for this)
  } catch (err) {
    showError(err);
  }
}

async function renderTokens(ids) {
  const box = $("tokens");
  box.replaceChildren();
  const texts = await Promise.all(ids.map((t) => detok([t])));
  ids.forEach((t, i) => box.append(el("span", { class: "token", title: `id ${t}` }, visible(texts[i]), el("small", {}, String(t)))));
}

async function renderInfgram(ids) {
  const box = $("infgram");
  if (ids.length < 2) {
    box.textContent = "needs at least two tokens: the last one is predicted from the others";
    return;
  }
  const prompt = ids.slice(0, -1), cont = ids[ids.length - 1];
  const r = await api("infgram_prob", { prompt: { token_ids: { ids: prompt } }, cont_id: cont });
  const suffix = prompt.slice(prompt.length - r.suffix_len);
  const [suffixText, contText] = await Promise.all([detok(suffix), detok([cont])]);
  box.replaceChildren(
    el("div", { class: "big", id: "infgram-prob" }, r.prob < 0 ? "undefined" : r.prob.toFixed(4)),
    el("div", {}, `P(`, el("mark", {}, contText), ` | `, el("span", { id: "infgram-suffix" }, suffixText),
       `) = ${fmt(r.cont_count)} / ${fmt(r.prompt_count)}`),
    el("div", { class: "muted", id: "infgram-suffix-len", "data-suffix-len": r.suffix_len },
       `longest suffix that occurs: ${r.suffix_len} of ${prompt.length} tokens`));
}

async function renderNtd(r) {
  const d = r.distribution;
  const svg = $("ntd-chart");
  const order = d.token_ids.map((t, i) => [t, d.counts[i]]).sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  const top = order.slice(0, 20);
  $("ntd-summary").textContent = `${fmt(d.prompt_count)} occurrences, ${fmt(d.token_ids.length)} distinct next tokens` +
    (d.end_count ? `, ${fmt(d.end_count)} end a document` : "") + (d.approx ? " (sampled)" : " (exact)") +
    (order.length > top.length ? `; the top ${top.length}` : "");
  const labels = await Promise.all(top.map(([t]) => detok([t])));
  const NS = "http://www.w3.org/2000/svg";
  const rowH = 22, labelW = 150, countW = 110, width = Math.max(svg.clientWidth || 700, 400);
  const barMax = width - labelW - countW, max = top.length ? top[0][1] : 1;
  svg.replaceChildren();
  svg.setAttribute("height", String(top.length * rowH + 4));
  top.forEach(([t, c], i) => {
    const g = document.createElementNS(NS, "g");
    g.setAttribute("class", "bar");
    g.setAttribute("data-token-id", t);
    g.setAttribute("data-count", c);
    g.setAttribute("transform", `translate(0, ${i * rowH})`);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", labelW - 6); label.setAttribute("y", 15); label.setAttribute("text-anchor", "end");
    label.setAttribute("class", "label");
    label.textContent = JSON.stringify(labels[i]);
    const rect = document.createElementNS(NS, "rect");
    rect.setAttribute("x", labelW); rect.setAttribute("y", 3); rect.setAttribute("height", rowH - 6);
    rect.setAttribute("width", Math.max(1, (barMax * c) / max));
    const value = document.createElementNS(NS, "text");
    value.setAttribute("x", labelW + (barMax * c) / max + 6); value.setAttribute("y", 15);
    value.textContent = `${fmt(c)}  (${((100 * c) / d.prompt_count).toFixed(1)}%)`;
    const tip = document.createElementNS(NS, "title");
    tip.textContent = `token ${t}: ${c}`;
    g.append(tip, label, rect, value);
    svg.append(g);
  });
}

async function snippet(tokenIds, start, len) {
  const [pre, hit, post] = await Promise.all([
    detok(tokenIds.slice(0, start)), detok(tokenIds.slice(start, start + len)), detok(tokenIds.slice(start + len)),
  ]);
  return el("div", { class: "snippet" }, pre, el("mark", {}, hit), post);
}

async function renderDocs(items, ids) {
  const list = $("docs");
  const summary = items[0].summary;
  const docs = items.slice(1).map((m) => m.document);
  $("docs-summary").textContent = `${fmt(summary.count)} occurrences; the first ${docs.length}`;
  const rows = await Promise.all(docs.map(async (d) => {
    const open = el("button", { class: "open-doc", type: "button" }, "whole document");
    open.addEventListener("click", () => openDocument(d.doc_ix, d.doc_len, ids));
    const head = el("div", { class: "doc-head" }, `document ${d.doc_ix} · ${fmt(d.doc_len)} tokens`, open);
    return el("li", { class: "doc", "data-doc-ix": d.doc_ix }, head,
              await snippet(d.token_ids, d.needle_offset, Math.min(ids.length, d.disp_len - d.needle_offset)));
  }));
  list.replaceChildren(...rows);
}

// Occurrences of needle in haystack, left to right, not overlapping.
function occurrences(haystack, needle) {
  const out = [];
  for (let p = 0; needle.length && p + needle.length <= haystack.length;) {
    let ok = true;
    for (let k = 0; k < needle.length && ok; k++) ok = haystack[p + k] === needle[k];
    if (ok) { out.push(p); p += needle.length; } else p++;
  }
  return out;
}

async function openDocument(docIx, docLen, needle) {
  showError(null);
  try {
    const limit = state.info ? state.info.limits.max_disp_len : docLen;
    const d = (await api("get_document", { doc_ix: docIx, max_disp_len: Math.min(docLen, limit) })).document;
    const view = $("doc-view");
    $("doc-view-title").textContent = `Document ${d.doc_ix} (${fmt(d.doc_len)} tokens` +
      (d.disp_len < d.doc_len ? `, the first ${fmt(d.disp_len)} shown)` : ")");
    $("doc-view-meta").textContent = d.metadata_json || "";
    const text = $("doc-view-text");
    text.replaceChildren();
    let at = 0;
    for (const p of occurrences(d.token_ids, needle || [])) {
      text.append(await detok(d.token_ids.slice(at, p)), el("mark", {}, await detok(d.token_ids.slice(p, p + needle.length))));
      at = p + needle.length;
    }
    text.append(await detok(d.token_ids.slice(at)));
    view.hidden = false;
    view.dataset.docIx = d.doc_ix;
    view.scrollIntoView({ block: "nearest" });
  } catch (err) {
    showError(err);
  }
}

// ------------------------------------------------------------------------------------------------
// Attribution tab

function color(len, minLen, maxLen) {
  const t = maxLen > minLen ? Math.min(1, Math.max(0, (len - minLen) / (maxLen - minLen))) : 1;
  return `hsl(${50 - 40 * t}, 95%, ${84 - 20 * t}%)`;  // pale yellow (shortest) to orange (longest)
}

async function runAttribution(ev) {
  if (ev) ev.preventDefault();
  showError(null);
  delete $("attr-tab").dataset.done;
  try {
    const text = $("attr-text").value;
    const minLen = Number($("attr-min-len").value) || 4;
    const r = await api("attribute", { text: { text }, min_len: minLen, max_docs: 3, max_disp_len: 60 });
    const ids = r.token_ids, spans = r.spans;
    const maxLen = Math.max(0, ...spans.map((s) => s.end - s.start));
    $("attr-summary").textContent = `${spans.length} spans of at least ${minLen} tokens occur in the corpus; ` +
      `${(100 * (1 - r.creativity)).toFixed(0)}% of the ${ids.length} tokens are covered (creativity ${r.creativity.toFixed(2)})`;
    $("attr-legend").replaceChildren(
      el("span", {}, el("span", { class: "swatch", style: `background:${color(minLen, minLen, maxLen)}` }), ` ${minLen} tokens`),
      el("span", {}, el("span", { class: "swatch", style: `background:${color(maxLen, minLen, maxLen)}` }), ` ${maxLen} tokens`),
      el("span", {}, "click a highlighted span for its source documents"));
    // Cut the text at every span edge: each piece is covered by the same spans throughout.
    const cuts = [...new Set([0, ids.length, ...spans.flatMap((s) => [s.start, s.end])])].sort((a, b) => a - b);
    const pieces = [];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const [a, b] = [cuts[i], cuts[i + 1]];
      pieces.push({ a, b, spans: spans.filter((s) => s.start <= a && s.end >= b) });
    }
    const texts = await Promise.all(pieces.map((p) => detok(ids.slice(p.a, p.b))));
    const out = $("attr-result");
    out.replaceChildren();
    pieces.forEach((p, i) => {
      if (!p.spans.length) { out.append(texts[i]); return; }
      const longest = p.spans.reduce((x, y) => (y.end - y.start > x.end - x.start ? y : x));
      const seg = el("span", { class: "seg hit", title: `${longest.end - longest.start} tokens, ${fmt(longest.count)} occurrences`,
                               "data-len": longest.end - longest.start, "data-count": longest.count,
                               "data-start": longest.start, "data-end": longest.end, "data-from": p.a, "data-to": p.b },
                       texts[i]);
      seg.style.background = color(longest.end - longest.start, minLen, maxLen);
      seg.addEventListener("click", () => showSources(seg, p.spans));
      out.append(seg);
    });
    $("attr-docs").hidden = true;
    $("attr-tab").dataset.done = "1";
  } catch (err) {
    showError(err);
  }
}

async function showSources(seg, spans) {
  document.querySelectorAll(".seg.selected").forEach((s) => s.classList.remove("selected"));
  seg.classList.add("selected");
  const box = $("attr-docs");
  box.replaceChildren(el("h2", {}, "Source documents"));
  for (const s of [...spans].sort((x, y) => (y.end - y.start) - (x.end - x.start))) {
    const len = s.end - s.start;
    box.append(el("div", { class: "span-info" }, el("mark", {}, await detok(s.token_ids)),
                  el("span", { class: "muted" }, `  ${len} tokens, ${fmt(s.count)} occurrence${s.count === 1 ? "" : "s"}`)));
    const list = el("ol", { class: "docs" });
    for (const d of s.documents) {
      list.append(el("li", { class: "doc", "data-doc-ix": d.doc_ix },
                     el("div", { class: "doc-head" }, `document ${d.doc_ix}` + (d.metadata_json ? ` · ${d.metadata_json}` : "")),
                     await snippet(d.token_ids, d.needle_offset, Math.min(len, d.disp_len - d.needle_offset))));
    }
    box.append(list);
  }
  box.hidden = false;
}

// ------------------------------------------------------------------------------------------------
// Start

function switchTab(id) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === id));
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== id; });
}

async function loadInfo() {
  try {
    state.info = await api("get_index_info", {});
    const i = state.info;
    $("index-info").textContent = `${fmt(i.num_tokens)} tokens · ${fmt(i.num_docs)} documents · ${i.num_shards} shard(s) · ` +
      (i.has_tokenizer ? `tokenizer ${i.tokenizer_kind}` : "no tokenizer: query with token ids");
    if (!i.has_tokenizer) $("as-ids").checked = true;
  } catch (err) {
    $("index-info").textContent = "";
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("query-form").addEventListener("submit", runQuery);
  $("attr-form").addEventListener("submit", runAttribution);
  $("auth-token").addEventListener("change", () => { localStorage.setItem("ngram-token", $("auth-token").value); loadInfo(); });
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => switchTab(t.dataset.tab)));
  loadInfo();
});
