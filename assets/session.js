// labpool: the student's terminal page.
//
// Plain ES2017, no build step. Loaded after xterm.js (global `Terminal`) and
// addon-fit.js (global `FitAddon.FitAddon`). The session id and the socket's
// path come from data- attributes on <body> (no inline script: CSP
// script-src 'self'); everything else comes over the socket.
//
// Credentials: the launch's one-time code arrives in the URL's fragment
// (#code=…, never sent to a server); the page removes it from the address
// bar at once and sends it as its socket's first message, and labpool
// answers with a session token. The token lives in memory and in this tab's
// sessionStorage (so a reload reconnects; where storage is blocked, a reload
// asks to open the lab from the course again). No credential is ever put in
// a URL.
//
// Wire protocol (one WebSocket to data-ws, no query):
//   client→server text, first: {"type":"auth","code"|"token":…,"from":OFFSET}
//   server→client binary: terminal output bytes; `offset` counts them so a
//     reconnect asks only for what was missed.
//   client→server binary: keystrokes.
//   client→server text:   {"type":"resize","cols":N,"rows":N} |
//                          {"type":"ack","token_id":ID} (a token received)
//   server→client text:   attached {offset} | status {state,message} |
//                          token {token,id,expires_at} |
//                          session {expires_at,now,title,idle_ms}
//   close codes: 4000 ended, 4001 replaced by another tab, 4401 credential
//     refused, 4403 not labpool's page, 4404 no such session; anything else
//     → reconnect with backoff.
(function () {
  'use strict';

  var body = document.body;
  var data = body.dataset;
  var sessionId = data.session || '';
  var wsPath = data.ws || '/session/' + encodeURIComponent(sessionId) + '/terminal';
  var expiresAt = 0;
  var skew = 0;
  var idleMs = 0;
  var STORE_KEY = 'labpool.token.' + sessionId;
  var code = takeCode();
  var token = code ? '' : stored();

  var el = {
    title: document.getElementById('title'),
    left: document.getElementById('left'),
    state: document.getElementById('state'),
    terminal: document.getElementById('terminal'),
    notice: document.getElementById('notice'),
    noticeText: document.getElementById('notice-text'),
    noticeButton: document.getElementById('notice-button'),
  };

  var BACKOFF_MS = [500, 1000, 2000, 4000, 5000];
  var CONNECT_TIMEOUT_MS = 15000;
  var WARN_MS = 5 * 60 * 1000;

  var state = '';
  var offset = 0;
  var ws = null;
  var attempt = 0;
  var reconnectTimer = null;
  var connectTimer = null;
  var stopped = false; // ended, replaced or refused: no automatic reconnect
  var warned = null; // null until the first tick: warn on crossing, not at load
  var gotStatus = false; // a status message arrived on the current socket

  // ---- terminal -----------------------------------------------------------

  var term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    convertEol: false,
    fontFamily:
      'ui-monospace, "SFMono-Regular", "Cascadia Mono", "DejaVu Sans Mono", ' +
      'Menlo, Consolas, "Liberation Mono", monospace',
    theme: { background: '#111418', foreground: '#d8dee9' },
  });
  var fitAddon = new FitAddon.FitAddon();
  term.loadAddon(fitAddon);
  term.open(el.terminal);

  function fit() {
    try {
      fitAddon.fit();
    } catch (e) {
      // Not laid out yet (hidden, zero size): the next resize fits.
    }
  }

  var resizeTimer = null;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(fit, 100);
  });
  // fit() resizes the terminal only when the size changes; tell the server.
  term.onResize(sendResize);

  term.onData(function (d) {
    send(new TextEncoder().encode(d));
  });
  term.onBinary(function (d) {
    send(Uint8Array.from(d, function (c) { return c.charCodeAt(0); }));
  });

  // ---- state and notices --------------------------------------------------

  var STATE_TEXT = {
    connecting: 'connecting…',
    connected: 'connected',
    reconnecting: 'reconnecting…',
    ended: 'ended',
    replaced: 'open in another tab',
    refused: 'not allowed',
  };

  function setState(next, message) {
    var text = message || STATE_TEXT[next] || next;
    if (el.state) {
      el.state.className = 'state state-' + next;
      el.state.textContent = '';
      var dot = document.createElement('span');
      dot.className = 'dot';
      dot.setAttribute('aria-hidden', 'true');
      var label = document.createElement('span');
      label.className = 'label';
      label.textContent = text;
      el.state.appendChild(dot);
      el.state.appendChild(label);
    }
    if (next !== state) {
      state = next;
      body.dataset.state = next;
    }
  }

  function showNotice(text, buttonLabel, onButton) {
    el.noticeText.textContent = text;
    if (buttonLabel) {
      el.noticeButton.textContent = buttonLabel;
      el.noticeButton.hidden = false;
      el.noticeButton.onclick = onButton;
    } else {
      el.noticeButton.hidden = true;
      el.noticeButton.onclick = null;
    }
    el.notice.hidden = false;
    if (buttonLabel) el.noticeButton.focus();
  }

  function hideNotice() {
    el.notice.hidden = true;
    el.noticeButton.onclick = null;
  }

  // ---- credentials --------------------------------------------------------

  // The launch's code, from the fragment; the address bar (and so history,
  // bookmarks, a copied link) keeps only /session/<id>.
  function takeCode() {
    var m = /(?:^#|&)code=([^&]+)/.exec(location.hash || '');
    if (!m) return '';
    try {
      history.replaceState(null, '', location.pathname + location.search);
    } catch (e) {
      location.hash = ''; // odd embeddings: at least blank the fragment
    }
    return decodeURIComponent(m[1]);
  }

  function stored() {
    try {
      return sessionStorage.getItem(STORE_KEY) || '';
    } catch (e) {
      return ''; // storage blocked (a third-party frame): memory only
    }
  }

  function setToken(next) {
    token = next;
    code = ''; // spent either way
    try {
      if (next) sessionStorage.setItem(STORE_KEY, next);
      else sessionStorage.removeItem(STORE_KEY);
    } catch (e) {
      // Memory only; a reload then asks for a new launch.
    }
  }

  // ---- time left ----------------------------------------------------------

  function formatLeft(ms) {
    var total = Math.ceil(ms / 1000);
    var h = Math.floor(total / 3600);
    var m = Math.floor((total % 3600) / 60);
    var s = total % 60;
    if (h > 0) return h + 'h ' + m + 'm left';
    if (total >= 600) return m + 'm left';
    if (m > 0) return m + 'm ' + s + 's left';
    return s + 's left';
  }

  function tick() {
    if (!el.left || !expiresAt) return;
    var ms = expiresAt - (Date.now() + skew);
    if (ms <= 0) {
      el.left.textContent = 'ended';
      el.left.classList.add('warning');
      return;
    }
    el.left.textContent = formatLeft(ms);
    var low = ms <= WARN_MS;
    el.left.classList.toggle('warning', low);
    if (warned === null) {
      warned = low;
    } else if (low && !warned && state !== 'ended') {
      warned = true;
      term.write('\r\n\x1b[33m[labpool] This session ends in 5 minutes.\x1b[0m\r\n');
    } else if (!low) {
      // More than 5 minutes left (at load, or the session was extended):
      // warn when it next crosses.
      warned = false;
    }
  }

  // ---- the socket ---------------------------------------------------------

  function send(bytes) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
  }

  function sendResize() {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    }
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    stopped = false;
    if (ws) {
      var old = ws;
      ws = null;
      try { old.close(1000); } catch (e) { /* already closed */ }
    }
    if (state !== 'reconnecting') setState('connecting');

    var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    var url = scheme + '//' + location.host + wsPath;
    var sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      setState('reconnecting');
      scheduleReconnect();
      return;
    }
    gotStatus = false;
    sock.binaryType = 'arraybuffer';
    ws = sock;

    clearTimeout(connectTimer);
    connectTimer = setTimeout(function () {
      // A handshake lost in the network: give up on it, the close retries.
      if (ws === sock && sock.readyState === WebSocket.CONNECTING) sock.close();
    }, CONNECT_TIMEOUT_MS);

    sock.onopen = function () {
      if (ws !== sock) return;
      clearTimeout(connectTimer);
      // The credential goes first, in the message, never in the URL. A
      // code is spent by this send: if the socket drops before the token
      // comes back, there is nothing left to reconnect with.
      var auth = { type: 'auth', from: offset };
      if (code) auth.code = code;
      else auth.token = token;
      sock.send(JSON.stringify(auth));
      if (code) code = '';
      fit();
      sendResize();
    };

    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      if (typeof ev.data !== 'string') {
        offset += ev.data.byteLength;
        term.write(new Uint8Array(ev.data));
        return;
      }
      var msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!msg || typeof msg !== 'object') return;
      switch (msg.type) {
        case 'attached':
          // Replay starts here; beyond our offset means the server's
          // scrollback dropped some output in between.
          if (typeof msg.offset === 'number') offset = msg.offset;
          attempt = 0;
          // The server's own status (e.g. reconnecting to the VM) wins.
          if (!gotStatus) setState('connected');
          break;
        case 'status':
          gotStatus = true;
          if (msg.state === 'connected') {
            setState('connected', msg.message);
          } else if (msg.state === 'reconnecting') {
            setState('reconnecting', msg.message || 'reconnecting to your VM…');
          } else if (msg.state === 'ended') {
            setState('ended', msg.message);
          }
          break;
        case 'token':
          if (typeof msg.token === 'string' && msg.token) {
            setToken(msg.token);
            // Tells labpool this page holds it: older tokens stop working.
            if (typeof msg.id === 'string') sock.send(JSON.stringify({ type: 'ack', token_id: msg.id }));
          }
          break;
        case 'session':
          if (typeof msg.now === 'number') skew = msg.now - Date.now();
          if (typeof msg.expires_at === 'number') expiresAt = msg.expires_at;
          if (typeof msg.title === 'string' && msg.title) setTitle(msg.title);
          if (typeof msg.idle_ms === 'number') setIdle(msg.idle_ms);
          tick();
          break;
        default:
          break;
      }
    };

    sock.onclose = function (ev) {
      if (ws !== sock) return;
      clearTimeout(connectTimer);
      ws = null;
      switch (ev.code) {
        case 4000:
          stop('ended');
          showNotice(
            'This lab session has ended (' + (ev.reason || 'ended') + '). ' +
            'Launch the lab again from your course to start a new one.'
          );
          break;
        case 4001:
          stop('replaced');
          showNotice('This session was opened in another tab or window.', 'Use it here', function () {
            hideNotice();
            attempt = 0;
            term.options.disableStdin = false;
            connect();
            term.focus();
          });
          break;
        case 4401:
        case 4403:
        case 4404:
          stop('refused', ev.reason);
          // The token is no good any more: a reload must not retry it.
          if (ev.code === 4401) setToken('');
          showNotice('This link has expired or is not valid. Open the lab from your course again.');
          break;
        default:
          if (!stopped) {
            setState('reconnecting');
            scheduleReconnect();
          }
      }
    };
  }

  function stop(next, message) {
    stopped = true;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    term.options.disableStdin = true;
    setState(next, message);
  }

  function scheduleReconnect() {
    if (stopped || reconnectTimer) return;
    var delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    attempt += 1;
    reconnectTimer = setTimeout(function () {
      reconnectTimer = null;
      if (!stopped) connect();
    }, delay);
  }

  // Back online: don't sit out the backoff.
  window.addEventListener('online', function () {
    if (reconnectTimer && !stopped) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
      connect();
    }
  });

  // ---- start --------------------------------------------------------------

  function setTitle(title) {
    if (el.title) el.title.textContent = title;
    document.title = title + ' — labpool';
  }

  function setIdle(ms) {
    idleMs = ms;
    if (el.left && idleMs > 0) {
      el.left.title = 'The session also ends after ' +
        Math.round(idleMs / 60000) + ' minutes without typing.';
    }
  }

  window.labpool = {
    term: term,
    state: function () { return state; },
    offset: function () { return offset; },
    socketUrl: function () { return ws ? ws.url : ''; },
  };

  fit();
  if (document.fonts && document.fonts.ready) document.fonts.ready.then(fit);
  tick();
  setInterval(tick, 1000);
  if (!code && !token) {
    // A reload where the tab kept no token, or a copied link.
    stop('refused');
    showNotice('This page has no lab to open. Open the lab from your course again.');
  } else {
    setState('connecting');
    term.focus();
    connect();
  }
})();
