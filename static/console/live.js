/* The console's socket: reconnects, resumes from the last sequence numbers it saw, and tells the
   page about every event as a "console:event" DOM event. The page re-fetches HTML over HTTP;
   nothing from the socket is ever inserted as markup.

   The format is the console consumer's (conversations/live/consumers.py).
   Client → server (JSON): {"type": "resume", "seq": {"<department id>": <n>, ...}} right after
   "hello"; {"type": "heartbeat"} every 20 s; {"type": "presence", "presence": "online"|"away"};
   {"type": "viewing", "conversation": "<uuid>"}; {"type": "typing", "conversation": "<uuid>"}.
   Server → client: {"event": "hello", "payload": {"agent", "seq"}}, then each event as
   {"event": "<type>", "payload": {...}, "seq": {"<department id>": <n>}}, and
   {"event": "refetch"} when the gap is too old to replay. */
(function () {
  "use strict";
  var HEARTBEAT_MS = 20000;
  var socket = null;
  var last = {};           // stream → last sequence number seen
  var retry = 1000;
  var heartbeat = null;
  var connectedOnce = false;
  var state = { presence: null, viewing: null };

  function setLiveState(text, ok) {
    var el = document.getElementById("live-state");
    if (el) {
      el.textContent = text;
      el.classList.toggle("ok", !!ok);
    }
  }

  function emit(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/console/");
    socket.addEventListener("open", function () {
      retry = 1000;
      setLiveState("Live", true);
      if (state.presence) send({ type: "presence", presence: state.presence });
      if (state.viewing) send({ type: "viewing", conversation: state.viewing });
      clearInterval(heartbeat);
      heartbeat = setInterval(function () {
        send({ type: "heartbeat" });
        if (state.viewing) send({ type: "viewing", conversation: state.viewing });
      }, HEARTBEAT_MS);
      // Whatever happened while we were away: the server replays it, and a reconnect after a
      // drop also re-fetches, in case this server cannot.
    });
    socket.addEventListener("message", function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (!data || typeof data.event !== "string") return;
      if (data.event === "hello") {
        // First connection: start from now. A reconnection: ask for what we missed.
        var fresh = !connectedOnce;
        if (fresh) last = (data.payload && data.payload.seq) || {};
        send({ type: "resume", seq: last });
        connectedOnce = true;
        return;
      }
      if (data.seq && typeof data.seq === "object") {
        Object.keys(data.seq).forEach(function (key) { last[key] = Math.max(last[key] || 0, data.seq[key]); });
      }
      emit("console:event", { event: data.event, payload: data.payload || {} });
    });
    socket.addEventListener("close", function (event) {
      clearInterval(heartbeat);
      setLiveState("Reconnecting…", false);
      if (event.code === 4401 || event.code === 4403) {
        setLiveState("Signed out", false);
        return;
      }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    });
  }

  window.ConsoleLive = {
    send: send,
    setPresence: function (presence) { state.presence = presence; return send({ type: "presence", presence: presence }); },
    viewing: function (conversation) {
      if (state.viewing === conversation) return;
      state.viewing = conversation;
      send({ type: "viewing", conversation: conversation });
    },
    typing: function (conversation) { send({ type: "typing", conversation: conversation }); },
    announce: function () {
      var now = Date.now();
      if (!state.viewing || now - (state.announced || 0) < 5000) return;
      state.announced = now;
      send({ type: "viewing", conversation: state.viewing });
    },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", connect);
  else connect();
})();
