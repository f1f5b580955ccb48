// Courier's web dashboard: one page, no build step, no framework.
//
// The page is served with a strict Content-Security-Policy (no inline script or style, no
// eval), so everything here builds DOM nodes with createElement and puts data in with
// textContent: nothing a job, a target or an error message carries is ever parsed as HTML.
// Routing is by the URL's hash (`#/jobs?state=dead&q=/hooks`), so every view, filters
// included, can be bookmarked and shared.
//
// Authentication: the API key is sent once to `POST /ui/session`, which answers with an
// HttpOnly session cookie (the page never sees it) and a CSRF token. Every request goes
// with `credentials: 'same-origin'`; every state-changing one carries `X-CSRF-Token`.
//
// Formatted with `prettier --print-width 110 --single-quote --trailing-comma all`.

(() => {
  'use strict';

  const STATES = ['scheduled', 'queued', 'running', 'succeeded', 'dead', 'cancelled'];
  const TERMINAL = new Set(['succeeded', 'dead', 'cancelled']);
  const RETRYABLE = new Set(['dead', 'cancelled']);
  const CANCELLABLE = new Set(['scheduled', 'queued', 'running']);
  const JOB_FILTERS = ['queue', 'state', 'label', 'created_after', 'created_before', 'q'];
  const PAGE_SIZE = 50;
  const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

  /** The signed-in session: `{name, scope, csrf_token}` (and `queues` when the key is limited). */
  let session = null;
  /** Bumped on every navigation; a view whose number is stale drops what it fetched. */
  let renderSeq = 0;
  /** Timers of the current view (auto-refresh), cleared on navigation. */
  let timers = [];
  /** uPlot instances of the current view, with the element whose width they follow. */
  let charts = [];
  /** Cursors of the pages before the current one, per list (for "Newer"). */
  const pageStacks = new Map();
  /** The jobs list last shown, so that a job page can link back to it. */
  let lastJobsHash = '#/jobs';

  // ---------------------------------------------------------------- DOM helpers

  const $ = (selector, root = document) => root.querySelector(selector);

  /**
   * Builds an element. `attrs` may hold `class`, `on: {event: handler}`, `value`,
   * `checked`, `disabled`, `hidden` and any attribute; `style` is refused on purpose.
   * Children are nodes or strings (strings become text nodes, never HTML).
   */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    appendAll(el, children);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === 'on') {
          for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
        } else if (key === 'class') {
          el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
        } else if (key === 'value') {
          el.value = value;
        } else if (key === 'checked' || key === 'disabled' || key === 'hidden' || key === 'required') {
          el[key] = Boolean(value);
        } else if (key === 'style') {
          throw new Error('inline styles are blocked by the Content-Security-Policy; use a class');
        } else {
          el.setAttribute(key, value === true ? '' : String(value));
        }
      }
    }
    return el;
  }

  function appendAll(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- formatting

  const pad = (n) => String(n).padStart(2, '0');

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  /** A `<time>` showing local time, with the UTC stamp as its tooltip. */
  function timeEl(iso, fallback = '—') {
    if (!iso) return h('span', { class: 'muted' }, fallback);
    return h('time', { datetime: iso, title: iso }, fmtTime(iso));
  }

  /** `0 s`, `1.5 s`, `42 s`, `3 min 5 s`, `1 h`, `2 d 4 h`: the two largest units that are not zero. */
  function fmtSeconds(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return '—';
    const s = Math.max(0, Number(seconds));
    if (s < 1) return s === 0 ? '0 s' : `${s.toFixed(1)} s`;
    if (s < 10 && !Number.isInteger(s)) return `${s.toFixed(1)} s`;
    let rest = Math.floor(s);
    const units = [
      ['d', 86400],
      ['h', 3600],
      ['min', 60],
      ['s', 1],
    ];
    const parts = [];
    for (const [name, size] of units) {
      const n = Math.floor(rest / size);
      rest -= n * size;
      if (n > 0 || parts.length) parts.push([n, name]);
    }
    return parts
      .slice(0, 2)
      .filter(([n], i) => n > 0 || i === 0)
      .map(([n, name]) => `${n} ${name}`)
      .join(' ');
  }

  function fmtClock(unixSeconds) {
    const d = new Date(unixSeconds * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return `${ms} ms`;
    return fmtSeconds(ms / 1000);
  }

  function fmtNumber(n) {
    if (n === null || n === undefined) return '—';
    return Number(n).toLocaleString('en-US');
  }

  /** `2026-01-02T03:04` (a datetime-local value, local time) from an RFC 3339 stamp. */
  function isoToLocalInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  /** RFC 3339 UTC from a datetime-local value (read as local time). */
  function localInputToIso(value) {
    if (!value) return '';
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return '';
    return d.toISOString().replace(/\.000Z$/, 'Z');
  }

  function stateBadge(state, extra) {
    return h('span', { class: ['badge', `state-${state}`], 'data-state': state, ...extra }, state);
  }

  function outcomeText(outcome) {
    if (!outcome) return h('span', { class: 'muted' }, '—');
    const parts = [];
    if (outcome.status_code !== null && outcome.status_code !== undefined) {
      parts.push(
        h(
          'span',
          { class: ['status', outcome.status_code < 300 ? 'ok' : 'bad'] },
          `HTTP ${outcome.status_code}`,
        ),
      );
    }
    if (outcome.error && outcome.error !== `HTTP ${outcome.status_code}`) {
      parts.push(h('span', { class: 'error-text' }, outcome.error));
    }
    if (outcome.duration_ms !== null && outcome.duration_ms !== undefined) {
      parts.push(h('span', { class: 'muted' }, fmtMs(outcome.duration_ms)));
    }
    return h('span', { class: 'outcome' }, parts);
  }

  function labelChips(labels, linkToJobs) {
    const entries = Object.entries(labels || {});
    if (!entries.length) return h('span', { class: 'muted' }, '—');
    return h(
      'span',
      { class: 'chips' },
      entries.map(([k, v]) => {
        const text = `${k}:${v}`;
        return linkToJobs
          ? h('a', { class: 'chip', href: hashFor('/jobs', { label: text }) }, text)
          : h('span', { class: 'chip' }, text);
      }),
    );
  }

  function compactJson(value) {
    if (value === null || value === undefined) return '';
    if (typeof value === 'string') return value;
    try {
      return JSON.stringify(value);
    } catch {
      return String(value);
    }
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  /**
   * One request to Courier. JSON in and out; problems (RFC 9457) become ApiError. A 401
   * from a /v1 route means the session ended: back to the sign-in form.
   */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json, application/problem+json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (UNSAFE.has(method) && session && session.csrf_token) {
      headers['X-CSRF-Token'] = session.csrf_token;
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, {
        title: 'Network error',
        detail: `Courier could not be reached (${e.message}).`,
      });
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const problem =
        data && typeof data === 'object' && !Array.isArray(data)
          ? data
          : { title: res.statusText || `HTTP ${res.status}`, status: res.status, detail: text.slice(0, 300) };
      const err = new ApiError(res.status, problem);
      if (res.status === 401 && path.startsWith('/v1/') && session) {
        sessionEnded(err);
      }
      throw err;
    }
    return data;
  }

  const canAct = () => Boolean(session) && session.scope !== 'read';

  // ---------------------------------------------------------------- errors

  function showError(err) {
    const box = $('#error');
    const problem = (err && err.problem) || { title: 'Error', detail: String((err && err.message) || err) };
    const title = problem.title || 'Error';
    box.replaceChildren(
      h(
        'div',
        { class: 'error-body' },
        h('strong', { class: 'error-title', id: 'error-title' }, title),
        problem.detail && problem.detail !== title
          ? h('span', { class: 'error-detail', id: 'error-detail' }, problem.detail)
          : null,
        Array.isArray(problem.errors) && problem.errors.length
          ? h(
              'ul',
              { class: 'error-fields', id: 'error-fields' },
              problem.errors.map((fe) =>
                h('li', null, h('code', null, fe.field || '?'), ': ', fe.message || ''),
              ),
            )
          : null,
      ),
      h(
        'button',
        {
          type: 'button',
          class: 'link-button error-close',
          'aria-label': 'Dismiss',
          on: { click: clearError },
        },
        '×',
      ),
    );
    box.hidden = false;
  }

  function clearError() {
    const box = $('#error');
    box.hidden = true;
    box.replaceChildren();
  }

  /** Runs `fn` on a button click: the button is disabled meanwhile, and errors are shown. */
  async function withButton(button, fn) {
    clearError();
    button.disabled = true;
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401 && !session)) showError(e);
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- routing

  function parseHash() {
    let raw = location.hash.replace(/^#/, '');
    if (!raw.startsWith('/')) raw = '/queues';
    const qi = raw.indexOf('?');
    const path = qi >= 0 ? raw.slice(0, qi) : raw;
    const params = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
    const parts = path
      .split('/')
      .filter(Boolean)
      .map((p) => {
        try {
          return decodeURIComponent(p);
        } catch {
          return p;
        }
      });
    return { path, parts, params };
  }

  /** `#/path?k=v` with empty values left out. */
  function hashFor(path, params) {
    const qs = new URLSearchParams();
    const entries = params instanceof URLSearchParams ? params.entries() : Object.entries(params || {});
    for (const [k, v] of entries) {
      if (v !== null && v !== undefined && v !== '') qs.set(k, v);
    }
    const s = qs.toString();
    return `#${path}${s ? `?${s}` : ''}`;
  }

  function go(path, params) {
    const target = hashFor(path, params);
    if (location.hash === target) render();
    else location.hash = target;
  }

  function stopTimers() {
    for (const t of timers) clearTimeout(t);
    timers = [];
  }

  function destroyCharts() {
    for (const c of charts) c.plot.destroy();
    charts = [];
  }

  /** What a view gets: whether it is still the one shown, and timers tied to it. */
  function viewContext(seq) {
    return {
      alive: () => seq === renderSeq,
      later(ms, fn) {
        const t = setTimeout(async () => {
          timers = timers.filter((x) => x !== t);
          if (seq !== renderSeq) return;
          try {
            await fn();
          } catch (e) {
            if (seq === renderSeq && !(e instanceof ApiError && e.status === 401)) showError(e);
          }
        }, ms);
        timers.push(t);
        return t;
      },
      cancel(t) {
        if (t === undefined || t === null) return;
        clearTimeout(t);
        timers = timers.filter((x) => x !== t);
      },
    };
  }

  const ROUTES = [
    {
      match: (p) => p.length === 0 || (p.length === 1 && p[0] === 'queues'),
      section: 'queues',
      view: viewQueues,
    },
    { match: (p) => p.length === 1 && p[0] === 'jobs', section: 'jobs', view: viewJobs },
    { match: (p) => p.length === 2 && p[0] === 'jobs', section: 'jobs', view: viewJob },
    { match: (p) => p.length === 1 && p[0] === 'schedules', section: 'schedules', view: viewSchedules },
    { match: (p) => p.length === 2 && p[0] === 'schedules', section: 'schedules', view: viewSchedule },
    { match: (p) => p.length === 1 && p[0] === 'audit', section: 'audit', view: viewAudit },
  ];

  async function render() {
    const seq = ++renderSeq;
    stopTimers();
    destroyCharts();
    clearError();
    if (!session) {
      renderSignIn();
      return;
    }
    showHeader();
    const route = parseHash();
    const found = ROUTES.find((r) => r.match(route.parts));
    for (const a of document.querySelectorAll('.nav a')) {
      a.classList.toggle('active', Boolean(found) && a.dataset.section === found.section);
    }
    const main = $('#main');
    main.dataset.view = found ? found.section : 'not-found';
    if (!found) {
      main.replaceChildren(
        h('h1', null, 'Not found'),
        h('p', null, 'No such page. ', h('a', { href: '#/queues' }, 'Go to the queues.')),
      );
      return;
    }
    main.replaceChildren(h('p', { class: 'muted loading' }, 'Loading…'));
    try {
      await found.view(route, viewContext(seq));
    } catch (e) {
      if (seq !== renderSeq) return;
      if (e instanceof ApiError && e.status === 401 && !session) return;
      showError(e);
      main.replaceChildren(
        h('p', { class: 'muted' }, 'This page could not be loaded.'),
        h('button', { type: 'button', id: 'retry-load', on: { click: () => render() } }, 'Try again'),
      );
    }
  }

  /** The shared header of a view: a title, optional subtitle and buttons. */
  function pageHead(title, ...tools) {
    return h('div', { class: 'page-head' }, h('h1', null, title), h('div', { class: 'tools' }, tools));
  }

  function refreshButton(onClick) {
    return h(
      'button',
      { type: 'button', id: 'refresh', 'data-testid': 'refresh', on: { click: onClick } },
      'Refresh',
    );
  }

  /**
   * "Newer" / "Older" for a keyset-paginated list. The cursor is in the URL; the cursors
   * of the pages before it are kept on a stack per list (same path, same filters).
   */
  function pager(route, nextCursor) {
    const current = route.params.get('cursor') || '';
    const base = new URLSearchParams(route.params);
    base.delete('cursor');
    const key = `${route.path}?${base.toString()}`;
    let stack = pageStacks.get(key);
    if (!stack) {
      stack = [];
      pageStacks.set(key, stack);
    }
    if (!current) stack.length = 0;
    const withCursor = (cursor) => {
      const p = new URLSearchParams(base);
      if (cursor) p.set('cursor', cursor);
      return p;
    };
    return h(
      'nav',
      { class: 'pager', 'aria-label': 'Pages' },
      h(
        'button',
        {
          type: 'button',
          id: 'page-newer',
          'data-testid': 'page-newer',
          disabled: !current,
          on: { click: () => go(route.path, withCursor(stack.length ? stack.pop() : '')) },
        },
        '← Newer',
      ),
      h(
        'button',
        {
          type: 'button',
          id: 'page-older',
          'data-testid': 'page-older',
          disabled: !nextCursor,
          on: {
            click: () => {
              stack.push(current);
              go(route.path, withCursor(nextCursor));
            },
          },
        },
        'Older →',
      ),
    );
  }

  function table(attrs, headings, rows, emptyText) {
    return h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        attrs,
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            headings.map((t) => h('th', { scope: 'col' }, t)),
          ),
        ),
        h(
          'tbody',
          null,
          rows.length
            ? rows
            : h('tr', { class: 'empty' }, h('td', { colspan: headings.length, class: 'muted' }, emptyText)),
        ),
      ),
    );
  }

  function detailList(pairs) {
    return h(
      'dl',
      { class: 'details' },
      pairs
        .filter(Boolean)
        .map(([term, value]) => h('div', { class: 'detail' }, h('dt', null, term), h('dd', null, value))),
    );
  }

  // ---------------------------------------------------------------- session

  function showHeader() {
    $('#header').hidden = false;
    const who = $('#whoami');
    who.replaceChildren(
      h('span', { class: 'key-name' }, session.name || 'key'),
      ' ',
      h(
        'span',
        { class: ['badge', `scope-${session.scope}`], id: 'scope', 'data-scope': session.scope },
        session.scope,
      ),
    );
  }

  function renderSignIn(message) {
    $('#header').hidden = true;
    const main = $('#main');
    main.dataset.view = 'signin';
    const input = h('input', {
      id: 'key',
      name: 'key',
      type: 'password',
      autocomplete: 'off',
      spellcheck: 'false',
      placeholder: 'courier_…',
      required: true,
      'data-testid': 'key',
    });
    const button = h(
      'button',
      { type: 'submit', id: 'signin-submit', class: 'primary', 'data-testid': 'signin-submit' },
      'Sign in',
    );
    main.replaceChildren(
      h(
        'section',
        { class: 'signin-card' },
        h('h1', null, 'Courier'),
        h(
          'p',
          { class: 'muted' },
          'Sign in with an API key. It is exchanged for a session cookie; the page does not keep it.',
        ),
        message ? h('p', { class: 'notice', id: 'signin-notice' }, message) : null,
        h(
          'form',
          {
            id: 'signin',
            'data-testid': 'signin',
            autocomplete: 'off',
            on: {
              submit: (ev) => {
                ev.preventDefault();
                signIn(input, button);
              },
            },
          },
          h('label', { for: 'key' }, 'API key'),
          input,
          button,
        ),
      ),
    );
    input.focus();
  }

  async function signIn(input, button) {
    const key = input.value.trim();
    if (!key) return;
    clearError();
    button.disabled = true;
    try {
      const s = await api('POST', '/ui/session', { key });
      input.value = '';
      session = s;
      const route = parseHash();
      if (!ROUTES.some((r) => r.match(route.parts)) || !location.hash || location.hash === '#') {
        go('/queues');
      } else {
        render();
      }
    } catch (e) {
      showError(e);
      input.select();
    } finally {
      button.disabled = false;
    }
  }

  async function signOut() {
    clearError();
    try {
      await api('DELETE', '/ui/session');
    } catch (e) {
      // Signed out anyway when the session had already ended.
      if (!(e instanceof ApiError && e.status === 401)) {
        showError(e);
        return;
      }
    }
    session = null;
    pageStacks.clear();
    renderSeq++;
    stopTimers();
    destroyCharts();
    renderSignIn('Signed out.');
  }

  function sessionEnded() {
    session = null;
    renderSeq++;
    stopTimers();
    destroyCharts();
    renderSignIn('Your session has ended: sign in again.');
  }

  // ---------------------------------------------------------------- queues

  async function viewQueues(route, ctx) {
    const main = $('#main');
    let editing = null; // the queue whose limits form is open: no auto-refresh meanwhile
    let poll = null;

    const load = async () => {
      const data = await api('GET', '/v1/queues');
      if (!ctx.alive()) return;
      const queues = (data && data.queues) || [];
      const series = await Promise.all(
        queues.map((q) => api('GET', `/v1/queues/${enc(q.name)}/throughput`).catch((e) => ({ error: e }))),
      );
      if (!ctx.alive()) return;
      destroyCharts();
      editing = null;

      const rows = queues.map((q) => {
        const actions = canAct()
          ? h(
              'td',
              { class: 'actions' },
              q.paused
                ? h(
                    'button',
                    {
                      type: 'button',
                      'data-action': 'resume',
                      'data-queue': q.name,
                      id: `queue-resume-${q.name}`,
                      on: {
                        click: (ev) =>
                          withButton(ev.currentTarget, async () => {
                            await api('POST', `/v1/queues/${enc(q.name)}/resume`);
                            await load();
                          }),
                      },
                    },
                    'Resume',
                  )
                : h(
                    'button',
                    {
                      type: 'button',
                      'data-action': 'pause',
                      'data-queue': q.name,
                      id: `queue-pause-${q.name}`,
                      on: {
                        click: (ev) =>
                          withButton(ev.currentTarget, async () => {
                            await api('POST', `/v1/queues/${enc(q.name)}/pause`);
                            await load();
                          }),
                      },
                    },
                    'Pause',
                  ),
              h(
                'button',
                {
                  type: 'button',
                  'data-action': 'limits',
                  'data-queue': q.name,
                  id: `queue-limits-${q.name}`,
                  on: { click: () => openLimits(q) },
                },
                'Limits',
              ),
            )
          : null;
        return h(
          'tr',
          { 'data-queue': q.name, 'data-paused': String(Boolean(q.paused)) },
          h('th', { scope: 'row' }, h('a', { href: hashFor('/jobs', { queue: q.name }) }, q.name)),
          h(
            'td',
            null,
            q.paused
              ? h('span', { class: 'badge paused', 'data-testid': 'queue-paused' }, 'paused')
              : h('span', { class: 'badge active' }, 'active'),
          ),
          h(
            'td',
            { class: 'num' },
            h('a', { href: hashFor('/jobs', { queue: q.name, state: 'scheduled' }) }, fmtNumber(q.scheduled)),
          ),
          h(
            'td',
            { class: 'num' },
            h('a', { href: hashFor('/jobs', { queue: q.name, state: 'queued' }) }, fmtNumber(q.queued)),
          ),
          h(
            'td',
            { class: 'num' },
            h('a', { href: hashFor('/jobs', { queue: q.name, state: 'running' }) }, fmtNumber(q.running)),
          ),
          h(
            'td',
            { class: ['num', q.dead > 0 ? 'bad' : null] },
            h('a', { href: hashFor('/jobs', { queue: q.name, state: 'dead' }) }, fmtNumber(q.dead)),
          ),
          h('td', { class: 'num' }, fmtNumber(q.succeeded_last_hour)),
          h('td', { class: 'num' }, fmtNumber(q.dead_last_hour)),
          h('td', { class: 'num' }, fmtSeconds(q.oldest_queued_age_seconds)),
          h(
            'td',
            { class: 'queue-rate' },
            q.rate ? `${q.rate.per_second}/s, burst ${q.rate.burst}` : h('span', { class: 'muted' }, 'none'),
          ),
          h(
            'td',
            { class: 'queue-concurrency num' },
            q.max_concurrency ? String(q.max_concurrency) : h('span', { class: 'muted' }, 'none'),
          ),
          actions,
        );
      });

      const headings = [
        'Queue',
        'State',
        'Scheduled',
        'Queued',
        'Running',
        'Dead',
        'Succeeded 1 h',
        'Dead 1 h',
        'Oldest queued',
        'Rate limit',
        'Concurrency',
      ];
      if (canAct()) headings.push('Actions');

      const chartCards = queues.map((q, i) => {
        const holder = h('div', { class: 'chart', 'data-chart-queue': q.name });
        const result = series[i];
        const card = h(
          'section',
          { class: 'chart-card', 'data-testid': `chart-${q.name}` },
          h('h3', null, q.name),
          holder,
        );
        if (result && result.error) {
          holder.append(h('p', { class: 'muted' }, `No throughput data: ${result.error.message}`));
        }
        return { card, holder, result };
      });

      main.replaceChildren(
        pageHead(
          'Queues',
          refreshButton(() => {
            clearError();
            load().catch(showError);
          }),
        ),
        table({ id: 'queues', class: 'data' }, headings, rows, 'No queue has jobs yet.'),
        h('div', { id: 'limits-panel', class: 'panel', hidden: true }),
        queues.length ? h('h2', null, 'Throughput, last hour (per minute)') : null,
        h(
          'div',
          { class: 'charts' },
          chartCards.map((c) => c.card),
        ),
      );

      for (const c of chartCards) {
        if (c.result && !c.result.error) drawThroughput(c.holder, c.result);
      }
      ctx.cancel(poll);
      poll = ctx.later(15000, function again() {
        if (editing) {
          poll = ctx.later(5000, again);
          return undefined;
        }
        return load();
      });
    };

    function openLimits(q) {
      editing = q.name;
      const panel = $('#limits-panel');
      const rate = h('input', {
        id: 'limit-rate',
        type: 'number',
        min: '0',
        step: 'any',
        inputmode: 'decimal',
        value: q.rate ? String(q.rate.per_second) : '',
        placeholder: 'no limit',
      });
      const burst = h('input', {
        id: 'limit-burst',
        type: 'number',
        min: '1',
        step: '1',
        value: q.rate ? String(q.rate.burst) : '',
        placeholder: 'default',
      });
      const conc = h('input', {
        id: 'limit-concurrency',
        type: 'number',
        min: '1',
        step: '1',
        value: q.max_concurrency ? String(q.max_concurrency) : '',
        placeholder: 'no limit',
      });
      const save = h(
        'button',
        { type: 'submit', id: 'limits-save', class: 'primary', 'data-action': 'limits-save' },
        'Save',
      );
      const close = () => {
        editing = null;
        panel.hidden = true;
        panel.replaceChildren();
      };
      panel.replaceChildren(
        h(
          'form',
          {
            id: 'limits-form',
            'data-queue': q.name,
            on: {
              submit: (ev) => {
                ev.preventDefault();
                withButton(save, async () => {
                  const body = { max_concurrency: conc.value ? Number(conc.value) : null };
                  if (rate.value) {
                    // Without a burst, the server picks its default.
                    body.rate = { per_second: Number(rate.value) };
                    if (burst.value) body.rate.burst = Number(burst.value);
                  } else {
                    body.rate = null;
                  }
                  await api('PATCH', `/v1/queues/${enc(q.name)}/settings`, body);
                  close();
                  await load();
                });
              },
            },
          },
          h('h2', null, 'Limits of ', h('code', null, q.name)),
          h(
            'p',
            { class: 'muted' },
            'They hold across every worker together. Leave a field empty for no limit.',
          ),
          h(
            'div',
            { class: 'form-row' },
            h('label', null, 'Calls started per second', rate),
            h('label', null, 'Burst', burst),
            h('label', null, 'Calls in flight at most', conc),
          ),
          h(
            'div',
            { class: 'form-row' },
            save,
            h('button', { type: 'button', id: 'limits-cancel', on: { click: close } }, 'Cancel'),
          ),
        ),
      );
      panel.hidden = false;
      rate.focus();
    }

    await load();
  }

  function drawThroughput(holder, data) {
    const minutes = (data && data.minutes) || [];
    if (typeof window.uPlot !== 'function') {
      holder.append(h('p', { class: 'muted' }, 'The chart library did not load.'));
      return;
    }
    const xs = minutes.map((m) => Math.floor(Date.parse(m.at) / 1000));
    const succeeded = minutes.map((m) => m.succeeded || 0);
    const dead = minutes.map((m) => m.dead || 0);
    const submitted = minutes.map((m) => m.submitted || 0);
    const width = Math.max(260, holder.clientWidth || 400);
    const opts = {
      width,
      height: 180,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(4, Math.ceil(max * 1.1))] } },
      axes: [
        {
          stroke: '#5c6370',
          grid: { stroke: '#eceef1' },
          ticks: { stroke: '#d0d4da' },
          space: 56,
          values: (_u, splits) => splits.map(fmtClock),
        },
        { stroke: '#5c6370', grid: { stroke: '#eceef1' }, ticks: { stroke: '#d0d4da' }, size: 48 },
      ],
      series: [
        { label: 'Minute', value: (_u, v) => (v === null || v === undefined ? '--' : fmtClock(v)) },
        { label: 'Succeeded', stroke: '#2b8a3e', width: 2, fill: 'rgba(43, 138, 62, 0.08)' },
        { label: 'Dead', stroke: '#c92a2a', width: 2 },
        { label: 'Submitted', stroke: '#1c64c8', width: 1.5, dash: [5, 4] },
      ],
    };
    const plot = new window.uPlot(opts, [xs, succeeded, dead, submitted], holder);
    charts.push({ plot, holder });
  }

  let resizeQueued = false;
  window.addEventListener('resize', () => {
    if (resizeQueued) return;
    resizeQueued = true;
    requestAnimationFrame(() => {
      resizeQueued = false;
      for (const c of charts) {
        const width = Math.max(260, c.holder.clientWidth);
        if (width !== c.plot.width) c.plot.setSize({ width, height: c.plot.height });
      }
    });
  });

  // ---------------------------------------------------------------- jobs

  function jobFilters(params) {
    const f = {};
    for (const k of JOB_FILTERS) f[k] = params.get(k) || '';
    return f;
  }

  /** The filter as the bulk endpoints take it: empty fields left out, labels as a list. */
  function bulkFilter(f) {
    const out = {};
    for (const k of JOB_FILTERS) {
      if (!f[k]) continue;
      out[k] = k === 'label' ? [f[k]] : f[k];
    }
    return out;
  }

  function describeFilter(f) {
    const parts = JOB_FILTERS.filter((k) => f[k]).map((k) => h('code', null, `${k}=${f[k]}`));
    if (!parts.length) return h('span', null, 'no filter: every job');
    return h(
      'span',
      null,
      parts.flatMap((p, i) => (i ? [' ', p] : [p])),
    );
  }

  async function viewJobs(route, ctx) {
    const main = $('#main');
    const f = jobFilters(route.params);
    // A key limited to some queues may list only those: start on its first one.
    if (!f.queue && session && Array.isArray(session.queues) && session.queues.length) {
      go('/jobs', { ...f, queue: session.queues[0] });
      return;
    }
    lastJobsHash = location.hash || '#/jobs';

    const queuesPromise = api('GET', '/v1/queues').catch(() => null);
    const listHolder = h('div', { id: 'jobs-list' });

    const loadList = async () => {
      const qs = new URLSearchParams();
      for (const k of JOB_FILTERS) if (f[k]) qs.set(k, f[k]);
      qs.set('limit', String(PAGE_SIZE));
      const cursor = route.params.get('cursor');
      if (cursor) qs.set('cursor', cursor);
      const page = await api('GET', `/v1/jobs?${qs}`);
      if (!ctx.alive()) return;
      const jobs = (page && page.jobs) || [];
      listHolder.replaceChildren(
        table(
          { id: 'jobs', class: 'data jobs' },
          ['Job', 'State', 'Queue', 'Target', 'Attempts', 'Last outcome', 'Created', 'Finished / next'],
          jobs.map(jobRow),
          'No job matches.',
        ),
        pager(route, page && page.next_cursor),
      );
    };

    await loadList();
    const queues = await queuesPromise;
    if (!ctx.alive()) return;
    const names = ((queues && queues.queues) || []).map((q) => q.name);

    main.replaceChildren(
      pageHead(
        'Jobs',
        refreshButton(() => {
          clearError();
          loadList().catch(showError);
        }),
      ),
      filterForm(f, names),
      canAct() ? bulkBar(f, loadList) : null,
      listHolder,
    );
  }

  function jobRow(j) {
    const target = j.target || {};
    return h(
      'tr',
      { 'data-job-id': j.id, 'data-state': j.state },
      h(
        'td',
        { class: 'mono id' },
        h('a', { href: `#/jobs/${enc(j.id)}`, title: j.id, class: 'job-link' }, j.id),
      ),
      h(
        'td',
        null,
        stateBadge(j.state),
        j.progress && !TERMINAL.has(j.state)
          ? h('span', { class: 'muted small' }, ` ${j.progress.percent}%`)
          : null,
      ),
      h('td', null, j.queue),
      h(
        'td',
        { class: 'job-url' },
        h('span', { class: 'method' }, target.method || ''),
        ' ',
        h('span', { class: 'url' }, target.url || ''),
      ),
      h(
        'td',
        { class: 'num' },
        `${j.attempts}/${j.max_attempts}`,
        j.round > 1 ? h('span', { class: 'muted small' }, ` r${j.round}`) : null,
      ),
      h('td', { class: 'last-outcome' }, outcomeText(j.last_outcome)),
      h('td', null, timeEl(j.created_at)),
      h('td', null, j.finished_at ? timeEl(j.finished_at) : timeEl(j.next_attempt_at)),
    );
  }

  function filterForm(f, queueNames) {
    const queue = h('input', {
      id: 'f-queue',
      name: 'queue',
      list: 'queue-names',
      value: f.queue,
      placeholder: 'any',
      autocomplete: 'off',
      'data-testid': 'f-queue',
    });
    const state = h(
      'select',
      { id: 'f-state', name: 'state', value: f.state, 'data-testid': 'f-state' },
      h('option', { value: '' }, 'any'),
      STATES.map((s) => h('option', { value: s }, s)),
    );
    const label = h('input', {
      id: 'f-label',
      name: 'label',
      value: f.label,
      placeholder: 'key:value',
      autocomplete: 'off',
      'data-testid': 'f-label',
    });
    const after = h('input', {
      id: 'f-created-after',
      name: 'created_after',
      type: 'datetime-local',
      step: '1',
      value: isoToLocalInput(f.created_after),
      'data-testid': 'f-created-after',
    });
    const before = h('input', {
      id: 'f-created-before',
      name: 'created_before',
      type: 'datetime-local',
      step: '1',
      value: isoToLocalInput(f.created_before),
      'data-testid': 'f-created-before',
    });
    const q = h('input', {
      id: 'f-q',
      name: 'q',
      type: 'search',
      value: f.q,
      placeholder: 'in the URL or the last error',
      autocomplete: 'off',
      'data-testid': 'f-q',
    });
    return h(
      'form',
      {
        id: 'filters',
        class: 'filters',
        role: 'search',
        on: {
          submit: (ev) => {
            ev.preventDefault();
            const lab = label.value.trim();
            if (lab && !lab.includes(':')) {
              showError({
                problem: {
                  title: 'Invalid filter',
                  errors: [{ field: 'label', message: 'must be key:value' }],
                },
              });
              return;
            }
            go('/jobs', {
              queue: queue.value.trim(),
              state: state.value,
              label: lab,
              created_after: localInputToIso(after.value),
              created_before: localInputToIso(before.value),
              q: q.value.trim(),
            });
          },
        },
      },
      h(
        'datalist',
        { id: 'queue-names' },
        queueNames.map((n) => h('option', { value: n })),
      ),
      h('label', null, 'Queue', queue),
      h('label', null, 'State', state),
      h('label', null, 'Label', label),
      h('label', null, 'Created after', after),
      h('label', null, 'Created before', before),
      h('label', { class: 'grow' }, 'Text', q),
      h(
        'div',
        { class: 'filter-buttons' },
        h('button', { type: 'submit', id: 'f-apply', class: 'primary', 'data-testid': 'f-apply' }, 'Apply'),
        h(
          'button',
          { type: 'button', id: 'f-reset', 'data-testid': 'f-reset', on: { click: () => go('/jobs') } },
          'Reset',
        ),
      ),
    );
  }

  /**
   * "Retry / cancel all matching": a dry run counts the jobs matching the filter (as of
   * now), the user confirms that count, and the real request carries the dry run's
   * `as_of` so that jobs matching only later are left alone.
   */
  function bulkBar(f, reload) {
    const panel = h('div', { id: 'bulk-panel', class: 'panel', hidden: true, 'aria-live': 'polite' });
    const start = (kind, button) =>
      withButton(button, async () => {
        const verb = kind === 'retry' ? 'Retry' : 'Cancel';
        const filter = bulkFilter(f);
        panel.hidden = false;
        panel.replaceChildren(h('p', { class: 'muted' }, 'Counting matching jobs…'));
        let counted;
        try {
          counted = await api('POST', `/v1/jobs/bulk/${kind}`, { filter, dry_run: true });
        } catch (e) {
          panel.hidden = true;
          throw e;
        }
        const close = () => {
          panel.hidden = true;
          panel.replaceChildren();
        };
        const confirm = h(
          'button',
          {
            type: 'button',
            id: 'bulk-confirm',
            'data-testid': 'bulk-confirm',
            class: kind === 'cancel' ? 'danger' : 'primary',
            on: {
              click: () =>
                withButton(confirm, async () => {
                  const done = await api('POST', `/v1/jobs/bulk/${kind}`, {
                    filter,
                    dry_run: false,
                    as_of: counted.as_of,
                  });
                  const past = kind === 'retry' ? 'Retried' : 'Cancelled';
                  panel.replaceChildren(
                    h(
                      'p',
                      {
                        id: 'bulk-result',
                        'data-testid': 'bulk-result',
                        class: 'ok',
                        'data-done': String(done.done),
                        'data-matched': String(done.matched),
                      },
                      `${past} ${fmtNumber(done.done)} of the ${fmtNumber(done.matched)} jobs that matched at ${fmtTime(counted.as_of)}.`,
                    ),
                    h('button', { type: 'button', id: 'bulk-close', on: { click: close } }, 'Close'),
                  );
                  await reload();
                }),
            },
          },
          'Confirm',
        );
        const n = counted.matched;
        panel.replaceChildren(
          h(
            'p',
            { class: 'bulk-question', id: 'bulk-question' },
            `${verb} `,
            h('strong', { id: 'bulk-count', 'data-testid': 'bulk-count' }, String(n)),
            ` job${n === 1 ? '' : 's'}?`,
          ),
          h(
            'p',
            { class: 'muted small' },
            'Matching ',
            describeFilter(f),
            ` at ${fmtTime(counted.as_of)}. `,
            kind === 'retry'
              ? 'Only dead and cancelled jobs are retried. '
              : 'Only unfinished jobs are cancelled. ',
            'Jobs that match only after that moment are left alone.',
          ),
          h(
            'div',
            { class: 'form-row' },
            n > 0 ? confirm : null,
            h(
              'button',
              { type: 'button', id: 'bulk-abort', 'data-testid': 'bulk-abort', on: { click: close } },
              n > 0 ? 'Cancel' : 'Close',
            ),
          ),
        );
        if (n > 0) confirm.focus();
      });
    return h(
      'div',
      { class: 'bulk' },
      h(
        'div',
        { class: 'bulk-buttons' },
        h('span', { class: 'muted' }, 'Every job matching the filter:'),
        h(
          'button',
          {
            type: 'button',
            id: 'bulk-retry',
            'data-testid': 'bulk-retry',
            'data-action': 'bulk-retry',
            on: { click: (ev) => start('retry', ev.currentTarget) },
          },
          'Retry all matching',
        ),
        h(
          'button',
          {
            type: 'button',
            id: 'bulk-cancel',
            'data-testid': 'bulk-cancel',
            'data-action': 'bulk-cancel',
            class: 'danger-outline',
            on: { click: (ev) => start('cancel', ev.currentTarget) },
          },
          'Cancel all matching',
        ),
      ),
      panel,
    );
  }

  // ---------------------------------------------------------------- one job

  async function viewJob(route, ctx) {
    const main = $('#main');
    const id = route.parts[1];
    let poll = null;

    const load = async () => {
      const [job, ex] = await Promise.all([
        api('GET', `/v1/jobs/${enc(id)}`),
        api('GET', `/v1/jobs/${enc(id)}/executions`),
      ]);
      if (!ctx.alive()) return;
      main.replaceChildren(jobPage(job, (ex && ex.executions) || [], load));
      // Follow the job while it can still change.
      ctx.cancel(poll);
      poll = TERMINAL.has(job.state) ? null : ctx.later(1500, load);
    };
    await load();
  }

  function jobPage(job, executions, reload) {
    const target = job.target || {};
    const actions = [];
    if (canAct()) {
      const act = (kind) => (ev) =>
        withButton(ev.currentTarget, async () => {
          await api('POST', `/v1/jobs/${enc(job.id)}/${kind}`);
          await reload();
        });
      if (RETRYABLE.has(job.state)) {
        actions.push(
          h(
            'button',
            {
              type: 'button',
              id: 'job-retry',
              'data-testid': 'job-retry',
              'data-action': 'retry',
              class: 'primary',
              on: { click: act('retry') },
            },
            'Retry',
          ),
        );
      }
      if (CANCELLABLE.has(job.state)) {
        actions.push(
          h(
            'button',
            {
              type: 'button',
              id: 'job-cancel',
              'data-testid': 'job-cancel',
              'data-action': 'cancel',
              class: 'danger',
              on: { click: act('cancel') },
            },
            'Cancel',
          ),
        );
      }
    }

    const progress = job.progress
      ? h(
          'section',
          { id: 'job-progress', class: 'panel' },
          h('h2', null, 'Progress'),
          h(
            'div',
            { class: 'progress-row' },
            h('progress', { max: '100', value: String(job.progress.percent || 0) }),
            h('strong', null, ` ${job.progress.percent}%`),
            job.progress.message ? h('span', { class: 'progress-message' }, job.progress.message) : null,
            h('span', { class: 'muted small' }, ' updated ', timeEl(job.progress.updated_at)),
          ),
        )
      : null;

    const callbacks =
      Array.isArray(job.callbacks) && job.callbacks.length
        ? h(
            'span',
            { class: 'chips' },
            job.callbacks.map((c) => {
              const cid = typeof c === 'string' ? c : c.id;
              return h(
                'a',
                { class: 'mono', href: `#/jobs/${enc(cid)}` },
                cid,
                typeof c === 'object' && c.state ? ` (${c.state})` : '',
              );
            }),
          )
        : null;

    const headers = Object.entries(target.headers || {});
    return h(
      'div',
      { class: 'job-page', 'data-job-id': job.id },
      h('p', { class: 'crumbs' }, h('a', { href: lastJobsHash, id: 'back-to-jobs' }, '← Jobs')),
      h(
        'div',
        { class: 'page-head' },
        h('h1', null, 'Job ', h('span', { class: 'mono', id: 'job-id' }, job.id)),
        h(
          'div',
          { class: 'tools' },
          stateBadge(job.state, { id: 'job-state', 'data-testid': 'job-state' }),
          actions,
        ),
      ),
      detailList([
        ['Queue', h('a', { href: hashFor('/jobs', { queue: job.queue }) }, job.queue)],
        [
          'Target',
          h(
            'span',
            { class: 'job-url' },
            h('span', { class: 'method' }, target.method || ''),
            ' ',
            h('span', { class: 'url', id: 'job-url' }, target.url || ''),
          ),
        ],
        [
          'Attempts',
          h(
            'span',
            { id: 'job-attempts' },
            `${job.attempts} of ${job.max_attempts}`,
            job.round > 1 ? ` (round ${job.round})` : '',
          ),
        ],
        ['Priority', String(job.priority)],
        ['Last outcome', outcomeText(job.last_outcome)],
        ['Next attempt', timeEl(job.next_attempt_at)],
        ['Created', timeEl(job.created_at)],
        ['Updated', timeEl(job.updated_at)],
        ['Finished', timeEl(job.finished_at)],
        job.timeout_ms ? ['Timeout', fmtMs(job.timeout_ms)] : null,
        ['Labels', labelChips(job.labels, true)],
        job.schedule
          ? [
              'Schedule',
              h(
                'span',
                null,
                h('a', { href: `#/schedules/${enc(job.schedule.name)}` }, job.schedule.name),
                ' at ',
                timeEl(job.schedule.occurrence),
              ),
            ]
          : null,
        job.callback_of
          ? [
              'Callback of',
              h('a', { class: 'mono', href: `#/jobs/${enc(job.callback_of)}` }, job.callback_of),
            ]
          : null,
        callbacks ? ['Callbacks', callbacks] : null,
      ]),
      progress,
      h(
        'section',
        { class: 'panel' },
        h('h2', null, 'Request'),
        headers.length
          ? h(
              'table',
              { class: 'data compact', id: 'job-headers' },
              h(
                'tbody',
                null,
                headers.map(([k, v]) =>
                  h('tr', null, h('th', { scope: 'row', class: 'mono' }, k), h('td', { class: 'mono' }, v)),
                ),
              ),
            )
          : h('p', { class: 'muted' }, 'No headers.'),
        target.body
          ? h('pre', { class: 'body', id: 'job-body' }, target.body)
          : h('p', { class: 'muted' }, 'No body.'),
      ),
      h('h2', null, 'Executions'),
      executionsTable(executions),
    );
  }

  function executionsTable(executions) {
    const headings = [
      'Round',
      'Attempt',
      'Started',
      'Finished',
      'Duration',
      'Worker',
      'Outcome',
      'Status',
      'Error',
    ];
    const rows = executions.flatMap((e) => {
      const key = {
        'data-round': String(e.round),
        'data-attempt': String(e.attempt),
        'data-outcome': e.outcome,
      };
      const main = h(
        'tr',
        { class: 'execution', ...key },
        h('td', { class: 'num' }, String(e.round)),
        h('td', { class: 'num' }, String(e.attempt)),
        h('td', null, timeEl(e.started_at)),
        h('td', null, timeEl(e.finished_at)),
        h('td', { class: 'num' }, fmtMs(e.duration_ms)),
        h('td', { class: 'mono small' }, e.worker || ''),
        h(
          'td',
          null,
          h('span', { class: ['badge', `outcome-${e.outcome}`] }, e.outcome),
          e.stale
            ? h(
                'span',
                {
                  class: 'badge stale',
                  title:
                    'The late result of an attempt whose lease had been lost; it did not change the job.',
                },
                'stale',
              )
            : null,
        ),
        h(
          'td',
          { class: 'num' },
          e.status_code === null || e.status_code === undefined ? '—' : String(e.status_code),
        ),
        h('td', { class: 'error-text' }, e.error || ''),
      );
      const excerpt = h(
        'tr',
        { class: 'excerpt-row', ...key },
        h(
          'td',
          { colspan: headings.length },
          e.response_excerpt
            ? h(
                'details',
                { open: true },
                h('summary', null, 'Response excerpt'),
                h('pre', { class: 'excerpt' }, e.response_excerpt),
              )
            : h('span', { class: 'muted small' }, 'No response body.'),
        ),
      );
      return [main, excerpt];
    });
    return table(
      { id: 'executions', class: 'data executions', 'data-testid': 'executions' },
      headings,
      rows,
      'No attempt yet.',
    );
  }

  // ---------------------------------------------------------------- schedules

  function calendarText(s) {
    if (s.cron)
      return h(
        'span',
        null,
        h('code', null, s.cron),
        ' ',
        h('span', { class: 'muted' }, s.timezone || 'UTC'),
      );
    if (s.every_ms) return h('span', null, `every ${fmtMs(s.every_ms)}`);
    return '—';
  }

  function scheduleState(s, attrs) {
    return s.paused
      ? h(
          'span',
          attrs,
          h('span', { class: 'badge paused' }, 'paused'),
          s.note ? h('span', { class: 'note' }, ` ${s.note}`) : null,
        )
      : h('span', attrs, h('span', { class: 'badge active' }, 'active'));
  }

  async function viewSchedules(route, ctx) {
    const main = $('#main');
    const qs = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const cursor = route.params.get('cursor');
    if (cursor) qs.set('cursor', cursor);
    const page = await api('GET', `/v1/schedules?${qs}`);
    if (!ctx.alive()) return;
    const schedules = (page && page.schedules) || [];
    const rows = schedules.map((s) => {
      const job = s.job || {};
      const target = job.target || {};
      return h(
        'tr',
        { 'data-schedule': s.name, 'data-paused': String(Boolean(s.paused)) },
        h('th', { scope: 'row' }, h('a', { href: `#/schedules/${enc(s.name)}` }, s.name)),
        h('td', null, calendarText(s)),
        h('td', null, job.queue || 'default'),
        h(
          'td',
          { class: 'job-url' },
          h('span', { class: 'method' }, target.method || ''),
          ' ',
          h('span', { class: 'url' }, target.url || ''),
        ),
        h('td', null, s.overlap || ''),
        h('td', null, s.catchup ? s.catchup.policy : ''),
        h('td', null, scheduleState(s)),
        h('td', null, timeEl((s.next_occurrences || [])[0])),
      );
    });
    main.replaceChildren(
      pageHead(
        'Schedules',
        refreshButton(() => render()),
      ),
      table(
        { id: 'schedules', class: 'data' },
        ['Name', 'When', 'Queue', 'Target', 'Overlap', 'Catch-up', 'State', 'Next occurrence'],
        rows,
        'No schedule yet.',
      ),
      pager(route, page && page.next_cursor),
    );
  }

  async function viewSchedule(route, ctx) {
    const main = $('#main');
    const name = route.parts[1];
    const qs = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const cursor = route.params.get('cursor');
    if (cursor) qs.set('cursor', cursor);
    const [s, runs] = await Promise.all([
      api('GET', `/v1/schedules/${enc(name)}`),
      api('GET', `/v1/schedules/${enc(name)}/runs?${qs}`),
    ]);
    if (!ctx.alive()) return;
    const job = s.job || {};
    const target = job.target || {};

    let actions = null;
    if (canAct()) {
      const act = (button, path, body) =>
        withButton(button, async () => {
          await api('POST', `/v1/schedules/${enc(s.name)}/${path}`, body);
          await render();
        });
      const note = h('input', {
        id: 'sched-note',
        type: 'text',
        maxlength: '1024',
        placeholder: 'Why (optional)',
        autocomplete: 'off',
        'data-testid': 'sched-note',
      });
      const pause = h(
        'button',
        { type: 'submit', id: 'sched-pause', 'data-testid': 'sched-pause', 'data-action': 'pause' },
        'Pause',
      );
      actions = h(
        'div',
        { class: 'tools actions-bar', id: 'sched-actions' },
        h(
          'button',
          {
            type: 'button',
            id: 'sched-trigger',
            'data-testid': 'sched-trigger',
            'data-action': 'trigger',
            class: 'primary',
            on: { click: (ev) => act(ev.currentTarget, 'trigger') },
          },
          'Trigger now',
        ),
        s.paused
          ? h(
              'button',
              {
                type: 'button',
                id: 'sched-resume',
                'data-testid': 'sched-resume',
                'data-action': 'resume',
                on: { click: (ev) => act(ev.currentTarget, 'resume') },
              },
              'Resume',
            )
          : h(
              'form',
              {
                class: 'inline-form',
                id: 'sched-pause-form',
                on: {
                  submit: (ev) => {
                    ev.preventDefault();
                    act(pause, 'pause', { note: note.value.trim() });
                  },
                },
              },
              note,
              pause,
            ),
      );
    }

    const runRows = ((runs && runs.runs) || []).map((r) =>
      h(
        'tr',
        { 'data-run-kind': r.kind, 'data-run-outcome': r.outcome, 'data-job-id': r.job_id || '' },
        h('td', null, timeEl(r.occurrence)),
        h('td', null, r.kind),
        h('td', null, h('span', { class: ['badge', `run-${r.outcome}`] }, r.outcome)),
        h('td', null, r.reason || ''),
        h(
          'td',
          { class: 'mono id' },
          r.job_id
            ? h('a', { href: `#/jobs/${enc(r.job_id)}` }, r.job_id)
            : h('span', { class: 'muted' }, '—'),
        ),
        h('td', null, timeEl(r.decided_at)),
        h(
          'td',
          { class: 'num' },
          r.lateness_ms === null || r.lateness_ms === undefined ? '—' : fmtMs(r.lateness_ms),
        ),
      ),
    );

    main.replaceChildren(
      h('p', { class: 'crumbs' }, h('a', { href: '#/schedules' }, '← Schedules')),
      h(
        'div',
        { class: 'page-head' },
        h('h1', null, 'Schedule ', h('span', { class: 'mono', id: 'schedule-name' }, s.name)),
        h(
          'div',
          { class: 'tools' },
          scheduleState(s, { id: 'sched-state', 'data-paused': String(Boolean(s.paused)) }),
          refreshButton(() => render()),
        ),
      ),
      actions,
      detailList([
        ['When', calendarText(s)],
        [
          'Queue',
          h('a', { href: hashFor('/jobs', { queue: job.queue || 'default' }) }, job.queue || 'default'),
        ],
        [
          'Target',
          h(
            'span',
            { class: 'job-url' },
            h('span', { class: 'method' }, target.method || ''),
            ' ',
            h('span', { class: 'url' }, target.url || ''),
          ),
        ],
        ['Overlap', s.overlap || ''],
        [
          'Catch-up',
          s.catchup
            ? `${s.catchup.policy}, window ${fmtMs(s.catchup.window_ms)}, at most ${s.catchup.max}`
            : '',
        ],
        s.jitter_ms ? ['Jitter', fmtMs(s.jitter_ms)] : null,
        s.start_at ? ['Starts', timeEl(s.start_at)] : null,
        s.end_at ? ['Ends', timeEl(s.end_at)] : null,
        ['Labels', labelChips(job.labels, false)],
        ['Created', timeEl(s.created_at)],
        ['Updated', timeEl(s.updated_at)],
      ]),
      h(
        'section',
        { class: 'panel' },
        h('h2', null, 'Next occurrences'),
        (s.next_occurrences || []).length
          ? h(
              'ol',
              { id: 'next-occurrences', class: 'occurrences' },
              s.next_occurrences.map((o) => h('li', null, timeEl(o))),
            )
          : h('p', { class: 'muted' }, 'None ahead.'),
      ),
      h('h2', null, 'Runs'),
      table(
        { id: 'runs', class: 'data', 'data-testid': 'runs' },
        ['Occurrence', 'Kind', 'Outcome', 'Reason', 'Job', 'Decided', 'Lateness'],
        runRows,
        'No occurrence yet.',
      ),
      pager(route, runs && runs.next_cursor),
    );
  }

  // ---------------------------------------------------------------- audit

  async function viewAudit(route, ctx) {
    const main = $('#main');
    const qs = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const cursor = route.params.get('cursor');
    if (cursor) qs.set('cursor', cursor);
    const page = await api('GET', `/v1/audit?${qs}`);
    if (!ctx.alive()) return;
    const rows = ((page && page.entries) || []).map((e) => {
      const details = compactJson(e.details);
      return h(
        'tr',
        { 'data-audit-id': String(e.id), 'data-audit-action': e.action },
        h('td', null, timeEl(e.at)),
        h('td', null, e.key_name || ''),
        h('td', null, h('code', null, e.action || '')),
        h('td', { class: 'mono small' }, auditTarget(e.target)),
        h(
          'td',
          { class: 'num audit-count' },
          e.count === null || e.count === undefined ? '' : String(e.count),
        ),
        h('td', { class: 'audit-details' }, details ? h('code', { title: details }, details) : ''),
      );
    });
    main.replaceChildren(
      pageHead(
        'Audit log',
        refreshButton(() => render()),
      ),
      h('p', { class: 'muted' }, 'Every change made through the API or this dashboard, newest first.'),
      table(
        { id: 'audit', class: 'data', 'data-testid': 'audit' },
        ['At', 'Key', 'Action', 'Target', 'Count', 'Details'],
        rows,
        'Nothing recorded yet.',
      ),
      pager(route, page && page.next_cursor),
    );
  }

  function auditTarget(target) {
    if (target === null || target === undefined) return '';
    const text = compactJson(target);
    // A job id links to its page.
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text)) {
      return h('a', { href: `#/jobs/${enc(text)}` }, text);
    }
    return text;
  }

  // ---------------------------------------------------------------- start

  async function start() {
    $('#signout').addEventListener('click', signOut);
    window.addEventListener('hashchange', () => {
      if (session) render();
    });
    try {
      session = await api('GET', '/ui/session');
    } catch (e) {
      session = null;
      if (!(e instanceof ApiError && e.status === 401)) showError(e);
      renderSignIn();
      return;
    }
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
