// A batch's page in the admin: one pane per server, filled from ws/v1/batches/{id}/ (the
// session authenticates, same origin). Output is untrusted: it only ever enters the page
// as textContent. The configuration comes from json_script "homelab-fleet".
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("homelab-fleet").textContent);
  const panes = new Map();
  document.querySelectorAll(".homelab-pane").forEach((pane) => {
    panes.set(pane.dataset.server, pane);
  });
  const part = (pane, role) => pane.querySelector(`[data-role="${role}"]`);
  const status = document.getElementById("batch-status");
  const counts = document.getElementById("batch-counts");
  const cancel = document.getElementById("batch-cancel");

  function setChip(chip, value) {
    chip.textContent = value;
    chip.dataset.status = value;
  }

  function append(pane, stream, text) {
    const piece = document.createElement("span");
    piece.className = `stream-${stream}`;
    piece.textContent = text;
    part(pane, "output").appendChild(piece);
  }

  function showResult(frame) {
    const pane = panes.get(frame.server);
    if (!pane) return;
    setChip(part(pane, "status"), frame.status);
    if (frame.execution_id) {
      const link = part(pane, "audit");
      link.href = config.audit_url.replace("__id__", String(frame.execution_id));
      link.hidden = false;
    }
    if (frame.code && frame.status !== "succeeded") {
      append(pane, "note", `\n[${frame.code}]`);
    }
  }

  function showSummary(frame) {
    setChip(status, frame.status);
    const parts = Object.entries(frame.counts)
      .filter(([, count]) => count > 0)
      .map(([name, count]) => `${count} ${name}`);
    counts.textContent = parts.join(", ");
    if (cancel) cancel.hidden = true;
  }

  function onFrame(frame) {
    if (frame.type === "summary") return showSummary(frame);
    const pane = panes.get(frame.server);
    if (!pane) return;
    if (frame.type === "output") {
      setChip(part(pane, "status"), "running");
      append(pane, frame.stream, frame.data);
    } else if (frame.type === "truncated") {
      append(pane, "note", `\n[the rest of ${frame.stream} is not streamed]\n`);
    } else if (frame.type === "result") {
      showResult(frame);
    }
  }

  function follow() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}${config.stream}`);
    socket.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      if (event.code !== 1000) counts.textContent = `(stream closed: ${event.code})`;
    });
  }

  if (cancel) {
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      const response = await fetch(config.cancel_url, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": config.csrf_token },
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        counts.textContent = body.detail || `Cancel failed (HTTP ${response.status}).`;
        cancel.disabled = false;
      }
    });
  }
  follow();
})();
