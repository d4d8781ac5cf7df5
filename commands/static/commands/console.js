// The admin console: run a whitelisted command from a server's page, or follow a running
// execution from its audit page. Plain JS, no framework. The configuration comes from the
// page (json_script "homelab-console"): the rules, the URLs and the CSRF token.
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
    constructor(onEnd) {
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
      if (result.error_code) facts.push(["error", `${result.error_code}: ${result.error_detail}`]);
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
      this.result.replaceChildren(list, link);
    }

    showRefusal(body) {
      this.setStatus("refused");
      const note = document.createElement("p");
      note.className = "errornote";
      note.textContent = `${body.detail} (${body.code})`;
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

  // --- the Run panel of a server's page ---------------------------------------------------
  function runPanel() {
    const select = $("run-rule");
    if (!select) return; // no rule usable on this server
    const rules = new Map(config.rules.map((rule) => [rule.action_type, rule]));
    const paramsBox = $("run-params");
    const argv = $("run-argv");
    const problem = $("run-problem");
    const runButton = $("run-button");
    let inputs = [];
    let ready = null; // {action_type, command} once the server accepted the preview
    let running = false;
    let sequence = 0;
    let timer = null;
    const view = new LiveView(() => {
      running = false;
      runButton.disabled = ready === null;
    });

    function buildInputs() {
      const rule = rules.get(select.value);
      $("run-template").textContent = `Template: ${rule.template}`;
      paramsBox.replaceChildren();
      inputs = rule.parameters.map((parameter) => {
        const row = document.createElement("div");
        row.className = "form-row";
        const line = document.createElement("div");
        line.className = "flex-container";
        const label = document.createElement("label");
        label.htmlFor = `run-param-${parameter.name}`;
        label.textContent = `${parameter.name}:`;
        const input = document.createElement("input");
        input.type = "text";
        input.id = `run-param-${parameter.name}`;
        input.name = parameter.name;
        input.autocomplete = "off";
        input.addEventListener("input", schedulePreview);
        const mark = document.createElement("span");
        mark.className = "param-mark";
        mark.id = `run-param-${parameter.name}-mark`;
        line.append(label, input, mark);
        const help = document.createElement("div");
        help.className = "help";
        const pattern = document.createElement("code");
        pattern.textContent = parameter.pattern;
        help.append("Pattern: ", pattern);
        row.append(line, help);
        paramsBox.appendChild(row);
        return { input, mark };
      });
      schedulePreview();
    }

    function schedulePreview() {
      ready = null;
      sequence++; // a preview already on its way answers for what was typed before
      runButton.disabled = true;
      clearTimeout(timer);
      timer = setTimeout(preview, 150);
    }

    async function preview() {
      const mine = ++sequence;
      const action = select.value; // the rule this preview is for, whatever changes meanwhile
      const query = new URLSearchParams({ action_type: action });
      for (const { input } of inputs) query.append(`param.${input.name}`, input.value);
      let response;
      let body;
      try {
        response = await fetch(`${config.preview_url}?${query}`, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        body = await jsonOf(response);
      } catch (error) {
        if (mine === sequence) showProblem(`Could not check the command: ${error}`);
        return;
      }
      if (mine !== sequence) return; // a newer keystroke has its own preview on the way
      if (response.redirected) {
        // The session ended: the admin answered with its login page, not a preview.
        argv.textContent = "";
        showProblem("Your admin session has ended; log in again (reload the page).");
        return;
      }
      for (const { input, mark } of inputs) {
        const why = (body.problems || {})[input.name];
        input.setAttribute("aria-invalid", why ? "true" : "false");
        mark.className = `param-mark ${why ? "param-bad" : "param-ok"}`;
        mark.textContent = why ? `✗ ${why}` : "✓";
      }
      if (response.ok && Array.isArray(body.argv)) {
        argv.textContent = JSON.stringify(body.argv);
        argv.title = body.sent;
        showProblem("");
        ready = { action_type: action, command: body.command };
        runButton.disabled = running;
      } else {
        argv.textContent = "";
        showProblem(body.detail || `HTTP ${response.status}: the preview did not answer.`);
      }
    }

    function showProblem(text) {
      problem.textContent = text;
      problem.hidden = !text;
    }

    async function run() {
      if (ready === null || running) return;
      running = true;
      runButton.disabled = true;
      view.reset();
      view.setStatus("starting...");
      let response;
      try {
        response = await post(config.execute_url, { ...ready, wait: false });
      } catch (error) {
        view.showRefusal({ detail: `The request failed: ${error}`, code: "network" });
        view.end();
        return;
      }
      const body = await jsonOf(response);
      if (response.status !== 202) {
        view.showRefusal(body);
        view.end();
        return;
      }
      view.follow(body.execution_id, body.stream);
    }

    select.addEventListener("change", buildInputs);
    runButton.addEventListener("click", run);
    buildInputs();
  }

  // --- a running execution's audit page ---------------------------------------------------
  function executionPanel() {
    const view = new LiveView(() => {});
    view.follow(config.execution_id, config.stream);
    view.auditLink.hidden = true; // this page is the audit row
  }

  if (config.mode === "server") runPanel();
  else if (config.mode === "execution") executionPanel();
})();
