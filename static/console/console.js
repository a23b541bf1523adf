/* The console page: live refreshes of the list and the open conversation (HTML fragments over
   HTTP), the tab's title, notifications, colleagues viewing and typing, and the keyboard.
   Text from the server is only ever set with textContent, never as markup. */
(function () {
  "use strict";
  var app, me;
  var presenceTimers = {};

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function pane() { return $("#pane"); }
  function openConversation() { var p = pane(); return p ? p.dataset.conversation : null; }

  // A live refresh asks the server for a fragment again and swaps in the newest answer only.
  // Answers can cross on the way back (three events in quick succession), and htmx.ajax would
  // queue a second ask behind the first on an element the first answer then replaces, so the
  // newer answer would land nowhere and the page would stay a step behind.
  var asks = {};
  function fetchInto(url, target, swap) {
    if (!$(target)) return Promise.resolve();
    var ask = (asks[target] || 0) + 1;
    asks[target] = ask;
    var headers = { "HX-Request": "true", "HX-Target": target.replace(/^#/, "") };
    return fetch(url, { credentials: "same-origin", headers: headers })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (fragment) {
        var el = $(target);
        if (fragment === null || asks[target] !== ask || !el) return;
        htmx.swap(el, fragment, { swapStyle: swap || "outerHTML" }, { eventInfo: { target: el } });
      })
      .catch(function () { /* offline for a moment: the next event, or the resume's refetch, asks again */ });
  }

  // ---------------------------------------------------------------- the list
  function listUrl() {
    var list = $("#list");
    return app.dataset.listUrl + "?" + (list ? list.dataset.query : "");
  }

  function listBusy() {
    var rows = $("#rows");
    var pane = $(".list-pane");
    var scrolled = (pane && pane.scrollTop > 8) || (rows && rows.scrollTop > 8);
    var focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("#rows");
    return scrolled || !!focused;
  }

  var refreshTimer = null;
  function refreshList() {
    // Bursts of events (a bulk import) cost one request, not one each.
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      if (listBusy()) {
        var banner = $("#list-banner");
        if (banner) banner.hidden = false;
        return;
      }
      fetchInto(listUrl(), "#list");
    }, 150);
  }

  // ---------------------------------------------------------------- the open conversation
  function refreshThread() {
    var p = pane();
    if (!p) return;
    var thread = $("#thread");
    var nearBottom = thread && thread.scrollHeight - thread.scrollTop - thread.clientHeight < 80;
    fetchInto(p.dataset.threadUrl, "#thread", "innerHTML").then(function () {
      var t = $("#thread");
      if (t && nearBottom) t.scrollTop = t.scrollHeight;
    });
  }

  function refreshSidebar() {
    var p = pane();
    if (p) fetchInto(p.dataset.sidebarUrl, "#sidebar");
  }

  function refreshDelivery(messageId) {
    var el = document.getElementById("delivery-" + messageId);
    if (el) fetchInto(el.dataset.statusUrl, "#delivery-" + messageId);
  }

  // A fragment swapped in was rendered a moment ago: a reply it shows as queued or sending may
  // have moved on since, and the socket's word of that may have come before the fragment did.
  function catchUpDeliveries(root) {
    $all(".delivery[data-status='queued'], .delivery[data-status='sending']", root).forEach(function (el) {
      refreshDelivery(el.id.slice("delivery-".length));
    });
  }

  function afterPaneChange() {
    var p = pane();
    var title = p ? p.dataset.title : "Conversations";
    document.title = title + " · Switchboard";
    $all("#rows a.row").forEach(function (row) {
      var current = p && row.dataset.conversation === p.dataset.conversation;
      if (current) { row.setAttribute("aria-current", "true"); row.classList.remove("unread"); }
      else row.removeAttribute("aria-current");
    });
    $("#collision") && ($("#collision").textContent = "");
    presenceTimers = {};
    if (window.ConsoleLive) window.ConsoleLive.viewing(p ? p.dataset.conversation : null);
    var thread = $("#thread");
    if (thread) thread.scrollTop = thread.scrollHeight;
    // After sending, htmx would put focus back in the (now empty) composer; the keys are for the conversation.
    if (p && $(".flash", p) && document.activeElement && document.activeElement.closest("#composer")) {
      $("#conversation").focus();
    }
  }

  // ---------------------------------------------------------------- colleagues viewing / typing
  function showColleague(payload, typing) {
    var agent = payload.agent || "";
    if (!agent || agent === me || payload.conversation !== openConversation()) return;
    var box = $("#collision");
    if (!box) return;
    var id = "colleague-" + agent.replace(/[^a-zA-Z0-9-]/g, "");
    var el = document.getElementById(id);
    if (!el) {
      el = document.createElement("span");
      el.id = id;
      el.className = "colleague";
      box.appendChild(el);
      // Someone new here: tell them we are too, rather than at our next heartbeat.
      if (window.ConsoleLive) window.ConsoleLive.announce();
    }
    var option = document.querySelector('#assign-agent option[value="' + agent.replace(/[^a-zA-Z0-9-]/g, "") + '"]');
    var name = payload.name || (option ? option.textContent.split(" · ")[0] : "A colleague");
    el.textContent = typing ? name + " is typing…" : name + " is viewing";
    el.classList.toggle("typing", !!typing);
    el.title = el.textContent;
    clearTimeout(presenceTimers[id]);
    if (payload.active === false || payload.viewing === false) { el.remove(); return; }
    presenceTimers[id] = setTimeout(function () {
      if (typing) { el.textContent = name + " is viewing"; el.classList.remove("typing"); }
      else el.remove();
    }, typing ? 8000 : Math.max(30000, (payload.expires_in || 10) * 3000));
  }

  // ---------------------------------------------------------------- notifications
  var notified = {};
  function notify(title, conversation) {
    var toggle = $("#notify-toggle");
    if (!toggle || !toggle.checked) return;
    var row = $('#rows a.row[data-conversation="' + conversation + '"]');
    var subject = row ? row.dataset.subject : "";
    beep();
    if (window.Notification && Notification.permission === "granted") {
      // Notification text is plain text: markup in a subject shows as written.
      new Notification(title, { body: subject || "A conversation", tag: title + conversation });
    }
  }

  function notifyAssigned(conversation) {
    setTimeout(function () { notify("Assigned to you", conversation); }, 600);
  }

  function notifyMentions() {
    $all("#rows a.row[data-mentioned]").forEach(function (row) {
      var id = row.dataset.conversation;
      if (notified[id] || id === openConversation()) return;
      notified[id] = true;
      notify("You were mentioned", id);
    });
  }

  function beep() {
    try {
      var context = new (window.AudioContext || window.webkitAudioContext)();
      var tone = context.createOscillator();
      var gain = context.createGain();
      tone.frequency.value = 880;
      gain.gain.value = 0.05;
      tone.connect(gain); gain.connect(context.destination);
      tone.start(); tone.stop(context.currentTime + 0.15);
    } catch (e) { /* no audio: the notification still shows */ }
  }

  // ---------------------------------------------------------------- events from the socket
  function onEvent(event) {
    var type = event.detail.event, payload = event.detail.payload || {};
    var open = openConversation();
    switch (type) {
      case "refetch":
        refreshList();
        if (open) { refreshThread(); refreshSidebar(); }
        break;
      case "conversation.created":
      case "conversation.queued":
        refreshList();
        break;
      case "conversation.assigned":
        refreshList();
        if (payload.conversation === open) refreshSidebar();
        if (payload.assignee && payload.assignee === me) notifyAssigned(payload.conversation);
        break;
      case "conversation.updated":
        refreshList();
        if (payload.conversation === open) refreshSidebar();
        break;
      case "message.created":
        refreshList();
        if (payload.conversation === open) refreshThread();
        break;
      case "message.status":
        refreshDelivery(payload.message);
        break;
      case "conversation.viewing":
        showColleague(payload, false);
        break;
      case "conversation.typing":
        showColleague(payload, true);
        break;
    }
  }

  // ---------------------------------------------------------------- keyboard
  function typingTarget(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  function moveSelection(step) {
    var rows = $all("#rows a.row");
    if (!rows.length) return;
    var index = rows.indexOf(document.activeElement);
    if (index < 0) index = rows.findIndex(function (r) { return r.getAttribute("aria-current") === "true"; });
    var next = Math.max(0, Math.min(rows.length - 1, index < 0 ? 0 : index + step));
    rows[next].focus();
    rows[next].scrollIntoView({ block: "nearest" });
  }

  function focusComposer(mode) {
    var composer = $("#composer");
    if (!composer) return;
    var radio = $('input[name="mode"][value="' + mode + '"]', composer);
    if (radio && !radio.checked) { radio.checked = true; radio.dispatchEvent(new Event("change", { bubbles: true })); }
    var rich = $("#rich-toggle");
    var target = rich && rich.checked ? $("#rich-editor") : $("#composer-text");
    if (target) target.focus();
  }

  function click(selector) {
    var el = $(selector);
    if (!el) return;
    // htmx binds a fragment it swapped in only when the fragment settles, a moment later; bind it
    // now, so a key pressed in that moment is htmx's request and not a plain form post.
    if (window.htmx) window.htmx.process(el.closest("form") || el);
    el.click();
  }

  function onKey(event) {
    if (event.ctrlKey && event.key === "Enter" && event.target.closest && event.target.closest("#composer")) {
      event.preventDefault();
      click("#send-button");
      return;
    }
    if (event.key === "Escape" && typingTarget(event.target) && event.target.closest("#composer")) {
      event.target.blur();
      var current = $("#rows a.row[aria-current='true']");
      if (current) current.focus();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typingTarget(event.target)) return;
    var dialog = $("#shortcuts");
    if (dialog && dialog.open) return;
    var handled = true;
    switch (event.key) {
      case "j": moveSelection(1); break;
      case "k": moveSelection(-1); break;
      case "r": focusComposer("reply"); break;
      case "n": focusComposer("note"); break;
      case "a": click("#assign-me"); break;
      case "e": click("#status-closed"); break;
      case "/": var search = $("#search"); if (search) { search.focus(); search.select(); } break;
      case "?": if (dialog) dialog.showModal(); break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  }

  // ---------------------------------------------------------------- start
  function start() {
    app = $("#app");
    if (!app) return;
    me = app.dataset.agent;
    document.addEventListener("console:event", onEvent);
    document.addEventListener("keydown", onKey);
    document.body.addEventListener("htmx:afterSwap", function (event) {
      var target = event.detail.target;
      if (target && target.id === "conversation") afterPaneChange();
      if (target && (target.id === "conversation" || target.id === "thread")) catchUpDeliveries(target);
      if ($("#list")) notifyMentions();
      var list = $("#list");
      var view = $("#filter-view");
      if (list && view) view.value = list.dataset.view;
    });
    document.body.addEventListener("click", function (event) {
      var banner = event.target.closest && event.target.closest("#list-banner-button");
      if (banner) fetchInto(listUrl(), "#list");
    });
    var shortcuts = $("#shortcuts-button");
    if (shortcuts) shortcuts.addEventListener("click", function () { $("#shortcuts").showModal(); });
    var presence = $("#presence");
    if (presence) {
      if (window.ConsoleLive) window.ConsoleLive.setPresence(presence.value);
      presence.addEventListener("change", function () {
        var form = $("#presence-form");
        fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
        if (window.ConsoleLive) window.ConsoleLive.setPresence(presence.value);
      });
    }
    var notify = $("#notify-toggle");
    if (notify) {
      notify.checked = localStorage.getItem("switchboard.notify") === "1";
      notify.addEventListener("change", function () {
        localStorage.setItem("switchboard.notify", notify.checked ? "1" : "0");
        if (notify.checked && window.Notification && Notification.permission === "default") Notification.requestPermission();
      });
    }
    // Mentions already waiting at load show as badges; only new ones notify.
    $all("#rows a.row[data-mentioned]").forEach(function (row) { notified[row.dataset.conversation] = true; });
    afterPaneChange();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
