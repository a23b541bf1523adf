/* The composer: reply or note, plain or rich text, canned responses, drafts saved on the server
   while typing, and "typing" signals for colleagues. The rich-text HTML is sanitized by the
   server before it is stored or sent. */
(function () {
  "use strict";
  var SAVE_DELAY_MS = 700;
  var TYPING_EVERY_MS = 3000;
  var saveTimer = null;
  var lastTyping = 0;

  function composer() { return document.getElementById("composer"); }
  function csrf() {
    var app = document.getElementById("app");
    try { return JSON.parse(app.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }

  function syncRich(form) {
    var editor = form.querySelector("#rich-editor");
    var html = form.querySelector("#composer-html");
    var rich = form.querySelector("#rich-toggle");
    if (editor && html && rich && rich.checked) html.value = editor.innerHTML;
  }

  function saveDraft() {
    var form = composer();
    if (!form) return;
    syncRich(form);
    var data = new FormData();
    ["mode", "text", "to", "cc", "bcc"].forEach(function (name) {
      var field = name === "mode" ? form.querySelector('input[name="mode"]:checked') : form.elements[name];
      data.append(name, field ? field.value : "");
    });
    var rich = form.querySelector("#rich-toggle");
    data.append("html", rich && rich.checked ? form.querySelector("#composer-html").value : "");
    var state = form.querySelector("#draft-state");
    fetch(form.dataset.draftUrl, { method: "POST", body: data, credentials: "same-origin",
                                   headers: { "X-CSRFToken": csrf() } })
      .then(function (response) { if (state) state.textContent = response.ok ? "Draft saved" : "Draft not saved"; })
      .catch(function () { if (state) state.textContent = "Draft not saved (offline)"; });
  }

  function changed(form) {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(saveDraft, SAVE_DELAY_MS);
    var now = Date.now();
    var pane = document.getElementById("pane");
    if (pane && window.ConsoleLive && now - lastTyping > TYPING_EVERY_MS) {
      lastTyping = now;
      window.ConsoleLive.typing(pane.dataset.conversation);
    }
  }

  function setMode(form) {
    var note = form.querySelector('input[name="mode"][value="note"]').checked;
    form.classList.toggle("mode-note", note);
    form.classList.toggle("mode-reply", !note);
    var label = form.querySelector("#composer-text-label");
    if (label) label.textContent = note ? "Note text (only colleagues see it)" : "Reply text";
    form.querySelector(".recipients-fields").hidden = note;
    form.querySelector(".files").hidden = note;
  }

  function setRich(form) {
    var rich = form.querySelector("#rich-toggle").checked;
    var editor = form.querySelector("#rich-editor");
    var text = form.querySelector("#composer-text");
    if (rich && editor.hidden) {
      // Plain text becomes the editor's text content: typed text is never parsed as markup.
      var html = form.querySelector("#composer-html").value;
      if (html) editor.innerHTML = html;  // our own draft, sanitized again by the server on send
      else editor.textContent = text.value;
    } else if (!rich && !editor.hidden) {
      text.value = editor.innerText;
    }
    editor.hidden = !rich;
    text.hidden = rich;
    form.querySelectorAll(".toolbar button").forEach(function (b) { b.disabled = !rich; });
  }

  function insertText(form, body) {
    var rich = form.querySelector("#rich-toggle").checked;
    if (rich) {
      var editor = form.querySelector("#rich-editor");
      editor.focus();
      document.execCommand("insertText", false, body);
    } else {
      var text = form.querySelector("#composer-text");
      var start = text.selectionStart || 0, end = text.selectionEnd || 0;
      text.value = text.value.slice(0, start) + body + text.value.slice(end);
      text.focus();
      text.selectionStart = text.selectionEnd = start + body.length;
    }
    changed(form);
  }

  function prepare(form) {
    if (!form || form.dataset.ready) return;
    form.dataset.ready = "1";
    setMode(form);
    setRich(form);
    form.addEventListener("input", function (event) {
      if (event.target.id === "canned-search" || event.target.type === "file") return;
      changed(form);
    });
    form.addEventListener("change", function (event) {
      if (event.target.name === "mode") { setMode(form); changed(form); }
      if (event.target.id === "rich-toggle") { setRich(form); changed(form); }
    });
    form.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button) return;
      if (button.classList.contains("canned-insert")) {
        insertText(form, button.dataset.body || "");
        return;
      }
      var command = button.dataset.command;
      if (command) {
        var editor = form.querySelector("#rich-editor");
        editor.focus();
        if (command === "createLink") {
          var url = window.prompt("Link address (https://…)");
          if (url && /^(https?:|mailto:)/i.test(url.trim())) document.execCommand("createLink", false, url.trim());
        } else {
          document.execCommand(command, false, null);
        }
        syncRich(form);
        changed(form);
      }
    });
    form.addEventListener("htmx:configRequest", function (event) {
      if (event.target !== form) return;
      syncRich(form);
      var html = form.querySelector("#composer-html");
      var rich = form.querySelector("#rich-toggle");
      if (html) event.detail.parameters.set ? event.detail.parameters.set("html", rich.checked ? html.value : "")
                                            : (event.detail.parameters.html = rich.checked ? html.value : "");
      clearTimeout(saveTimer);
    });
  }

  function scan() { prepare(composer()); }
  document.addEventListener("DOMContentLoaded", scan);
  document.addEventListener("htmx:load", scan);
})();
