// The admin console: run a whitelisted command from a server's page, or follow a running
// execution from its audit page. Plain JS, no framework. The configuration comes from the
// page (json_script "homelab-console"): the server's name, the rules, the URLs and the CSRF
// token.
//
// Nothing is preselected: Run stays off until a rule is chosen and the server accepted its
// preview. A rule flagged `confirm` runs only from the confirmation dialog, once the
// server's name is typed; the API refuses a session's run of such a rule without
// "confirm": true (400 confirmation_required), so no page can skip the dialog.
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

  // What this page can say better than an error's detail, by its code (never its HTTP
  // status, which may change). host_key_unknown's detail names `./manage.py trusthost`,
  // right for the CLI; here the same page has a Pin host key button.
  function hintFor(code) {
    if (code !== "host_key_unknown" || config.mode !== "server") return null;
    const hint = document.createElement("p");
    hint.className = "homelab-hint";
    hint.id = "run-hint";
    if (config.pin_url) {
      const link = document.createElement("a");
      link.href = config.pin_url;
      link.textContent = "Pin host key";
      link.id = "run-hint-pin";
      hint.append(
        `Nothing ran: ${config.server} has no usable pinned host key. Use `,
        link,
        " (top right of this page): it shows the key the server presents and its " +
          "fingerprint, to compare with the server's before you pin it.",
      );
    } else {
      hint.textContent =
        `Nothing ran: ${config.server} has no usable pinned host key. Ask an admin who ` +
        "may change servers to pin it with Pin host key on this page.";
    }
    return hint;
  }

  // --- the server's last executions (the list beside the panels) --------------------------
  const recent = {
    rows: $("recent-rows"),
    chips: {
      running: "running",
      succeeded: "ok",
      failed: "bad",
      timeout: "bad",
      error: "bad",
    },
    chip(status) {
      const chip = document.createElement("span");
      chip.className = `chip chip-${this.chips[status] || "quiet"}`;
      chip.textContent = status;
      return chip;
    },
    add(executionId, actionType) {
      if (!this.rows) return;
      const row = document.createElement("tr");
      row.dataset.execution = String(executionId);
      const cells = [0, 1, 2, 3].map(() => document.createElement("td"));
      const link = document.createElement("a");
      link.href = urlFor(config.audit_url, executionId);
      link.textContent = `#${executionId}`;
      cells[0].append(link);
      cells[1].textContent = actionType;
      cells[2].append(this.chip("running"));
      cells[3].textContent = "just now";
      row.append(...cells);
      this.rows.prepend(row);
      while (this.rows.children.length > 10) this.rows.lastElementChild.remove();
      const none = $("recent-none");
      if (none) none.hidden = true;
    },
    update(executionId, status) {
      if (!this.rows) return;
      const row = this.rows.querySelector(`tr[data-execution="${Number(executionId)}"]`);
      if (row) row.children[2].replaceChildren(this.chip(status));
    },
  };

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
        ["stdout truncated", result.stdout_truncated ? "yes" : "no"],
        ["stderr truncated", result.stderr_truncated ? "yes" : "no"],
      ];
      // The hint takes the place of the detail: it says the fix as this page offers it.
      const hint = hintFor(result.error_code);
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
      recent.update(result.execution_id, result.status);
    }

    showRefusal(body) {
      this.setStatus("refused");
      const note = hintFor(body.code) || document.createElement("p");
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
    let ready = null; // {action_type, command, argv} once the server accepted the preview
    let running = false;
    let sequence = 0;
    let timer = null;
    const view = new LiveView(() => {
      running = false;
      runButton.disabled = ready === null;
    });
    const confirmation = confirmDialog(start);

    function buildInputs() {
      const rule = rules.get(select.value);
      sequence++; // whatever preview is on its way answers for the rule chosen before
      clearTimeout(timer);
      ready = null;
      runButton.disabled = true;
      paramsBox.replaceChildren();
      inputs = [];
      argv.textContent = "";
      showProblem("");
      if (rule === undefined) {
        // "Choose a command…": nothing to preview, nothing to run.
        $("run-template").textContent = "";
        return;
      }
      $("run-template").textContent = `Template: ${rule.template}`;
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
        ready = { action_type: action, command: body.command, argv: body.argv, sent: body.sent };
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

    function run() {
      if (ready === null || running) return;
      const rule = rules.get(ready.action_type);
      if (rule && rule.confirm) confirmation.open(ready);
      else start(ready, false);
    }

    async function start(chosen, confirmed) {
      if (running) return;
      running = true;
      runButton.disabled = true;
      view.reset();
      view.setStatus("starting...");
      const body = { action_type: chosen.action_type, command: chosen.command, wait: false };
      if (confirmed) body.confirm = true;
      let response;
      try {
        response = await post(config.execute_url, body);
      } catch (error) {
        view.showRefusal({ detail: `The request failed: ${error}`, code: "network" });
        view.end();
        return;
      }
      const answer = await jsonOf(response);
      if (response.status !== 202) {
        view.showRefusal(answer);
        view.end();
        return;
      }
      recent.add(answer.execution_id, chosen.action_type);
      view.follow(answer.execution_id, answer.stream);
    }

    select.addEventListener("change", buildInputs);
    runButton.addEventListener("click", run);
    // A browser may restore the last choice on back/forward: start from none all the same.
    select.value = "";
    buildInputs();
  }

  // The confirmation of a rule flagged `confirm`, as GitHub asks for a repository's name
  // before deleting it: the dialog names the server and shows the exact argv; its Run
  // stays off until the server's name is typed. Cancel (or Escape) runs nothing.
  function confirmDialog(onConfirm) {
    const dialog = $("confirm-dialog");
    const name = $("confirm-name");
    const go = $("confirm-run");
    let chosen = null;
    const typed = () => name.value.trim() === config.server;
    name.addEventListener("input", () => {
      go.disabled = !typed();
    });
    name.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && typed()) go.click();
    });
    go.addEventListener("click", () => {
      if (chosen === null || !typed()) return;
      const confirmed = chosen;
      chosen = null;
      dialog.close();
      onConfirm(confirmed, true);
    });
    // Cancel, or Escape (the dialog's own "cancel" event): nothing runs.
    $("confirm-cancel").addEventListener("click", () => {
      chosen = null;
      dialog.close();
    });
    dialog.addEventListener("cancel", () => {
      chosen = null;
    });
    return {
      open(ready) {
        chosen = ready;
        $("confirm-action").textContent = ready.action_type;
        const shown = $("confirm-argv");
        shown.textContent = JSON.stringify(ready.argv);
        shown.title = ready.sent;
        name.value = "";
        go.disabled = true;
        dialog.showModal();
        name.focus();
      },
    };
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
