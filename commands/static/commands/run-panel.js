// The Run panel of a server's admin page (after console.js, which it uses): choose a rule,
// fill its parameters, see the argv the server will run, run it and follow it; the
// server's last executions beside it follow the runs started here.
//
// Nothing is preselected: Run stays off until a rule is chosen and the server accepted its
// preview. A rule flagged `confirm` runs only from the confirmation dialog, once the
// server's name is typed; the API refuses a session's run of such a rule without
// "confirm": true (400 confirmation_required), so no page can skip the dialog.
//
// What a command prints only ever enters the page as textContent (console.js).
"use strict";

(function () {
  const { config, $, post, jsonOf, urlFor, LiveView } = window.homelabConsole;

  // What this page can say better than an error's detail, by its code (never its HTTP
  // status, which may change). host_key_unknown's detail names `./manage.py trusthost`,
  // right for the CLI; here the same page has a Pin host key button.
  function hintFor(code) {
    if (code !== "host_key_unknown") return null;
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
    const view = new LiveView(
      () => {
        running = false;
        runButton.disabled = ready === null;
      },
      { hint: hintFor, onResult: (result) => recent.update(result.execution_id, result.status) },
    );
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

  runPanel();
})();
