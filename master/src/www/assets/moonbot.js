// moonbot status pages: live updates over /ws (Buildbot's protocol) and log
// tailing. Pages work without this script; it only keeps them current.
// Log text is only ever inserted with textContent, never as HTML.
(function () {
  "use strict";
  var body = document.body;
  var watch = (body.dataset.watch || "").split(",").filter(Boolean);
  var status = document.getElementById("live-status");
  var refreshTimer = null;
  var socket = null;
  var nextId = 1;
  var tails = {}; // logid -> {pre, next, busy, again}

  function setStatus(text, cls) {
    if (status) { status.textContent = text; status.className = cls; }
  }

  // ---- log lines ---------------------------------------------------------
  function lineNode(line, number) {
    var span = document.createElement("span");
    var kind = line.charAt(0);
    span.className = "l" + (kind === "e" || kind === "h" ? " " + kind : "");
    if (number !== undefined) {
      var n = document.createElement("span");
      n.className = "n";
      n.textContent = String(number + 1);
      span.appendChild(n);
    }
    span.appendChild(document.createTextNode(line.slice(1) + "\n"));
    return span;
  }

  function fetchLines(logid, offset, limit) {
    var url = "/api/v2/logs/" + logid + "/contents?offset=" + offset + (limit ? "&limit=" + limit : "");
    return fetch(url).then(function (r) { return r.json(); }).then(function (j) {
      var content = j.logchunks && j.logchunks[0] ? j.logchunks[0].content : "";
      var lines = content.split("\n");
      if (lines.length && lines[lines.length - 1] === "") lines.pop();
      return lines;
    });
  }

  function pull(logid) {
    var t = tails[logid];
    if (!t) return;
    if (t.busy) { t.again = true; return; }
    t.busy = true;
    fetchLines(logid, t.next, 5000).then(function (lines) {
      var frag = document.createDocumentFragment();
      for (var i = 0; i < lines.length; i++) frag.appendChild(lineNode(lines[i], t.numbered ? t.next + i : undefined));
      t.pre.appendChild(frag);
      t.next += lines.length;
      if (t.follow) t.pre.scrollTop = t.pre.scrollHeight;
      t.busy = false;
      if (t.again || lines.length === 5000) { t.again = false; pull(logid); }
    }, function () { t.busy = false; });
  }

  // A <pre class="log" data-logid data-tail="N"> shows the last N lines and follows the log.
  function startTail(pre) {
    var logid = pre.dataset.logid;
    if (tails[logid] && tails[logid].pre === pre) return;
    var tail = parseInt(pre.dataset.tail || "300", 10);
    tails[logid] = { pre: pre, next: 0, busy: true, again: false, follow: true };
    fetch("/api/v2/logs/" + logid).then(function (r) { return r.json(); }).then(function (j) {
      var total = j.logs && j.logs[0] ? j.logs[0].num_lines : 0;
      var t = tails[logid];
      t.next = Math.max(0, total - tail);
      if (t.next > 0) {
        var more = document.createElement("span");
        more.className = "skipped";
        more.textContent = "… " + t.next + " earlier lines (view the whole log)\n";
        pre.appendChild(more);
      }
      t.busy = false;
      pull(logid);
    });
  }

  function startTails(root) {
    var pres = root.querySelectorAll("pre.log[data-logid]");
    for (var i = 0; i < pres.length; i++) {
      var details = pres[i].closest("details");
      if (!details || details.open) startTail(pres[i]);
      else details.addEventListener("toggle", (function (p) { return function () { startTail(p); }; })(pres[i]), { once: true });
    }
  }

  // ---- the log viewer: pages of lines loaded as the reader scrolls ------
  function startViewer(view) {
    var logid = view.dataset.logid;
    var page = 1000;
    var t = { pre: view, next: 0, busy: false, again: false, follow: false, numbered: true };
    tails[logid] = t;
    var sentinel = document.createElement("div");
    sentinel.className = "sentinel";
    view.parentNode.insertBefore(sentinel, view.nextSibling);
    var total = parseInt(view.dataset.lines || "0", 10);
    function more() {
      if (t.busy || t.next >= total && view.dataset.complete === "true") return;
      t.busy = true;
      fetchLines(logid, t.next, page).then(function (lines) {
        var frag = document.createDocumentFragment();
        for (var i = 0; i < lines.length; i++) frag.appendChild(lineNode(lines[i], t.next + i));
        view.appendChild(frag);
        t.next += lines.length;
        t.busy = false;
        // Still at the bottom (a short page, or the reader jumped): go on.
        if (lines.length === page && sentinel.getBoundingClientRect().top < window.innerHeight) more();
        if (t.follow) window.scrollTo(0, document.body.scrollHeight);
      }, function () { t.busy = false; });
    }
    new IntersectionObserver(function (entries) {
      if (entries[0].isIntersecting) more();
    }).observe(sentinel);
    var jump = document.getElementById("jump-end");
    if (jump) jump.addEventListener("click", function () {
      total = Math.max(total, t.next);
      if (total - t.next > page) {
        view.textContent = "";
        var skipped = document.createElement("span");
        skipped.className = "skipped";
        skipped.textContent = "… lines 1 to " + (total - page) + " not loaded\n";
        view.appendChild(skipped);
        t.next = total - page;
      }
      more();
      t.follow = true;
      window.scrollTo(0, document.body.scrollHeight);
    });
    more();
  }

  // ---- swapping the #live part of a page ----------------------------------
  function refresh() {
    refreshTimer = null;
    fetch(location.href, { headers: { "X-Moonbot-Live": "1" } }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("live");
      var current = document.getElementById("live");
      if (!fresh || !current) return;
      // Keep log panes (and what they loaded) and open/closed state.
      var pres = fresh.querySelectorAll("pre.log[data-logid]");
      for (var i = 0; i < pres.length; i++) {
        var old = current.querySelector('pre.log[data-logid="' + pres[i].dataset.logid + '"]');
        if (old) {
          var oldDetails = old.closest("details"), newDetails = pres[i].closest("details");
          if (oldDetails && newDetails) newDetails.open = oldDetails.open;
          pres[i].replaceWith(old);
        }
      }
      current.replaceWith(document.adoptNode(fresh));
      startTails(document.getElementById("live"));
    });
  }

  function scheduleRefresh() {
    if (!document.getElementById("live")) return;
    if (!refreshTimer) refreshTimer = setTimeout(refresh, 200);
  }

  function onEvent(event) {
    // The answer to our last startConsuming: events from before it were
    // missed, so read the page once more.
    if (event._id === nextId - 1 && event.code === 200) { scheduleRefresh(); return; }
    if (!event.k) return;
    if (event.k === "lagged") { scheduleRefresh(); return; }
    var parts = event.k.split("/");
    if (parts[0] === "logs" && parts[2] === "append") {
      var t = tails[parts[1]];
      if (t) pull(parts[1]);
      var count = document.getElementById("num-lines");
      if (count && event.m && tails[parts[1]]) count.textContent = String(event.m.last_line + 1);
      return;
    }
    scheduleRefresh();
  }

  function connect() {
    if (!watch.length || !window.WebSocket) return;
    socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    socket.onopen = function () {
      setStatus("live", "on");
      for (var i = 0; i < watch.length; i++) {
        socket.send(JSON.stringify({ cmd: "startConsuming", path: watch[i], _id: nextId++ }));
      }
    };
    socket.onmessage = function (m) {
      try { onEvent(JSON.parse(m.data)); } catch (e) { /* ignore a bad frame */ }
    };
    socket.onclose = function () {
      setStatus("offline", "off");
      setTimeout(connect, 2000);
    };
  }

  startTails(document);
  var view = document.getElementById("logview");
  if (view) startViewer(view);
  connect();
})();
