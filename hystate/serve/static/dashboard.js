// The dashboard's live part. Everything shown comes from the server as JSON and is put in the
// page with textContent and attributes only (never innerHTML): titles and errors are text.
"use strict";
(function () {
  const initial = JSON.parse(document.getElementById("initial").textContent);
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const list = { q: "", stage: "", year: "", page: 1, pages: initial.page.pages };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function episodeLink(id, label) {
    const a = el("a", label === undefined ? id : label);
    a.href = "/episodes/" + encodeURIComponent(id);
    return a;
  }
  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
      tr.appendChild(td);
    }
    return tr;
  }
  function withTitle(id, title) {
    const frag = document.createDocumentFragment();
    frag.appendChild(episodeLink(id));
    frag.appendChild(el("div", title || "", "muted"));
    return frag;
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function drawChart(chart) {
    const box = $("chart"), legend = $("legend");
    const parts = [], keys = [];
    if (!chart) {
      parts.push(svg("text", { x: 380, y: 130, "text-anchor": "middle" }, "no progress yet"));
    } else {
      for (const [y, label] of chart.y_labels) {
        parts.push(svg("line", { x1: 48, x2: 750, y1: y, y2: y, class: "grid" }));
        parts.push(svg("text", { x: 44, y: y + 4, "text-anchor": "end" }, label));
      }
      chart.x_labels.forEach(([x, label], i) => {
        const anchor = i === 0 ? "start" : (i === chart.x_labels.length - 1 ? "end" : "middle");
        parts.push(svg("text", { x: x, y: 252, "text-anchor": anchor }, label));
      });
      for (const line of chart.lines) {
        const p = svg("polyline", { fill: "none", stroke: line.colour, "stroke-width": 2, points: line.points });
        p.appendChild(svg("title", {}, line.name + ": " + line.last));
        parts.push(p);
        keys.push(el("span", "■", "key-" + line.name), document.createTextNode(" " + line.name + " (" + line.last + ") "));
      }
    }
    box.replaceChildren(...parts);
    legend.replaceChildren(...keys);
  }

  // The counts shown: the last status (computed by the server for one HEAD) plus what each
  // commit the page was sent after that HEAD did, read from the commit's own trailers. So a
  // commit moves the counts the moment it arrives; the next status replaces the estimate.
  let base = { counts: Object.assign({}, initial.status.counts), total: initial.status.total };
  let pending = [];
  function showCounts() {
    const counts = Object.assign({}, base.counts);
    let total = base.total;
    for (const c of pending) {
      if (c.from && c.to && c.from in counts && c.to in counts) { counts[c.from] -= 1; counts[c.to] += 1; }
      else if (!c.from && c.to === "discovered") { const n = parseInt(c.count || "1", 10) || 1; counts.discovered += n; total += n; }
    }
    $("total").textContent = total;
    for (const [stage, n] of Object.entries(counts)) {
      const cell = $("count-" + stage), bar = $("bar-" + stage);
      if (cell) cell.textContent = n;
      if (bar) { bar.max = total || 1; bar.value = n; }
    }
  }

  function applyStatus(s) {
    if (s.counts && Object.keys(s.counts).length) {
      const at = pending.findIndex((c) => c.sha === s.head);
      pending = at >= 0 ? pending.slice(at + 1) : pending;  // not found: all came after it
      base = { counts: Object.assign({}, s.counts), total: s.total };
      showCounts();
    }
    $("head").textContent = (s.head || "none").slice(0, 12);
    $("generated").textContent = s.generated_at || "";
    $("error").hidden = !s.error;
    $("error").textContent = s.error || "";
    if (s.error) return;
    $("completion").textContent = s.completion_percentage + "%";
    $("per-day").textContent = s.per_day === null ? "–" : s.per_day;
    const when = (t) => t.slice(0, 16).replace("T", " ");
    $("eta").textContent = s.finished ? "done" : (s.estimated_completion ? when(s.estimated_completion) : "–");
    $("eta-range").textContent = s.finished
      ? "nothing left to do" + (s.estimated_completion ? "; last episode done " + when(s.estimated_completion) : "")
      : (s.eta_p50 ? "p50 " + s.eta_p50.slice(0, 10) + " · p90 " + (s.eta_p90 || "?").slice(0, 10) : (s.eta_note || ""));
    fill($("throughput"), (s.throughput || []).map((t) => row([t.period, t.downloaded, t.converted, t.uploaded, t.published, t.failed])));
    $("failed-now").textContent = "(" + (s.failed_now || 0) + " episodes failed now)";
    fill($("failures"), (s.recent_failures || []).map((f) => {
      const r = row([f.at, withTitle(f.episode_id, f.title), f.stage, f.error, f.recovered ? "recovered: " + f.now : (f.now || "")]);
      r.children[3].className = f.recovered ? "muted" : "err";
      if (f.recovered) r.className = "recovered";
      return r;
    }));
    fill($("stuck"), (s.stuck || []).map((x) => row([withTitle(x.episode_id, x.title), x.stage, x.reason])));
    $("stuck-total").textContent = "(" + (s.stuck_total || 0) + ")";
    $("skipped-total").textContent = s.skipped_total || 0;
    drawChart(s.chart);
  }

  function showPage(p) {
    list.pages = p.pages;
    fill($("episodes"), p.items.map((e) => {
      const first = document.createDocumentFragment();
      first.appendChild(episodeLink(e.episode_id));
      first.appendChild(el("div", e.title, "title"));
      const r = row([first, e.date, e.stage, e.last_updated, e.stage === "failed" ? e.last_error : (e.status_message || "")]);
      r.dataset.id = e.episode_id;
      r.children[2].className = "stage";
      return r;
    }));
    $("page-info").textContent = "page " + p.page + " of " + p.pages + " (" + p.total + " episodes)";
    $("prev").disabled = p.page <= 1;
    $("next").disabled = p.page >= p.pages;
  }

  let listRequest = 0;
  async function loadList() {
    const ticket = ++listRequest;
    const params = new URLSearchParams({ page: String(list.page) });
    if (list.q) params.set("q", list.q);
    if (list.stage) params.set("stage", list.stage);
    if (list.year) params.set("year", list.year);
    const response = await fetch("/api/episodes?" + params.toString());
    if (!response.ok || ticket !== listRequest) return;
    showPage(await response.json());
  }
  async function loadStatus() {
    const response = await fetch("/api/status");
    if (response.ok) applyStatus(await response.json());
  }

  function addCommit(c) {
    pending.push(c);
    if (pending.length > 5000) pending.shift();
    showCounts();
    if (c.episode_id && c.to) {
      const cell = document.querySelector('#episodes tr[data-id="' + CSS.escape(c.episode_id) + '"] .stage');
      if (cell) cell.textContent = c.to;
    }
    const li = el("li", null, "new");
    li.dataset.sha = c.sha;
    if (c.episode_id) li.dataset.episode = c.episode_id;
    li.appendChild(el("code", c.sha.slice(0, 8)));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(c.episode_id ? episodeLink(c.episode_id, c.subject) : el("span", c.subject));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", (c.author || "") + " · " + (c.at || ""), "muted"));
    const feed = $("feed");
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > 50) feed.removeChild(feed.lastChild);
  }

  let timer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { list.q = $("search").value; list.page = 1; loadList(); }, 200);
  });
  $("stage").addEventListener("change", () => { list.stage = $("stage").value; list.page = 1; loadList(); });
  $("year").addEventListener("change", () => { list.year = $("year").value; list.page = 1; loadList(); });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); });
  $("prev").addEventListener("click", () => { if (list.page > 1) { list.page -= 1; loadList(); } });
  $("next").addEventListener("click", () => { if (list.page < list.pages) { list.page += 1; loadList(); } });
  showPage(initial.page);
  if (initial.status.chart !== undefined) drawChart(initial.status.chart);

  let connected = false;
  // The first connection starts from the HEAD the page was rendered at (no commit missed in
  // between); reconnections send the browser's Last-Event-ID.
  const since = initial.status.head ? "?last_event_id=" + encodeURIComponent(initial.status.head) : "";
  const events = new EventSource("/events" + since);
  const live = $("live");
  events.addEventListener("hello", () => {
    live.textContent = "live"; live.className = "live on";
    if (connected) loadList();  // a reconnect: the missed commits were replayed; the list may differ
    connected = true;
  });
  events.addEventListener("commit", (e) => addCommit(JSON.parse(e.data)));
  events.addEventListener("status", (e) => { applyStatus(JSON.parse(e.data)); loadList(); });
  events.addEventListener("reset", () => { pending = []; loadStatus(); loadList(); });
  events.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  window.hystate = { events: events };
})();
