// "Add a parameter row" for the rule editor (commands/admin/rules.py). Optional: without
// JavaScript the form already has blank rows, and the button stays hidden.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.add-parameter-row")) {
    const body = document.getElementById(button.dataset.rows)?.tBodies[0];
    if (!body) {
      continue;
    }
    button.hidden = false;
    button.addEventListener("click", () => {
      const rows = body.querySelectorAll("tr.parameter-row");
      const last = rows[rows.length - 1];
      // The server reads rows by the number in their input names, so the copy takes the
      // next one; gaps and order are fine (rows are read in number order).
      const next = Math.max(...Array.from(rows, (row) => Number(row.dataset.index))) + 1;
      const copy = last.cloneNode(true);
      copy.dataset.index = String(next);
      copy.classList.remove("errors");
      for (const input of copy.querySelectorAll("input")) {
        input.name = input.name.replace(/-\d+-(name|pattern|help)$/, `-${next}-$1`);
        input.id = input.id.replace(/-\d+-(name|pattern|help)$/, `-${next}-$1`);
        input.value = "";
        const label = input.getAttribute("aria-label");
        input.setAttribute("aria-label", label.replace(/\d+/, String(next + 1)));
      }
      body.appendChild(copy);
      copy.querySelector("input").focus();
    });
  }
});
