// The inbox form: a provider preset fills hosts, ports and security (still editable), and shows
// the provider's app-password hint; "same as incoming" hides the SMTP username and password.
"use strict";

(function () {
  function field(name) {
    return document.getElementById("id_" + name);
  }

  function row(name) {
    const input = field(name);
    return input && input.closest(".form-row");
  }

  function showHint(select, preset) {
    let hint = document.getElementById("sb-preset-hint");
    if (!hint) {
      hint = document.createElement("p");
      hint.id = "sb-preset-hint";
      hint.className = "sb-preset-hint";
      select.closest(".form-row").appendChild(hint);
    }
    const words = [preset.password_hint, preset.imap_hint].filter(Boolean).join(" ");
    hint.textContent = words;
    hint.classList.toggle("sb-hidden", !words);
  }

  function applyPreset(select, presets) {
    const preset = presets.find((candidate) => candidate.key === select.value);
    if (!preset) return;
    showHint(select, preset);
    if (preset.key === "custom") return;
    for (const name of ["imap_host", "imap_port", "imap_security", "smtp_host", "smtp_port", "smtp_security"]) {
      const input = field(name);
      if (input) {
        input.value = String(preset[name]);
        input.dispatchEvent(new Event("change", { bubbles: true }));
      }
    }
  }

  function toggleSmtpSignIn() {
    const same = field("smtp_same_as_incoming");
    if (!same) return;
    for (const name of ["smtp_username", "smtp_secret"]) {
      const line = row(name);
      if (line) line.classList.toggle("sb-hidden", same.checked);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const select = field("preset");
    if (select) {
      const presets = JSON.parse(select.dataset.presets || "[]");
      select.addEventListener("change", () => applyPreset(select, presets));
      const current = presets.find((candidate) => candidate.key === select.value);
      if (current) showHint(select, current);
    }
    const same = field("smtp_same_as_incoming");
    if (same) {
      same.addEventListener("change", toggleSmtpSignIn);
      toggleSmtpSignIn();
    }
  });
})();
