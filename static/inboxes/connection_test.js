// Test connection: posts the form as it is filled in and shows each step as the server reports
// it (one JSON object per line, streamed), then offers to trust an untrusted certificate.
"use strict";

(function () {
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function certificateList(certificate) {
    const list = element("dl", "sb-certificate");
    const rows = [
      ["Subject", certificate.subject],
      ["Issuer", certificate.issuer],
      ["Names", (certificate.names || []).join(", ")],
      ["Valid", certificate.not_before.slice(0, 10) + " to " + certificate.not_after.slice(0, 10)],
      ["SHA-256 fingerprint", certificate.fingerprint],
    ];
    for (const [label, value] of rows) {
      list.appendChild(element("dt", "", label));
      list.appendChild(element("dd", "", value || "—"));
    }
    return list;
  }

  function trustButton(panel, form, step) {
    const button = element("button", "button", "Trust this certificate for this inbox");
    button.type = "button";
    button.className = "button sb-trust";
    button.addEventListener("click", async function () {
      const data = new FormData(form);
      data.set("side", step.name.startsWith("SMTP") ? "smtp" : "imap");
      data.set("fingerprint", step.data.certificate.fingerprint);
      button.disabled = true;
      const response = await fetch(panel.dataset.trustUrl, { method: "POST", body: data, credentials: "same-origin" });
      const answer = await response.json();
      button.replaceWith(element("span", "sb-step__advice", answer.message || answer.error));
    });
    return button;
  }

  function showStep(list, panel, form, step) {
    const item = element("li", "sb-step " + (step.ok ? "sb-step--ok" : "sb-step--failed"));
    item.dataset.step = step.name;
    item.appendChild(element("span", "sb-step__mark", step.ok ? "✓" : "✗"));
    item.appendChild(element("strong", "", step.name));
    item.appendChild(element("span", "sb-step__time", " " + step.seconds.toFixed(2) + " s"));
    item.appendChild(element("span", "sb-step__detail", step.detail));
    if (step.advice) item.appendChild(element("span", "sb-step__advice", "What to do: " + step.advice));
    const certificate = step.data && step.data.certificate;
    if (!step.ok && certificate && certificate.fingerprint) {
      item.appendChild(certificateList(certificate));
      if ((step.data.can_trust || step.data.changed) && panel.dataset.trustUrl) {
        item.appendChild(trustButton(panel, form, step));
      }
    }
    list.appendChild(item);
  }

  function running(list) {
    const item = element("li", "sb-step sb-step--running");
    item.id = "sb-step-running";
    item.appendChild(element("span", "sb-step__mark", "…"));
    item.appendChild(element("span", "", "testing"));
    list.appendChild(item);
    return item;
  }

  async function run(panel, form) {
    const list = document.getElementById("sb-steps");
    const summary = document.getElementById("sb-test-summary");
    const button = document.getElementById("sb-test-button");
    list.replaceChildren();
    summary.textContent = "";
    button.disabled = true;
    const data = new FormData(form);
    data.set("send_test_message", document.getElementById("sb-test-send").checked ? "1" : "0");
    let spinner = running(list);
    try {
      const response = await fetch(panel.dataset.url, { method: "POST", body: data, credentials: "same-origin" });
      if (!response.ok) {
        const answer = await response.json();
        const errors = Object.entries(answer.errors || {}).map(([name, words]) => name + ": " + words.join(" "));
        summary.textContent = [answer.error].concat(errors).join(" ");
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 1);
          if (!line.trim()) continue;
          const step = JSON.parse(line);
          spinner.remove();
          if (step.done) {
            summary.textContent = step.ok ? "Every step passed." : "A step failed: see what to do above.";
            return;
          }
          showStep(list, panel, form, step);
          spinner = running(list);
        }
      }
    } catch (error) {
      summary.textContent = "The test could not be run: " + error;
    } finally {
      spinner.remove();
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const panel = document.getElementById("sb-test");
    const button = document.getElementById("sb-test-button");
    if (!panel || !button) return;
    button.addEventListener("click", () => run(panel, button.closest("form")));
  });
})();
