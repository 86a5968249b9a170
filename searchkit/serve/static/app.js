// The search page: one form, results rendered with DOM calls (document text is never parsed as HTML).
// When the server logs feedback (its answers carry a request_id), a click on a result's title is sent to /feedback.
"use strict";

const $ = (id) => document.getElementById(id);
const SNIPPET = 300;
let token = sessionStorage.getItem("searchkit-token") || "";

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let payload = null;
  try {
    payload = await response.json();
  } catch (err) {
    payload = null;
  }
  if (response.status === 401) $("token-box").hidden = false;
  if (!response.ok) throw new Error((payload && payload.detail) || response.status + " " + response.statusText);
  return payload;
}

function showStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadHealth() {
  try {
    const health = await api("GET", "/health");
    const mode = $("mode");
    mode.options[0].textContent = "default (" + health.default_mode + ")";
    for (const name of health.modes) mode.append(new Option(name, name));
    const rerank = $("rerank");
    rerank.disabled = !health.models.reranker;
    rerank.checked = !rerank.disabled;
    const index = health.index;
    $("index-info").textContent =
      index.num_docs + " documents · " + Object.keys(index.components).join(" + ") +
      " · index " + index.fingerprint.slice(0, 12) + " · searchkit " + health.version;
  } catch (err) {
    showStatus(err.message, true);
  }
}

function renderStages(stages) {
  const table = element("table", "stages");
  const head = table.createTHead().insertRow();
  for (const title of ["stage", "rank", "score"]) head.append(element("th", "", title));
  const body = table.createTBody();
  for (const [name, stage] of Object.entries(stages)) {
    const row = body.insertRow();
    row.dataset.stage = name;
    row.append(element("td", "", name));
    row.append(element("td", "", stage.rank === null ? "—" : "#" + stage.rank));
    row.append(element("td", "", stage.score === null ? "—" : stage.score.toFixed(4)));
  }
  return table;
}

async function sendClick(answer, hit, item) {
  try {
    await api("POST", "/feedback", { request_id: answer.request_id, doc_id: hit.doc_id, rank: hit.rank, type: "click" });
    item.classList.add("clicked");
    item.dataset.clicked = String(Number(item.dataset.clicked || "0") + 1);
  } catch (err) {
    showStatus("click not recorded: " + err.message, true);
  }
}

function render(answer, explain) {
  const results = $("results");
  results.replaceChildren();
  const took = answer.took_ms.toFixed(1);
  const how = "mode " + answer.mode + (answer.rerank ? " + rerank" : "");
  showStatus(answer.hits.length + " hits · " + how + " · " + took + " ms", false);
  for (const hit of answer.hits) {
    const item = element("li", "hit");
    item.dataset.docId = hit.doc_id;
    const line = element("div", "line");
    line.append(element("span", "rank", "#" + hit.rank));
    const title = element("a", "title", hit.title || hit.doc_id);
    title.href = "#" + encodeURIComponent(hit.doc_id);
    title.addEventListener("click", (event) => {
      event.preventDefault();
      if (answer.request_id) sendClick(answer, hit, item);
    });
    line.append(title);
    line.append(element("span", "doc-id", hit.doc_id));
    line.append(element("span", "score", hit.score.toFixed(4)));
    item.append(line);
    const text = hit.text || "";
    item.append(element("p", "snippet", text.length > SNIPPET ? text.slice(0, SNIPPET) + "…" : text));
    if (explain && hit.stages) item.append(renderStages(hit.stages));
    results.append(item);
  }
}

async function search(event) {
  if (event) event.preventDefault();
  const query = $("query").value;
  if (!query.trim()) {
    showStatus("type a query", true);
    return;
  }
  token = $("token").value || token;
  if (token) sessionStorage.setItem("searchkit-token", token);
  const explain = $("explain").checked;
  const body = { query, k: Number($("k").value), fields: ["title", "text"] };
  if ($("mode").value) body.mode = $("mode").value;
  const filter = $("filter").value.split(";").map((part) => part.trim()).filter((part) => part);
  if (filter.length) body.filter = filter;
  if (!$("rerank").disabled) body.rerank = $("rerank").checked;
  showStatus("searching…", false);
  try {
    render(await api("POST", explain ? "/explain" : "/search", body), explain);
  } catch (err) {
    $("results").replaceChildren();
    showStatus(err.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", search);
  for (const id of ["mode", "k", "rerank", "explain", "filter"]) {
    $(id).addEventListener("change", () => {
      if ($("query").value.trim()) search();
    });
  }
  loadHealth();
});
