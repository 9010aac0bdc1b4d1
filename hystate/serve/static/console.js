// The operator's console: the work in progress on the dashboard, the actions on an episode's
// page (each shown as its dry run in a dialog before it is confirmed), the workers' timelines.
// Everything shown comes from the server as JSON and is put in the page with textContent and
// attributes only (never innerHTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  function cell(content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content === null || content === undefined ? "" : String(content);
    return td;
  }
  function link(id) {
    const a = document.createElement("a");
    a.href = "/episodes/" + encodeURIComponent(id);
    a.textContent = id;
    return a;
  }
  function age(seconds) {
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  // -- the work in progress (dashboard) ---------------------------------------------------
  const progress = $("in-progress");
  if (progress) {
    const refresh = () => fetch("/api/in-progress", { headers: { Accept: "application/json" } })
      .then((r) => r.ok ? r.json() : Promise.reject(r.status))
      .then((rows) => {
        progress.replaceChildren(...rows.map((x) => {
          const tr = document.createElement("tr");
          tr.dataset.episode = x.episode_id;
          if (x.stuck) tr.className = "stuck";
          for (const c of [link(x.episode_id), x.stage, x.worker || "?", x.since, x.lease_expires_at,
            age(x.heartbeat_age_seconds), x.stuck ? "stuck: " + x.stuck : "working"]) tr.appendChild(cell(c));
          return tr;
        }));
        $("in-progress-total").textContent = "(" + rows.length + ")";
      })
      .catch(() => {});
    refresh();
    setInterval(refresh, 2000);
  }

  // -- actions (an episode's page) --------------------------------------------------------
  const panel = $("actions");
  if (panel) {
    const id = document.body.dataset.episode;
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const dialog = $("confirm");
    let pending = null;
    const post = (action, dryRun) => {
      const body = { dry_run: dryRun };
      if (action === "skip") body.reason = $("skip-reason").value;
      return fetch("/console/" + action + "/" + encodeURIComponent(id), {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
        credentials: "same-origin",
      }).then((r) => r.json().then((data) => ({ ok: r.ok, data: data })));
    };
    const show = (action, plan) => {
      $("confirm-title").textContent = action + " " + id + "?";
      $("confirm-move").textContent = plan.from + " → " + plan.to + " (dry run: nothing written yet)";
      $("confirm-message").textContent = plan.commit_message;
      const diff = $("confirm-diff");
      diff.replaceChildren(...plan.diff.split("\n").map((line) => {
        const span = document.createElement("span");
        span.textContent = line + "\n";
        if (line.startsWith("+") && !line.startsWith("+++")) span.className = "add";
        else if (line.startsWith("-") && !line.startsWith("---")) span.className = "del";
        return span;
      }));
      $("confirm-error").textContent = "";
      pending = action;
      dialog.showModal();
    };
    for (const button of panel.querySelectorAll("button.act")) {
      button.addEventListener("click", () => {
        const action = button.dataset.action;
        $("action-result").textContent = "";
        post(action, true).then((res) => {
          if (res.ok) show(action, res.data);
          else $("action-result").textContent = action + " refused: " + (res.data.error || "error");
        });
      });
    }
    $("confirm-no").addEventListener("click", () => { pending = null; dialog.close(); });
    $("confirm-yes").addEventListener("click", () => {
      const action = pending;
      if (!action) return;
      post(action, false).then((res) => {
        if (!res.ok) { $("confirm-error").textContent = res.data.error || "error"; return; }
        pending = null;
        dialog.close();
        $("action-result").textContent = action + " done: " + res.data.from + " → " + res.data.to + " in " + (res.data.commit || "").slice(0, 10);
        setTimeout(() => window.location.reload(), 300);
      });
    });
  }

  // -- the workers' timelines --------------------------------------------------------------
  const data = $("timeline-data");
  if (data) {
    const t = JSON.parse(data.textContent);
    const from = Date.parse(t.from), to = Date.parse(t.to);
    const span = Math.max(to - from, 1000);
    const x = (stamp) => 1000 * (Date.parse(stamp) - from) / span;
    for (const box of document.querySelectorAll("svg.timeline")) {
      const worker = t.workers.find((w) => w.worker === box.dataset.worker);
      if (!worker) continue;
      for (const run of worker.runs) {
        const start = x(run.start), end = run.end ? x(run.end) : 1000;
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", String(start));
        rect.setAttribute("width", String(Math.max(end - start, 1.5)));
        rect.setAttribute("y", "3");
        rect.setAttribute("height", "18");
        rect.setAttribute("class", "run " + (run.outcome === null ? "open" : (run.outcome === "failed" ? "failed" : "done")));
        const title = document.createElementNS(SVG, "title");
        title.textContent = run.episode_id + ": " + run.stage + " " + run.start + " → " + (run.end || "running") + (run.outcome ? " (" + run.outcome + ")" : "");
        rect.appendChild(title);
        box.appendChild(rect);
      }
    }
  }
})();
