// Microblog's page script: local times, and live task progress and message counts, pushed by
// /events (Server-Sent Events) or, where the stream cannot be had, polled from /notifications.
(function () {
  'use strict';

  var locale = document.body.dataset.locale || undefined;
  // Every count the script writes, grouped as the server writes them (the `number` filter).
  var numberFmt = new Intl.NumberFormat(locale);

  // --- times in the reader's locale and time zone (Intl, no library) ---
  function renderTimes(root) {
    var dateFmt = new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' });
    var relFmt = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(locale, { numeric: 'auto' }) : null;
    root.querySelectorAll('time.local-time').forEach(function (el) {
      var when = new Date(el.getAttribute('datetime'));
      if (isNaN(when)) { return; }
      el.title = dateFmt.format(when);
      if (el.dataset.style === 'fromnow' && relFmt) {
        var seconds = Math.round((when - Date.now()) / 1000);
        var units = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60]];
        for (var i = 0; i < units.length; i++) {
          if (Math.abs(seconds) >= units[i][1]) {
            el.textContent = relFmt.format(Math.round(seconds / units[i][1]), units[i][0]);
            return;
          }
        }
        el.textContent = relFmt.format(0, 'minute');
      } else {
        el.textContent = dateFmt.format(when);
      }
    });
  }
  renderTimes(document);

  // "Copy" buttons (data-copy: the selector of the field to copy, e.g. a new API token). The
  // field is selected too, so that where the clipboard API is refused (plain HTTP) the reader
  // can press Ctrl+C.
  document.querySelectorAll('[data-copy]').forEach(function (button) {
    button.addEventListener('click', function () {
      var field = document.querySelector(button.dataset.copy);
      if (!field) { return; }
      field.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(function () {
          button.textContent = button.dataset.copiedText || button.textContent;
        });
      }
    });
  });

  // The server renders each bar's value in aria-valuenow; its width is set here, since the
  // Content-Security-Policy allows no style= attributes (styles set from script are fine).
  function setBar(progress, pct) {
    var bar = progress.querySelector('.progress-bar');
    bar.style.width = pct + '%';
    bar.textContent = pct + '%';
    progress.setAttribute('aria-valuenow', pct);
  }
  function renderBars(root) {
    root.querySelectorAll('.progress[aria-valuenow]').forEach(function (progress) {
      progress.querySelector('.progress-bar').style.width = progress.getAttribute('aria-valuenow') + '%';
    });
  }
  renderBars(document);

  // --- background tasks ---
  var tasks = document.getElementById('tasks');
  if (!tasks) { return; }
  var ACTIVE = { queued: true, running: true };
  var FAST = 1000, SLOW = 30000;
  var since = 0, timer = null, stopped = false;

  function activeCount() {
    return tasks.querySelectorAll('.task-alert[data-status="queued"], .task-alert[data-status="running"]').length;
  }

  function setHiddenWhile(name, hidden) {
    document.querySelectorAll('[data-hidden-while-task="' + name + '"]').forEach(function (el) {
      el.classList.toggle('d-none', hidden);
    });
  }

  function text(key) { return tasks.dataset['text' + key.charAt(0).toUpperCase() + key.slice(1)] || key; }

  // What an ended task's alert says, and the link to its result, by kind (main/routes.py).
  var outcomes = JSON.parse(tasks.dataset.outcomes || '{}');

  // An end shown here is seen: the server then leaves its alert off the next page. A tab
  // in the background has not been seen yet; it tells the server when it is looked at.
  var unseen = [];
  function markSeen(taskId) { unseen.push(taskId); flushSeen(); }
  function flushSeen() {
    if (document.hidden) { return; }
    unseen.splice(0).forEach(function (taskId) {
      var body = new FormData();
      body.append('csrf_token', tasks.dataset.csrfToken);
      fetch(tasks.dataset.dismissUrl.replace('TASK_ID', encodeURIComponent(taskId)), {
        method: 'POST', body: body, credentials: 'same-origin', headers: { 'Accept': 'application/json' }
      }).catch(function () { /* shown once more on the next page: harmless */ });
    });
  }

  function showOutcome(el, data) {
    var outcome = outcomes[data.name] || {};
    var heading = el.querySelector('.task-description');
    var link = el.querySelector('a.task-result');
    if (ACTIVE[data.status]) {  // running again (an operator's retry)
      heading.textContent = data.description || heading.textContent;
      if (link) { link.remove(); }
      return;
    }
    if (outcome[data.status]) { heading.textContent = outcome[data.status]; }
    if (outcome.endpoint && !link) {
      link = document.createElement('a');
      link.className = 'alert-link task-result ms-1';
      link.href = outcome.endpoint;
      link.textContent = outcome.link;
      el.insertBefore(link, el.querySelector('.progress'));
    }
  }

  function createAlert(data) {
    var el = document.createElement('div');
    el.className = 'alert task-alert alert-info';
    el.setAttribute('role', 'status');
    el.id = 'task-' + data.task_id;
    el.dataset.taskId = data.task_id;
    var strong = document.createElement('strong');
    strong.className = 'task-description';
    strong.textContent = data.description || '';
    var span = document.createElement('span');
    span.className = 'task-text';
    var progress = document.createElement('div');
    progress.className = 'progress mt-2';
    progress.setAttribute('role', 'progressbar');
    progress.setAttribute('aria-valuemin', '0');
    progress.setAttribute('aria-valuemax', '100');
    var bar = document.createElement('div');
    bar.className = 'progress-bar progress-bar-striped progress-bar-animated';
    progress.appendChild(bar);
    el.append(strong, ' ', span, progress);
    tasks.appendChild(el);
    return el;
  }

  function dismissForm(taskId) {
    var form = document.createElement('form');
    form.method = 'post';
    form.action = tasks.dataset.dismissUrl.replace('TASK_ID', encodeURIComponent(taskId));
    form.className = 'float-end task-dismiss';
    var token = document.createElement('input');
    token.type = 'hidden';
    token.name = 'csrf_token';
    token.value = tasks.dataset.csrfToken;
    var button = document.createElement('button');
    button.type = 'submit';
    button.className = 'btn-close';
    button.setAttribute('aria-label', tasks.dataset.textClose || 'Close');
    form.append(token, button);
    return form;
  }

  function percent(data) { return Math.max(0, Math.min(100, Math.round(data.progress || 0))); }

  // "12,400 of 100,000 posts — about 8 s left", from the counts the worker sends.
  function progressText(data) {
    var template = data.unit && tasks.dataset['textCount' + data.unit.charAt(0).toUpperCase() + data.unit.slice(1)];
    if (!template || data.total == null || data.done == null) { return ''; }
    var parts = [template.replace('{done}', numberFmt.format(data.done)).replace('{total}', numberFmt.format(data.total))];
    if (data.eta != null && data.done < data.total) {
      var minutes = data.eta >= 90;
      var n = minutes ? Math.round(data.eta / 60) : Math.max(1, Math.round(data.eta));
      parts.push((minutes ? tasks.dataset.textEtaMinutes : tasks.dataset.textEtaSeconds).replace('{n}', numberFmt.format(n)));
    }
    return parts.join(' \u2014 ');
  }

  function updateTask(data) {
    var el = document.getElementById('task-' + data.task_id);
    if (!el) {
      if (!ACTIVE[data.status]) { return; }  // an old task: nothing to show
      el = createAlert(data);
    }
    var previous = el.dataset.status;
    var progress = el.querySelector('.progress');
    // A running task only moves forward (a retry passes through "queued" first): an older
    // event that arrives after a newer state (a stream that just reconnected) is not drawn.
    if (previous === 'running' && data.status === 'running' &&
        percent(data) < Number(progress.getAttribute('aria-valuenow'))) { return; }
    el.dataset.status = data.status;
    var label = el.querySelector('.task-text');
    setBar(progress, percent(data));
    el.classList.remove('alert-info', 'alert-success', 'alert-danger');
    if (data.status === 'finished') {
      el.classList.add('alert-success');
      progress.classList.add('d-none');
      label.textContent = data.message || text('finished');
    } else if (data.status === 'failed' || data.status === 'cancelled') {
      el.classList.add('alert-danger');
      progress.classList.add('d-none');
      label.textContent = data.error || text('failed');
    } else {
      el.classList.add('alert-info');
      progress.classList.remove('d-none');
      label.textContent = data.status === 'queued' ? (data.error || text('queued')) : progressText(data);
    }
    if (!ACTIVE[data.status] && !el.querySelector('form.task-dismiss')) {
      el.prepend(dismissForm(data.task_id));
    }
    showOutcome(el, data);
    if (ACTIVE[previous] && !ACTIVE[data.status]) { markSeen(data.task_id); }
    if (ACTIVE[data.status]) {
      setHiddenWhile(data.name, true);
    } else if (previous !== data.status) {
      setHiddenWhile(data.name, false);
    }
  }

  // --- pages that follow tasks in place: the export centre (/exports), the imports (/imports)
  // and an import's page. Each .live-task element (a history row, an import's state) follows
  // the events of its task (data-task-id) in place; when the task changes status, the page's
  // [data-live-section] parts are fetched again (?sections=1) and swapped in, so Download,
  // Retry, an import's preview or its summary appear without a reload. A section that names
  // task kinds (data-live-tasks) is also fetched again when a task of one of them starts
  // elsewhere (another tab, the profile page).
  var refreshing = false, refreshAgain = false;
  var lastLiveEvent = {};  // task id -> its newest event, shown again on swapped-in parts

  function hasLiveSections() { return document.querySelector('[data-live-section]') !== null; }

  function refreshSections() {
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    fetch(window.location.pathname + '?sections=1', {
      headers: { 'Accept': 'text/html' }, credentials: 'same-origin', redirect: 'manual'
    }).then(function (response) {
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (!html) { return; }
      var fresh = new DOMParser().parseFromString(html, 'text/html');
      document.querySelectorAll('[data-live-section]').forEach(function (section) {
        var replacement = fresh.getElementById(section.id);
        if (!replacement) { return; }
        section.replaceWith(replacement);
        renderTimes(replacement);
        renderBars(replacement);
      });
      // The sections were rendered when asked for: an event that came meanwhile is newer
      // (shown in the same turn, so the older bar is never painted).
      Object.keys(lastLiveEvent).forEach(function (taskId) {
        var row = liveRow(taskId), data = lastLiveEvent[taskId];
        if (row && row.dataset.taskStatus === data.status) { showLiveProgress(row, data); }
      });
    }).catch(function () { /* network hiccup: the next event tries again */ })
      .then(function () {
        refreshing = false;
        if (refreshAgain) { refreshAgain = false; refreshSections(); }
      });
  }

  function liveRow(taskId) {
    var row = null;
    document.querySelectorAll('.live-task').forEach(function (el) {
      if (el.dataset.taskId === taskId) { row = el; }
    });
    return row;
  }

  function followsNewTasks(name) {
    var follows = false;
    document.querySelectorAll('[data-live-tasks]').forEach(function (section) {
      if (section.dataset.liveTasks.split(' ').indexOf(name) !== -1) { follows = true; }
    });
    return follows;
  }

  function updateLiveRow(data) {
    if (!hasLiveSections()) { return; }
    lastLiveEvent[data.task_id] = data;
    var row = liveRow(data.task_id);
    if (!row) {
      if (ACTIVE[data.status] && followsNewTasks(data.name)) { refreshSections(); }
      return;
    }
    if (row.dataset.taskStatus !== data.status) {
      refreshSections();
      return;
    }
    showLiveProgress(row, data);
  }

  function showLiveProgress(row, data) {
    var progress = row.querySelector('.progress');
    if (progress && Math.min(percent(data), 99) < Number(progress.getAttribute('aria-valuenow'))) {
      return;  // older than what is shown (see updateTask)
    }
    if (progress) { setBar(progress, Math.min(percent(data), 99)); }
    var label = row.querySelector('.live-progress-text');
    var counted = progressText(data);
    if (label && counted) { label.textContent = counted; }
  }

  function setMessageCount(n) {
    var badge = document.getElementById('message_count');
    if (!badge) { return; }
    badge.textContent = numberFmt.format(n);
    badge.classList.toggle('d-none', !n);
  }

  function schedule() {
    if (stopped || document.hidden || source) { return; }
    clearTimeout(timer);
    timer = setTimeout(poll, activeCount() ? FAST : SLOW);
  }

  function poll() {
    fetch(tasks.dataset.notificationsUrl + '?since=' + since, {
      headers: { 'Accept': 'application/json' }, credentials: 'same-origin', redirect: 'manual'
    }).then(function (response) {
      var type = response.headers.get('Content-Type') || '';
      if (response.status === 401 || response.type === 'opaqueredirect' || type.indexOf('application/json') === -1) {
        stopped = true;  // logged out in another tab: nothing more to watch
        return null;
      }
      if (!response.ok) { return null; }
      return response.json();
    }).then(function (notifications) {
      (notifications || []).forEach(handle);
    }).catch(function () { /* network hiccup: try again later */ })
      .then(schedule);
  }

  function handle(n) {
    since = Math.max(since, n.timestamp || 0);
    if (n.name === 'unread_message_count') { setMessageCount(n.data); }
    else if (n.name === 'task_progress') { updateTask(n.data); updateLiveRow(n.data); }
  }

  // The stream: the server sends the current state, then each event as it happens; after a
  // dropped connection the browser reconnects by itself and the server resumes from the last
  // event id. An error status (no Redis: 503), or a stream a proxy holds back, means polling
  // instead, quietly, and another try at the stream a minute later.
  var source = null;
  var OPEN_TIMEOUT = 10000, STREAM_RETRY = 60000;

  function connect() {
    if (stopped) { return; }
    if (!window.EventSource || !tasks.dataset.eventsUrl) { poll(); return; }
    var stream = source = new EventSource(tasks.dataset.eventsUrl);
    var watchdog = setTimeout(function () { fallBack(stream); }, OPEN_TIMEOUT);
    stream.onopen = function () { clearTimeout(watchdog); clearTimeout(timer); };
    stream.onmessage = function (event) { handle(JSON.parse(event.data)); };
    stream.addEventListener('logout', function () {  // logged out (here or in another tab)
      clearTimeout(watchdog);
      stream.close();
      source = null;
      stopped = true;
    });
    stream.onerror = function () {
      if (stream.readyState === EventSource.CLOSED) { clearTimeout(watchdog); fallBack(stream); }
      // Otherwise the browser is already reconnecting (Last-Event-ID: nothing is lost).
    };
  }

  function fallBack(stream) {
    if (source !== stream) { return; }
    stream.close();
    source = null;
    poll();
    setTimeout(function () { if (!source) { clearTimeout(timer); connect(); } }, STREAM_RETRY);
  }

  document.addEventListener('visibilitychange', function () {
    flushSeen();
    if (!document.hidden && !source) { poll(); }
  });
  // Forms posting "dismiss" go through fetch so the page stays as it is.
  tasks.addEventListener('submit', function (event) {
    var form = event.target.closest('form.task-dismiss');
    if (!form) { return; }
    event.preventDefault();
    fetch(form.action, { method: 'POST', body: new FormData(form), credentials: 'same-origin',
                         headers: { 'Accept': 'application/json' } })
      .then(function () { form.closest('.task-alert').remove(); });
  });
  connect();
})();
