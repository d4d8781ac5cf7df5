// The admin console: follow one execution live (a running execution's audit page, and the
// server page's runs), with the HTTP helpers the server page's Run panel (run-panel.js)
// shares. Plain JS, no framework. The configuration comes from the page (json_script
// "homelab-console"): the URLs and the CSRF token, and on a server's page its name and
// rules.
//
// Output is untrusted (it comes from the server, and whoever controls it): it only ever
// enters the page as textContent, never as HTML.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("homelab-console").textContent);
  const $ = (id) => document.getElementById(id);

  // --- HTTP -------------------------------------------------------------------------------
  function post(url, body) {
    // The session authenticates (same origin); DRF then wants the CSRF token as a header.
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": config.csrf_token,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  async function jsonOf(response) {
    try {
      return await response.json();
    } catch (error) {
      return { detail: `HTTP ${response.status} without a JSON body.`, code: "error" };
    }
  }

  function urlFor(template, id) {
    return template.replace("__id__", String(id));
  }

  // The stored stdout/stderr never hold a marker: how much the row left out of a stream's
  // middle is its *_cut_bytes field (docs/streaming.md), shown here.
  function truncatedFact(result, stream) {
    const cut = result[`${stream}_cut_bytes`] || 0;
    if (cut > 0) return `yes [... ${cut} bytes cut ...]`;
    return result[`${stream}_truncated`] ? "yes" : "no";
  }

  // --- one execution, live ----------------------------------------------------------------
  // Shows one execution in the live_output.html elements: output as it arrives, then the
  // result; Cancel while it runs.
  class LiveView {
    // hooks: hint(code), a node saying an error's fix better than its detail, or null;
    // onResult(result), told of the result frame (the server page's list of executions).
    constructor(onEnd, hooks = {}) {
      this.hint = hooks.hint || (() => null);
      this.onResult = hooks.onResult || (() => {});
      this.output = $("run-output");
      this.result = $("run-result");
      this.status = $("run-status");
      this.auditLink = $("run-audit-link");
      this.cancelButton = $("cancel-button");
      this.onEnd = onEnd || (() => {});
      this.executionId = null;
      this.socket = null;
      this.ended = true;
      if (this.cancelButton) {
        this.cancelButton.addEventListener("click", () => this.cancel());
      }
    }

    reset() {
      this.output.textContent = "";
      this.result.textContent = "";
      this.status.textContent = "";
      this.auditLink.hidden = true;
    }

    setStatus(text) {
      this.status.textContent = text;
    }

    follow(executionId, streamPath) {
      this.executionId = executionId;
      this.ended = false;
      this.setStatus(`running (execution ${executionId})`);
      this.auditLink.href = urlFor(config.audit_url, executionId);
      this.auditLink.textContent = `audit row #${executionId}`;
      this.auditLink.hidden = false;
      if (this.cancelButton) this.cancelButton.disabled = false;
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      // Same origin: the session cookie authenticates the socket (docs/streaming.md).
      this.socket = new WebSocket(`${scheme}//${window.location.host}${streamPath}`);
      this.socket.onmessage = (event) => this.frame(JSON.parse(event.data));
      this.socket.onclose = (event) => {
        if (!this.ended) {
          this.end();
          this.setStatus(
            `the stream closed (code ${event.code}) before the result; open the audit row`,
          );
        }
      };
    }

    frame(frame) {
      if (frame.type === "output") {
        this.append(frame.stream, frame.data);
      } else if (frame.type === "truncated") {
        this.append("note", `\n[${frame.stream}: stream limit reached; the rest is not shown]\n`);
      } else if (frame.type === "result") {
        this.showResult(frame);
        this.end();
      }
    }

    append(stream, text) {
      const atBottom =
        this.output.scrollTop + this.output.clientHeight >= this.output.scrollHeight - 4;
      const piece = document.createElement("span");
      piece.className = `stream-${stream}`;
      piece.textContent = text;
      this.output.appendChild(piece);
      if (atBottom) this.output.scrollTop = this.output.scrollHeight;
    }

    showResult(result) {
      this.setStatus(result.status);
      const facts = [
        ["status", result.status],
        ["exit code", result.exit_code === null ? "none" : String(result.exit_code)],
        ["duration", result.duration_ms === null ? "unknown" : `${result.duration_ms} ms`],
        ["stdout truncated", truncatedFact(result, "stdout")],
        ["stderr truncated", truncatedFact(result, "stderr")],
      ];
      // The hint takes the place of the detail: it says the fix as this page offers it.
      const hint = this.hint(result.error_code);
      if (result.error_code) {
        const detail = hint ? "" : `: ${result.error_detail}`;
        facts.push(["error", `${result.error_code}${detail}`]);
      }
      const list = document.createElement("dl");
      for (const [name, value] of facts) {
        const term = document.createElement("dt");
        term.textContent = name;
        const detail = document.createElement("dd");
        detail.textContent = value;
        detail.dataset.fact = name;
        list.append(term, detail);
      }
      const link = document.createElement("a");
      link.href = urlFor(config.audit_url, result.execution_id);
      link.textContent = `Audit row #${result.execution_id}`;
      link.id = "run-result-audit";
      this.result.replaceChildren(...(hint ? [hint] : []), list, link);
      this.onResult(result);
    }

    showRefusal(body) {
      this.setStatus("refused");
      const note = this.hint(body.code) || document.createElement("p");
      note.classList.add("errornote");
      if (!note.textContent) note.textContent = `${body.detail} (${body.code})`;
      this.result.replaceChildren(note);
    }

    end() {
      this.ended = true;
      if (this.cancelButton) this.cancelButton.disabled = true;
      this.onEnd();
    }

    async cancel() {
      if (this.executionId === null || this.ended) return;
      this.cancelButton.disabled = true;
      this.setStatus("cancelling...");
      let response;
      try {
        response = await post(urlFor(config.cancel_url, this.executionId));
      } catch (error) {
        this.setStatus(`cancel failed: ${error}`);
        this.cancelButton.disabled = false;
        return;
      }
      const body = await jsonOf(response);
      if (response.status === 200) {
        this.setStatus(body.status); // normally "cancelled"; the result frame follows
      } else if (response.status === 202) {
        this.setStatus("cancel requested; the process running it has not confirmed yet");
      } else {
        this.setStatus(`cancel refused: ${body.detail}`);
        if (!this.ended) this.cancelButton.disabled = false;
      }
    }
  }

  // --- a running execution's audit page ---------------------------------------------------
  function executionPanel() {
    const view = new LiveView(() => {});
    view.follow(config.execution_id, config.stream);
    view.auditLink.hidden = true; // this page is the audit row
  }

  // For the server page's Run panel (run-panel.js, loaded after this file).
  window.homelabConsole = { config, $, post, jsonOf, urlFor, LiveView };
  if (config.mode === "execution") executionPanel();
})();
