/*
 * annotate.js: the annotation page of herd-labeling. Plain modern JavaScript, no build step and
 * no dependencies. The server renders `<main id="annotate" data-project-id="…">`, and this script
 * builds the whole page inside it from the claim JSON (labeling-ui/README.md holds the contract).
 *
 * Safety: the page CSP is `script-src 'self'; style-src 'self'`, so there are no inline
 * handlers, no eval and no inline styles here (state is shown with classes and `hidden`). Only the
 * server's sanitized `html` fields (rendered by src/markdown.rs) go in through innerHTML. Ids,
 * raw text, error messages and the edit box are set with textContent and value only.
 *
 * ─── Stable hooks (browser tests rely on these; keep them stable) ─────────────────────────────
 *
 * #annotate                   the root; data-project-id (from the server);
 *                             data-state = loading | task | wait | done | failed;
 *                             data-slot-id = the current slot (while data-state=task)
 * #progress                   "N submitted by you · M of R in this project"
 * #draft-status               draft save state; data-state = saving | saved | local | lease-lost;
 *                             text "saving draft…", "draft saved", "draft saved in this browser
 *                             only", "draft saved in this browser (lease expired)"
 * #toggle-guidelines          button; shows/hides #guidelines (aria-expanded follows)
 * #guidelines                 section with the project's guidelines (hidden attribute when closed)
 * #message                    status/error line (aria-live); data-kind = info | success | warning
 *                             | error; empty when nothing to say. Submit retries say "retrying…";
 *                             a lost lease leaves the banner "Your lease expired; your work is
 *                             kept and will be submitted as late."
 * #loading, #wait, #done, #failed   the non-task views (hidden unless data-state says so);
 *                             #retry is the button in #failed (claims again)
 * #task                       the task view
 *   #item-id                  the item's external id
 *   #prompt                   <ol> of the dialogue; li.turn[data-role] > .turn-role + .turn-content
 *   #candidates               <ol> of the responses, best first
 *     li.candidate            one response; id="candidate-<id>", data-candidate-id=<id>,
 *                             data-position=<1-based rank>, tabindex=0 (focus selects it);
 *                             class `selected` when selected, `dragging` while dragged
 *       .card                 the visible card
 *       .drag-handle          pointer-drag handle (Pointer Events: pointerdown on it, then
 *                             pointermove/pointerup anywhere; no HTML5 draggable)
 *       .candidate-position   the visible rank number (1 = best)
 *       .candidate-label      "Response A", "Response B", … (fixed per response for the task)
 *       button.move-up, button.move-down   move the response one rank up/down
 *       button.toggle-raw     switches between the rendered markdown and the raw text
 *       .candidate-body       the rendered markdown
 *       pre.candidate-raw     the raw text (hidden unless toggled)
 *       .gap                  the strength control below this card (not on the last card); gaps
 *                             stay at their rank positions when cards move
 *         select.strength     id="strength-<i>", data-gap=<i> (0-based): how much better rank
 *                             i+1 is than rank i+2. Options: "" (no default, must be chosen),
 *                             significantly_better, better, slightly_better, marginally_better,
 *                             tie. A gap left empty at submit gets class `missing`.
 *   #all-bad                  checkbox: every response is bad
 *   #not-rankable             checkbox: the item cannot be ranked; disables ranking, strengths
 *                             and editing, and submits an empty ranking/strengths and no edit
 *   #edit-best                button: edit the best (rank 1) response
 *   #editor                   the edit panel (hidden until opened)
 *     #edit-target            which response is being edited
 *     #edit-changed           "edited" or "unchanged" (data-changed = true | false)
 *     textarea#edited-text    prefilled with the best response's raw text; sent as `edited` only
 *                             if it differs at submit time. If another response becomes the best,
 *                             the edit is reset with a warning in #message.
 *     #discard-edit           button: drop the edit
 *   #submit                   button: submit (disabled while a submit is in flight)
 *   #skip-reason              text input: why the item is skipped (required to skip)
 *   #skip                     button: skip the item, then claim the next
 * #shortcuts                  the shortcut list shown on the page
 *
 * ─── Keyboard shortcuts (never while typing in a text box or menu, except Ctrl+Enter) ───────────
 *
 * 1 … 9          select (and focus) the response at that rank
 * ArrowUp / K    move the selected response up one rank
 * ArrowDown / J  move the selected response down one rank
 * Shift+1 … 4    strength between the selected response and the one below it (for the bottom
 *                response: the one above): 1 significantly better, 2 better, 3 slightly better,
 *                4 marginally better  (read from KeyboardEvent.code, so any keyboard layout)
 * Shift+0        tie (same gap)
 * E              edit the best response (opens #editor and focuses the text box)
 * ?              show/hide the guidelines
 * Ctrl+Enter     submit (⌘+Enter on a Mac); works inside the text boxes too
 * Escape         leave the text box or menu that has focus (back to the selected response)
 *
 * ─── Drafts ──────────────────────────────────────────────────────────────────────────────────
 *
 * Every change is written at once to localStorage (`herd-draft-<slot_id>`) and, debounced by
 * 700 ms, to PUT /api/slots/<slot_id>/draft. On load the server's draft is used unless the
 * browser's copy has a higher `revision` (a change whose upload had not finished before a
 * reload). The draft holds the `submission_id`, generated once per task, so a submit retried
 * after a reload reuses it, and `time_spent_ms`, the time the task was visible, accumulated
 * across reloads. The draft shape (version 1):
 *   {v, slot_id, revision, submission_id, ranking, strengths ("" = not chosen), all_bad,
 *    not_rankable, edit: null | {candidate_id, content}, skip_reason, time_spent_ms,
 *    pending: null | the exact submit body last sent, saved_at}
 */

'use strict';

(() => {
  const root = document.getElementById('annotate');
  if (!root) {
    return;
  }

  // ─── Constants ───────────────────────────────────────────────────────────────────────────

  const STRENGTHS = [
    ['significantly_better', 'significantly better'],
    ['better', 'better'],
    ['slightly_better', 'slightly better'],
    ['marginally_better', 'marginally better'],
    ['tie', 'tie'],
  ];
  const STRENGTH_VALUES = new Set(STRENGTHS.map(([value]) => value));
  const STRENGTH_BY_CODE = {
    Digit1: 'significantly_better',
    Digit2: 'better',
    Digit3: 'slightly_better',
    Digit4: 'marginally_better',
    Digit0: 'tie',
  };
  const DRAFT_PREFIX = 'herd-draft-';
  const DRAFT_VERSION = 1;
  const DRAFT_DEBOUNCE_MS = 700;
  const DRAFT_RETRY_MS = 5000;
  const DRAFT_MAX_AGE_MS = 14 * 24 * 3600 * 1000;
  const LOCAL_TIME_SAVE_MS = 10000;
  const HEARTBEAT_MS = 60000;
  const WAIT_RETRY_MS = 5000;
  const BACKOFF_FIRST_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const SUCCESS_MESSAGE_MS = 6000;
  const GUIDELINES_KEY = 'herd-guidelines-open';
  const LEASE_LOST_TEXT =
    'Your lease expired; your work is kept and will be submitted as late.';

  // ─── Small DOM helpers ───────────────────────────────────────────────────────────────────

  /** Creates an element: `attributes` are set with setAttribute, except `text` (textContent),
   *  `hidden`/`disabled` (properties) and `className`. Children are nodes or strings. */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) {
        continue;
      }
      if (name === 'text') {
        node.textContent = String(value);
      } else if (name === 'className') {
        node.className = value;
      } else if (name === 'hidden' || name === 'disabled') {
        node[name] = Boolean(value);
      } else {
        node.setAttribute(name, value === true ? '' : String(value));
      }
    }
    for (const child of children) {
      node.append(child);
    }
    return node;
  }

  /** Inserts server-sanitized HTML and makes its links open in a new tab. */
  function setSanitizedHtml(node, html) {
    node.innerHTML = typeof html === 'string' ? html : '';
    for (const link of node.querySelectorAll('a[href]')) {
      link.target = '_blank';
    }
  }

  function normalizeNewlines(text) {
    return String(text).replace(/\r\n?/g, '\n');
  }

  function newSubmissionId() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      return window.crypto.randomUUID();
    }
    // Outside a secure context (plain http on a LAN address) randomUUID is missing but
    // getRandomValues is not: build a version-4 UUID from it.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function backoffDelay(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  function isTypingTarget(target) {
    if (!(target instanceof Element)) {
      return false;
    }
    if (target.isContentEditable) {
      return true;
    }
    const tag = target.tagName;
    if (tag === 'TEXTAREA' || tag === 'SELECT') {
      return true;
    }
    if (tag === 'INPUT') {
      const type = (target.getAttribute('type') || 'text').toLowerCase();
      return !['checkbox', 'radio', 'button', 'submit', 'reset', 'range', 'color'].includes(type);
    }
    return false;
  }

  // ─── Local storage (may be unavailable: private mode, quota) ─────────────────────────────

  function readLocal(key) {
    try {
      const text = window.localStorage.getItem(key);
      return text === null ? null : JSON.parse(text);
    } catch {
      return null;
    }
  }

  function writeLocal(key, value) {
    try {
      window.localStorage.setItem(key, JSON.stringify(value));
      return true;
    } catch {
      return false;
    }
  }

  function removeLocal(key) {
    try {
      window.localStorage.removeItem(key);
    } catch {
      // Nothing to do: storage is unavailable.
    }
  }

  /** Drops drafts of tasks last touched long ago (their leases are long gone). */
  function pruneOldDrafts() {
    try {
      const now = Date.now();
      const stale = [];
      for (let i = 0; i < window.localStorage.length; i += 1) {
        const key = window.localStorage.key(i);
        if (key && key.startsWith(DRAFT_PREFIX)) {
          const draft = readLocal(key);
          if (!draft || typeof draft.saved_at !== 'number' || now - draft.saved_at > DRAFT_MAX_AGE_MS) {
            stale.push(key);
          }
        }
      }
      stale.forEach(removeLocal);
    } catch {
      // Storage unavailable.
    }
  }

  // ─── The page skeleton ───────────────────────────────────────────────────────────────────

  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = csrfMeta ? csrfMeta.getAttribute('content') || '' : '';
  const projectId = root.dataset.projectId;

  const ui = {};

  function buildShell() {
    root.textContent = '';
    ui.progress = el('p', { id: 'progress', className: 'progress', 'aria-live': 'polite' });
    ui.draftStatus = el('span', { id: 'draft-status', className: 'draft-status', role: 'status' });
    ui.toggleGuidelines = el('button', {
      type: 'button',
      id: 'toggle-guidelines',
      'aria-expanded': 'false',
      'aria-controls': 'guidelines',
      text: 'Guidelines (?)',
    });
    const bar = el('div', { className: 'annotate-bar' }, ui.progress, ui.draftStatus, ui.toggleGuidelines);

    ui.message = el('p', { id: 'message', className: 'message', role: 'status', 'aria-live': 'polite' });

    ui.guidelinesBody = el('div', { className: 'guidelines-body markdown' });
    ui.guidelines = el(
      'section',
      { id: 'guidelines', className: 'guidelines', hidden: true, 'aria-label': 'Guidelines' },
      el('h2', { text: 'Guidelines' }),
      ui.guidelinesBody,
    );

    ui.loading = el('section', { id: 'loading', className: 'view' }, el('p', { text: 'Loading the next item…' }));
    ui.waitText = el('p', { id: 'wait-text' });
    ui.wait = el('section', { id: 'wait', className: 'view', hidden: true }, ui.waitText);
    ui.done = el(
      'section',
      { id: 'done', className: 'view', hidden: true },
      el('p', { text: 'Nothing is left for you to annotate in this project. Thank you!' }),
      el('p', {}, el('a', { href: '/projects', text: 'Back to the projects' })),
    );
    ui.retry = el('button', { type: 'button', id: 'retry', text: 'Try again' });
    ui.failed = el(
      'section',
      { id: 'failed', className: 'view', hidden: true },
      el('p', { text: 'The next item could not be loaded (see the message above).' }),
      ui.retry,
    );

    // The task view.
    ui.itemId = el('span', { id: 'item-id', className: 'item-id' });
    ui.prompt = el('ol', { id: 'prompt', className: 'turns' });
    const promptSection = el(
      'section',
      { className: 'prompt-section', 'aria-labelledby': 'prompt-heading' },
      el('h2', { id: 'prompt-heading' }, 'Prompt ', ui.itemId),
      ui.prompt,
    );

    ui.candidates = el('ol', { id: 'candidates', className: 'candidates', 'aria-labelledby': 'candidates-heading' });
    const rankingSection = el(
      'section',
      { className: 'ranking-section' },
      el('h2', { id: 'candidates-heading', text: 'Responses, best first' }),
      el('p', {
        className: 'hint',
        text: 'Drag a response by its ⠿ handle, or press its number and then ↑/↓. Then say how much better each response is than the one below it.',
      }),
      ui.candidates,
    );

    ui.allBad = el('input', { type: 'checkbox', id: 'all-bad' });
    ui.notRankable = el('input', { type: 'checkbox', id: 'not-rankable' });
    const flagsSection = el(
      'fieldset',
      { className: 'flags' },
      el('legend', { text: 'Flags' }),
      el('label', { for: 'all-bad' }, ui.allBad, ' All responses are bad (still rank them: least bad first)'),
      el('label', { for: 'not-rankable' }, ui.notRankable, ' Cannot be ranked (e.g. the prompt is broken)'),
    );

    ui.editBest = el('button', { type: 'button', id: 'edit-best', text: 'Edit the best response (E)' });
    ui.editTarget = el('p', { id: 'edit-target', className: 'edit-target' });
    ui.editChanged = el('span', { id: 'edit-changed', className: 'edit-changed' });
    ui.editedText = el('textarea', {
      id: 'edited-text',
      rows: '14',
      spellcheck: 'true',
      'aria-label': 'Edited best response',
    });
    ui.discardEdit = el('button', { type: 'button', id: 'discard-edit', text: 'Discard the edit' });
    ui.editor = el(
      'div',
      { id: 'editor', className: 'editor', hidden: true },
      ui.editTarget,
      ui.editedText,
      el('div', { className: 'editor-actions' }, ui.editChanged, ui.discardEdit),
    );
    const editSection = el('section', { className: 'edit-section' }, ui.editBest, ui.editor);

    ui.submit = el('button', { type: 'button', id: 'submit', className: 'primary', text: 'Submit (Ctrl+Enter)' });
    ui.skipReason = el('input', {
      type: 'text',
      id: 'skip-reason',
      maxlength: '500',
      autocomplete: 'off',
      placeholder: 'e.g. I cannot judge code in this language',
    });
    ui.skip = el('button', { type: 'button', id: 'skip', text: 'Skip' });
    const actions = el(
      'section',
      { className: 'actions' },
      ui.submit,
      el('div', { className: 'skip' }, el('label', { for: 'skip-reason', text: 'Skip because' }), ui.skipReason, ui.skip),
    );

    ui.task = el('div', { id: 'task', className: 'task', hidden: true }, promptSection, rankingSection, flagsSection, editSection, actions);

    ui.shortcuts = buildShortcuts();

    const column = el(
      'div',
      { className: 'annotate-main' },
      bar,
      ui.message,
      ui.guidelines,
      ui.loading,
      ui.wait,
      ui.done,
      ui.failed,
      ui.task,
    );
    root.append(column, ui.shortcuts);
  }

  function buildShortcuts() {
    const rows = [
      [['1', '…', '9'], 'select the response at that rank'],
      [['↑'], ['K'], 'move the selected response up'],
      [['↓'], ['J'], 'move the selected response down'],
      [['Shift+1'], 'significantly better than the one below'],
      [['Shift+2'], 'better than the one below'],
      [['Shift+3'], 'slightly better than the one below'],
      [['Shift+4'], 'marginally better than the one below'],
      [['Shift+0'], 'tie with the one below'],
      [['E'], 'edit the best response'],
      [['?'], 'show or hide the guidelines'],
      [['Ctrl+Enter'], 'submit (also while typing)'],
      [['Esc'], 'leave a text box or menu'],
    ];
    const list = el('dl', { className: 'shortcut-list' });
    for (const row of rows) {
      const description = row[row.length - 1];
      const keys = el('dt');
      row.slice(0, -1).forEach((group, index) => {
        if (index > 0) {
          keys.append(' or ');
        }
        group.forEach((key) => {
          keys.append(key === '…' ? ' … ' : el('kbd', { text: key }));
        });
      });
      list.append(keys, el('dd', { text: description }));
    }
    return el(
      'aside',
      { id: 'shortcuts', className: 'shortcuts', 'aria-label': 'Keyboard shortcuts' },
      el('h2', { text: 'Keyboard shortcuts' }),
      list,
      el('p', {
        className: 'hint',
        text: 'Shortcuts do nothing while you type in a text box. The Shift+number strengths apply to the gap below the selected response (for the bottom one, the gap above). On a Mac, ⌘+Enter submits too.',
      }),
    );
  }

  // ─── State ───────────────────────────────────────────────────────────────────────────────

  const state = {
    task: null,
    candidates: new Map(), // id → {id, content, label, li, card, position, moveUp, moveDown, body, raw, toggleRaw}
    ranking: [], // candidate ids, best first
    gaps: [], // [{wrap, select}], gap i is between rank i+1 and i+2
    selected: null,
    edit: null, // {candidate_id, content}
    submissionId: null,
    revision: 0,
    baseTimeMs: 0,
    visibleSince: null,
    pending: null,
    leaseLost: false,
    busy: false,
    saveTimer: null,
    saveInFlight: false,
    saveAgain: false,
    heartbeatTimer: null,
    lastHeartbeat: 0,
    claimTimer: null,
    submitTimer: null,
    messageTimer: null,
    drag: null,
    restoringFocus: false,
  };

  // ─── Messages, progress, views ───────────────────────────────────────────────────────────

  function setMessage(text, kind = 'info', durationMs = 0) {
    window.clearTimeout(state.messageTimer);
    state.messageTimer = null;
    ui.message.textContent = text;
    ui.message.dataset.kind = text ? kind : '';
    if (durationMs > 0) {
      state.messageTimer = window.setTimeout(restoreMessage, durationMs);
    }
  }

  /** What #message shows when nothing else is said: the lease banner, if the lease was lost. */
  function restoreMessage() {
    if (state.task && state.leaseLost) {
      setMessage(LEASE_LOST_TEXT, 'warning');
    } else {
      setMessage('');
    }
  }

  function updateProgress(progress) {
    if (!progress || typeof progress !== 'object') {
      return;
    }
    const mine = Number(progress.submitted_by_me) || 0;
    const done = Number(progress.project_submitted) || 0;
    const required = Number(progress.project_required) || 0;
    ui.progress.textContent = `${mine} submitted by you · ${done} of ${required} in this project`;
  }

  const DRAFT_STATUS_TEXT = {
    saving: 'saving draft…',
    saved: 'draft saved',
    local: 'draft saved in this browser only',
    'lease-lost': 'draft saved in this browser (lease expired)',
  };

  function setDraftStatus(status) {
    ui.draftStatus.dataset.state = status;
    ui.draftStatus.textContent = DRAFT_STATUS_TEXT[status] || '';
  }

  function setView(view) {
    root.dataset.state = view;
    ui.loading.hidden = view !== 'loading';
    ui.wait.hidden = view !== 'wait';
    ui.done.hidden = view !== 'done';
    ui.failed.hidden = view !== 'failed';
    ui.task.hidden = view !== 'task';
    if (view !== 'task') {
      delete root.dataset.slotId;
    }
  }

  function setGuidelinesOpen(open) {
    ui.guidelines.hidden = !open;
    ui.toggleGuidelines.setAttribute('aria-expanded', String(open));
    writeLocal(GUIDELINES_KEY, open);
  }

  function toggleGuidelines() {
    setGuidelinesOpen(ui.guidelines.hidden);
  }

  // ─── The server ──────────────────────────────────────────────────────────────────────────

  /** One JSON call. Resolves to {ok, status, data, error, networkError}; never rejects. */
  async function api(method, path, body, { keepalive = false } = {}) {
    const headers = { 'X-CSRF-Token': csrfToken, Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store', keepalive };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      return { ok: false, status: 0, data: null, error: 'the server cannot be reached', networkError: true };
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    const serverError = data && typeof data.error === 'string' ? data.error : '';
    return {
      ok: response.ok && data !== null && typeof data === 'object',
      status: response.status,
      data,
      error: serverError || `HTTP ${response.status}`,
      networkError: false,
    };
  }

  /** Whether a failure is worth retrying by itself: the network, 5xx (503: database down), 429,
   *  or a 2xx whose body was not JSON (a proxy's page; the retry gets the real answer). */
  function isTransient(result) {
    return (
      result.networkError ||
      result.status >= 500 ||
      result.status === 429 ||
      (result.status >= 200 && result.status < 300)
    );
  }

  function describeError(result) {
    if (result.networkError) {
      return 'the server cannot be reached';
    }
    if (result.status === 401) {
      return 'you are signed out; sign in again in another tab, then try again (your work is kept in this browser)';
    }
    return `${result.error} (HTTP ${result.status})`;
  }

  // ─── Claiming ────────────────────────────────────────────────────────────────────────────

  function stopTaskTimers() {
    window.clearTimeout(state.saveTimer);
    state.saveTimer = null;
    state.saveAgain = false;
    window.clearTimeout(state.submitTimer);
    state.submitTimer = null;
    window.clearInterval(state.heartbeatTimer);
    state.heartbeatTimer = null;
    window.clearTimeout(state.claimTimer);
    state.claimTimer = null;
  }

  function leaveTask() {
    stopTaskTimers();
    pauseClock();
    endDrag(false);
    state.task = null;
    state.candidates = new Map();
    state.ranking = [];
    state.gaps = [];
    state.selected = null;
    state.edit = null;
    state.pending = null;
    state.leaseLost = false;
    state.busy = false;
  }

  async function claim(attempt = 0) {
    leaveTask();
    setView('loading');
    const result = await api('POST', `/api/projects/${encodeURIComponent(projectId)}/claim`);
    if (state.task) {
      return; // another claim won the race
    }
    if (result.ok) {
      if (!state.messageTimer) {
        setMessage(''); // a "retrying…" warning is over; a timed note ("Submitted.") stays
      }
      updateProgress(result.data.progress);
      const status = result.data.status;
      if (status === 'assigned' && result.data.task) {
        showTask(result.data.task);
      } else if (status === 'done') {
        setView('done');
      } else if (status === 'wait') {
        const seconds = Math.round(WAIT_RETRY_MS / 1000);
        ui.waitText.textContent = `Every remaining item is being annotated by someone else right now. Trying again in ${seconds} s…`;
        setView('wait');
        state.claimTimer = window.setTimeout(() => claim(0), WAIT_RETRY_MS);
      } else {
        setView('failed');
        setMessage(`Unexpected answer from the server (status ${String(status)}).`, 'error');
      }
      return;
    }
    if (isTransient(result)) {
      const delay = backoffDelay(attempt);
      setMessage(
        `Could not load the next item: ${describeError(result)}; retrying… in ${Math.ceil(delay / 1000)} s.`,
        'warning',
      );
      state.claimTimer = window.setTimeout(() => claim(attempt + 1), delay);
      return;
    }
    setView('failed');
    setMessage(`Could not load the next item: ${describeError(result)}.`, 'error');
  }

  // ─── Showing a task ──────────────────────────────────────────────────────────────────────

  function showTask(task) {
    state.task = task;
    state.leaseLost = false;
    const candidates = Array.isArray(task.candidates) ? task.candidates : [];

    ui.itemId.textContent = task.item && task.item.id != null ? `(item ${String(task.item.id)})` : '';
    setSanitizedHtml(ui.guidelinesBody, task.guidelines_html);
    if (!ui.guidelinesBody.textContent.trim()) {
      ui.guidelinesBody.textContent = 'This project has no guidelines.';
    }

    // The prompt.
    ui.prompt.textContent = '';
    const turns = task.item && Array.isArray(task.item.prompt) ? task.item.prompt : [];
    for (const turn of turns) {
      const role = typeof turn.role === 'string' ? turn.role : 'unknown';
      const roleClass = /^[a-z]+$/.test(role) ? `role-${role}` : 'role-other';
      const content = el('div', { className: 'turn-content markdown' });
      setSanitizedHtml(content, turn.html);
      ui.prompt.append(
        el('li', { className: `turn ${roleClass}`, 'data-role': role }, el('div', { className: 'turn-role', text: role }), content),
      );
    }

    // The candidates, in the server's display order (the initial ranking).
    ui.candidates.textContent = '';
    state.candidates = new Map();
    candidates.forEach((candidate, index) => {
      const entry = buildCandidate(candidate, index);
      state.candidates.set(entry.id, entry);
    });
    state.ranking = candidates.map((candidate) => candidate.id);
    state.gaps = [];
    for (let i = 0; i + 1 < state.ranking.length; i += 1) {
      state.gaps.push(buildGap(i));
    }

    // Reset the controls, then apply the draft.
    ui.allBad.checked = false;
    ui.notRankable.checked = false;
    ui.skipReason.value = '';
    state.edit = null;
    state.selected = null;
    state.pending = null;
    const restored = restoreDraft(task);

    renderOrder();
    renderEditor();
    applyNotRankable();
    setBusy(false);
    root.dataset.slotId = String(task.slot_id);
    setView('task');
    window.scrollTo(0, 0);

    // Clock, heartbeat and a first local save (so the submission_id survives a reload).
    startClock();
    state.lastHeartbeat = Date.now();
    state.heartbeatTimer = window.setInterval(heartbeatIfVisible, HEARTBEAT_MS);
    saveLocal();
    if (restored) {
      setDraftStatus('saved');
    } else {
      ui.draftStatus.textContent = '';
      delete ui.draftStatus.dataset.state;
    }
    if (state.pending) {
      setMessage(
        'An earlier submit of this item may not have reached the server. Press Submit to send it again.',
        'warning',
      );
    }
  }

  function buildCandidate(candidate, index) {
    const id = candidate.id;
    const label = `Response ${index < 26 ? String.fromCharCode(65 + index) : index + 1}`;
    const position = el('span', { className: 'candidate-position', 'aria-hidden': 'true' });
    const moveUp = el('button', { type: 'button', className: 'move-up', 'aria-label': `Move ${label} up`, text: '↑' });
    const moveDown = el('button', { type: 'button', className: 'move-down', 'aria-label': `Move ${label} down`, text: '↓' });
    const toggleRaw = el('button', { type: 'button', className: 'toggle-raw', 'aria-pressed': 'false', text: 'Raw text' });
    const body = el('div', { className: 'candidate-body markdown' });
    setSanitizedHtml(body, candidate.html);
    const raw = el('pre', { className: 'candidate-raw', hidden: true });
    raw.textContent = typeof candidate.content === 'string' ? candidate.content : '';
    const card = el(
      'div',
      { className: 'card' },
      el(
        'div',
        { className: 'candidate-header' },
        el('span', { className: 'drag-handle', title: 'Drag to move', 'aria-hidden': 'true', text: '⠿' }),
        position,
        el('span', { className: 'candidate-label', text: label }),
        el('span', { className: 'candidate-tools' }, moveUp, moveDown, toggleRaw),
      ),
      body,
      raw,
    );
    const li = el(
      'li',
      { className: 'candidate', id: `candidate-${id}`, 'data-candidate-id': String(id), tabindex: '0' },
      card,
    );
    ui.candidates.append(li);
    return {
      id,
      content: typeof candidate.content === 'string' ? candidate.content : '',
      label,
      li,
      card,
      position,
      moveUp,
      moveDown,
      body,
      raw,
      toggleRaw,
    };
  }

  function buildGap(index) {
    const select = el('select', { id: `strength-${index}`, className: 'strength', 'data-gap': String(index) });
    select.append(el('option', { value: '', text: '— choose —' }));
    for (const [value, text] of STRENGTHS) {
      select.append(el('option', { value, text }));
    }
    const wrap = el(
      'div',
      { className: 'gap' },
      el('label', { for: `strength-${index}`, text: `#${index + 1} vs #${index + 2}: #${index + 1} is` }),
      select,
    );
    return { wrap, select };
  }

  /** Puts the cards in `state.ranking` order, each gap under the card at its rank, and the
   *  numbers, labels and button states in line. Keeps the focused element focused. */
  function renderOrder() {
    const active = document.activeElement;
    const count = state.ranking.length;
    state.ranking.forEach((id, index) => {
      const entry = state.candidates.get(id);
      if (ui.candidates.children[index] !== entry.li) {
        ui.candidates.insertBefore(entry.li, ui.candidates.children[index] || null);
      }
      entry.li.dataset.position = String(index + 1);
      entry.position.textContent = String(index + 1);
      entry.li.setAttribute('aria-label', `${entry.label}, rank ${index + 1} of ${count}`);
      entry.li.classList.toggle('selected', state.selected === id);
      if (index < state.gaps.length) {
        const gap = state.gaps[index].wrap;
        if (gap.parentNode !== entry.li) {
          entry.li.append(gap);
        }
      }
    });
    updateRankingControls();
    if (active instanceof HTMLElement && active !== document.activeElement && root.contains(active)) {
      state.restoringFocus = true; // not a user's choice: focusin must not change the selection
      active.focus({ preventScroll: true });
      state.restoringFocus = false;
    }
  }

  function updateRankingControls() {
    const locked = ui.notRankable.checked || state.busy;
    const count = state.ranking.length;
    state.ranking.forEach((id, index) => {
      const entry = state.candidates.get(id);
      entry.moveUp.disabled = locked || index === 0;
      entry.moveDown.disabled = locked || index === count - 1;
    });
    for (const gap of state.gaps) {
      gap.select.disabled = locked;
    }
    ui.editBest.disabled = locked || count === 0;
    ui.editedText.disabled = locked;
    ui.discardEdit.disabled = locked;
  }

  function applyNotRankable() {
    const off = ui.notRankable.checked;
    ui.task.classList.toggle('not-rankable', off);
    ui.candidates.classList.toggle('locked', off);
    updateRankingControls();
  }

  function setBusy(busy) {
    state.busy = busy;
    ui.task.classList.toggle('busy', busy);
    ui.task.setAttribute('aria-busy', String(busy));
    ui.submit.disabled = busy;
    ui.skip.disabled = busy;
    ui.skipReason.disabled = busy;
    ui.allBad.disabled = busy;
    ui.notRankable.disabled = busy;
    updateRankingControls();
  }

  // ─── Selecting and moving ────────────────────────────────────────────────────────────────

  function selectCandidate(id, { focus = false } = {}) {
    if (!state.candidates.has(id)) {
      return;
    }
    state.selected = id;
    for (const entry of state.candidates.values()) {
      entry.li.classList.toggle('selected', entry.id === id);
    }
    const entry = state.candidates.get(id);
    if (focus && document.activeElement !== entry.li) {
      entry.li.focus({ preventScroll: true });
      entry.li.scrollIntoView({ block: 'nearest' });
    }
  }

  function canRank() {
    return Boolean(state.task) && !state.busy && !ui.notRankable.checked;
  }

  /** Moves candidate `id` to rank index `target` (0-based); returns whether anything moved. */
  function moveCandidate(id, target) {
    const from = state.ranking.indexOf(id);
    const to = Math.max(0, Math.min(state.ranking.length - 1, target));
    if (from < 0 || from === to) {
      return false;
    }
    state.ranking.splice(from, 1);
    state.ranking.splice(to, 0, id);
    renderOrder();
    return true;
  }

  function moveSelected(delta) {
    if (!canRank()) {
      return;
    }
    if (state.selected === null) {
      setMessage('Select a response first: press its number (1–9) or click it.', 'info', 4000);
      return;
    }
    const id = state.selected;
    if (moveCandidate(id, state.ranking.indexOf(id) + delta)) {
      const entry = state.candidates.get(id);
      entry.li.focus({ preventScroll: true });
      entry.li.scrollIntoView({ block: 'nearest' });
      changed();
    }
  }

  function setStrengthForSelected(value) {
    if (!canRank()) {
      return;
    }
    if (state.gaps.length === 0) {
      return;
    }
    if (state.selected === null) {
      setMessage('Select a response first: press its number (1–9) or click it.', 'info', 4000);
      return;
    }
    const index = state.ranking.indexOf(state.selected);
    const gapIndex = Math.min(index, state.gaps.length - 1);
    state.gaps[gapIndex].select.value = value;
    state.gaps[gapIndex].wrap.classList.remove('missing');
    changed();
  }

  // ─── Drag and drop with Pointer Events ───────────────────────────────────────────────────

  function onPointerDown(event) {
    const handle = event.target instanceof Element ? event.target.closest('.drag-handle') : null;
    if (!handle || event.button !== 0 || !event.isPrimary || !canRank() || state.drag) {
      return;
    }
    const li = handle.closest('li.candidate');
    const id = state.ranking.find((candidate) => state.candidates.get(candidate).li === li);
    if (id === undefined) {
      return;
    }
    event.preventDefault(); // no text selection, no native drag
    try {
      handle.setPointerCapture(event.pointerId);
    } catch {
      // The document listeners below still see the events.
    }
    state.drag = { id, pointerId: event.pointerId, handle, startRanking: state.ranking.slice() };
    selectCandidate(id);
    li.focus({ preventScroll: true });
    li.classList.add('dragging');
    ui.candidates.classList.add('drag-active');
    document.addEventListener('pointermove', onPointerMove);
    document.addEventListener('pointerup', onPointerUp);
    document.addEventListener('pointercancel', onPointerCancel);
  }

  function onPointerMove(event) {
    const drag = state.drag;
    if (!drag || event.pointerId !== drag.pointerId) {
      return;
    }
    event.preventDefault();
    // The new rank is the number of other cards whose middle is above the pointer: moving the
    // dragged card shifts the others away from the pointer, so this does not oscillate.
    let target = 0;
    for (const id of state.ranking) {
      if (id !== drag.id) {
        const rect = state.candidates.get(id).card.getBoundingClientRect();
        if (rect.top + rect.height / 2 < event.clientY) {
          target += 1;
        }
      }
    }
    moveCandidate(drag.id, target);
    // Scroll when the pointer nears the window's edge, so long lists can be reordered.
    const edge = 48;
    if (event.clientY < edge) {
      window.scrollBy(0, -16);
    } else if (event.clientY > window.innerHeight - edge) {
      window.scrollBy(0, 16);
    }
  }

  function onPointerUp(event) {
    if (state.drag && event.pointerId === state.drag.pointerId) {
      endDrag(true);
    }
  }

  function onPointerCancel(event) {
    if (state.drag && event.pointerId === state.drag.pointerId) {
      endDrag(false);
    }
  }

  /** Ends a drag: `commit` keeps the new order (and saves it), otherwise it is undone. */
  function endDrag(commit) {
    const drag = state.drag;
    if (!drag) {
      return;
    }
    state.drag = null;
    document.removeEventListener('pointermove', onPointerMove);
    document.removeEventListener('pointerup', onPointerUp);
    document.removeEventListener('pointercancel', onPointerCancel);
    try {
      drag.handle.releasePointerCapture(drag.pointerId);
    } catch {
      // Already released.
    }
    ui.candidates.classList.remove('drag-active');
    const entry = state.candidates.get(drag.id);
    if (entry) {
      entry.li.classList.remove('dragging');
    }
    const moved = drag.startRanking.some((id, index) => state.ranking[index] !== id);
    if (!moved || !state.task) {
      return;
    }
    if (commit) {
      if (entry) {
        entry.li.focus({ preventScroll: true });
      }
      changed();
    } else {
      state.ranking = drag.startRanking;
      renderOrder();
    }
  }

  // ─── Editing the best response ───────────────────────────────────────────────────────────

  function originalContent(id) {
    const entry = state.candidates.get(id);
    return entry ? normalizeNewlines(entry.content) : '';
  }

  function editIsChanged() {
    return Boolean(state.edit) && normalizeNewlines(state.edit.content) !== originalContent(state.edit.candidate_id);
  }

  function openEditor() {
    if (!canRank() || state.ranking.length === 0) {
      return;
    }
    if (!state.edit) {
      const top = state.ranking[0];
      state.edit = { candidate_id: top, content: originalContent(top) };
      changed();
    }
    renderEditor();
    ui.editedText.focus();
  }

  function discardEdit() {
    if (!state.edit) {
      return;
    }
    state.edit = null;
    renderEditor();
    changed();
    ui.editBest.focus();
  }

  function renderEditor() {
    if (!state.edit) {
      ui.editor.hidden = true;
      ui.editedText.value = '';
      ui.editBest.textContent = 'Edit the best response (E)';
      return;
    }
    const entry = state.candidates.get(state.edit.candidate_id);
    ui.editor.hidden = false;
    if (ui.editedText.value !== state.edit.content) {
      ui.editedText.value = state.edit.content;
    }
    ui.editTarget.textContent = `Editing ${entry ? entry.label : 'the best response'} (rank 1). If your text differs from the original, it is submitted as a better answer than every response.`;
    ui.editBest.textContent = 'Go to the edit (E)';
    renderEditChanged();
  }

  function renderEditChanged() {
    const edited = editIsChanged();
    ui.editChanged.dataset.changed = String(edited);
    ui.editChanged.textContent = edited ? 'edited' : 'unchanged';
  }

  /** After any change of order: an edit belongs to the best response, so a new best resets it. */
  function checkEditTarget() {
    if (!state.edit || state.edit.candidate_id === state.ranking[0]) {
      return;
    }
    const entry = state.candidates.get(state.edit.candidate_id);
    const lost = editIsChanged();
    state.edit = null;
    renderEditor();
    setMessage(
      `${entry ? entry.label : 'The edited response'} is no longer the best, so its edit was reset${lost ? ' (your changes were discarded)' : ''}. Press E to edit the new best response.`,
      'warning',
    );
  }

  // ─── Drafts ──────────────────────────────────────────────────────────────────────────────

  function draftKey(slotId) {
    return `${DRAFT_PREFIX}${slotId}`;
  }

  function collectDraft() {
    return {
      v: DRAFT_VERSION,
      slot_id: state.task.slot_id,
      revision: state.revision,
      submission_id: state.submissionId,
      ranking: state.ranking.slice(),
      strengths: state.gaps.map((gap) => gap.select.value),
      all_bad: ui.allBad.checked,
      not_rankable: ui.notRankable.checked,
      edit: state.edit ? { candidate_id: state.edit.candidate_id, content: state.edit.content } : null,
      skip_reason: ui.skipReason.value,
      time_spent_ms: Math.round(timeSpent()),
      pending: state.pending,
      saved_at: Date.now(),
    };
  }

  /** Applies the newer of the server's and this browser's drafts; returns whether one was used. */
  function restoreDraft(task) {
    const ids = state.ranking;
    const server = isDraft(task.draft) ? task.draft : null;
    const local = readLocal(draftKey(task.slot_id));
    const browser = isDraft(local) ? local : null;
    let draft = server;
    if (browser && (!server || (Number(browser.revision) || 0) > (Number(server.revision) || 0))) {
      draft = browser;
    }
    state.submissionId = null;
    state.revision = 0;
    state.baseTimeMs = 0;
    if (draft) {
      state.revision = Number(draft.revision) || 0;
      state.baseTimeMs = Math.max(
        Number(server && server.time_spent_ms) || 0,
        Number(browser && browser.time_spent_ms) || 0,
      );
      if (typeof draft.submission_id === 'string' && draft.submission_id.length >= 1 && draft.submission_id.length <= 100) {
        state.submissionId = draft.submission_id;
      }
      if (Array.isArray(draft.ranking) && isPermutation(draft.ranking, ids)) {
        state.ranking = draft.ranking.slice();
      }
      if (Array.isArray(draft.strengths) && draft.strengths.length === state.gaps.length) {
        draft.strengths.forEach((value, index) => {
          state.gaps[index].select.value = STRENGTH_VALUES.has(value) ? value : '';
        });
      }
      ui.allBad.checked = draft.all_bad === true;
      ui.notRankable.checked = draft.not_rankable === true;
      ui.skipReason.value = typeof draft.skip_reason === 'string' ? draft.skip_reason : '';
      if (
        draft.edit &&
        typeof draft.edit === 'object' &&
        draft.edit.candidate_id === state.ranking[0] &&
        typeof draft.edit.content === 'string'
      ) {
        state.edit = { candidate_id: draft.edit.candidate_id, content: draft.edit.content };
      }
      if (
        draft.pending &&
        typeof draft.pending === 'object' &&
        draft.slot_id === task.slot_id &&
        draft.pending.lease_token === task.lease_token &&
        draft.pending.submission_id === state.submissionId
      ) {
        state.pending = draft.pending;
      }
    }
    if (!state.submissionId) {
      state.submissionId = newSubmissionId();
    }
    return Boolean(draft);
  }

  function isDraft(value) {
    return Boolean(value) && typeof value === 'object' && value.v === DRAFT_VERSION;
  }

  function isPermutation(candidate, ids) {
    if (candidate.length !== ids.length) {
      return false;
    }
    const wanted = new Set(ids);
    const seen = new Set();
    for (const id of candidate) {
      if (!wanted.has(id) || seen.has(id)) {
        return false;
      }
      seen.add(id);
    }
    return true;
  }

  /** Writes the draft to this browser now; returns whether storage took it. */
  function saveLocal() {
    if (!state.task) {
      return false;
    }
    return writeLocal(draftKey(state.task.slot_id), collectDraft());
  }

  /** Every user change ends here: local save now, server save debounced. */
  function changed() {
    if (!state.task) {
      return;
    }
    checkEditTarget();
    state.revision += 1;
    saveLocal();
    if (state.leaseLost) {
      setDraftStatus('lease-lost');
      return;
    }
    setDraftStatus('saving');
    window.clearTimeout(state.saveTimer);
    state.saveTimer = window.setTimeout(() => putDraft(), DRAFT_DEBOUNCE_MS);
  }

  async function putDraft({ keepalive = false } = {}) {
    window.clearTimeout(state.saveTimer);
    state.saveTimer = null;
    if (!state.task) {
      return;
    }
    if (state.leaseLost) {
      setDraftStatus('lease-lost');
      return;
    }
    if (state.saveInFlight && !keepalive) {
      state.saveAgain = true; // one upload at a time, so they cannot arrive out of order
      return;
    }
    const task = state.task;
    const draft = collectDraft();
    state.saveInFlight = true;
    const result = await api(
      'PUT',
      `/api/slots/${encodeURIComponent(task.slot_id)}/draft`,
      { lease_token: task.lease_token, draft },
      { keepalive },
    );
    state.saveInFlight = false;
    if (state.task !== task) {
      return;
    }
    if (result.ok) {
      if (state.saveAgain) {
        state.saveAgain = false;
        putDraft();
      } else if (draft.revision === state.revision && !state.saveTimer) {
        setDraftStatus('saved');
      }
      return;
    }
    state.saveAgain = false;
    if (result.status === 409) {
      onLeaseLost();
      return;
    }
    setDraftStatus('local');
    if (isTransient(result) && !state.saveTimer) {
      state.saveTimer = window.setTimeout(() => putDraft(), DRAFT_RETRY_MS);
    }
  }

  // ─── Time spent (visible time only, accumulated across reloads through the draft) ────────

  function startClock() {
    if (state.visibleSince === null && document.visibilityState === 'visible') {
      state.visibleSince = performance.now();
    }
  }

  function pauseClock() {
    if (state.visibleSince !== null) {
      state.baseTimeMs += performance.now() - state.visibleSince;
      state.visibleSince = null;
    }
  }

  function timeSpent() {
    return state.baseTimeMs + (state.visibleSince === null ? 0 : performance.now() - state.visibleSince);
  }

  // ─── Heartbeat ───────────────────────────────────────────────────────────────────────────

  function heartbeatIfVisible() {
    if (document.visibilityState === 'visible') {
      heartbeat();
    }
  }

  async function heartbeat() {
    const task = state.task;
    if (!task || state.leaseLost) {
      return;
    }
    state.lastHeartbeat = Date.now();
    const result = await api('POST', `/api/slots/${encodeURIComponent(task.slot_id)}/heartbeat`, {
      lease_token: task.lease_token,
    });
    if (state.task !== task) {
      return;
    }
    if (result.ok && typeof result.data.lease_expires_ms === 'number') {
      task.lease_expires_ms = result.data.lease_expires_ms;
    } else if (result.status === 409) {
      onLeaseLost();
    }
  }

  function onLeaseLost() {
    if (!state.task || state.leaseLost) {
      return;
    }
    state.leaseLost = true;
    window.clearInterval(state.heartbeatTimer);
    state.heartbeatTimer = null;
    saveLocal();
    setDraftStatus('lease-lost');
    if (!ui.message.textContent || ui.message.dataset.kind !== 'error') {
      setMessage(LEASE_LOST_TEXT, 'warning');
    }
  }

  // ─── Submitting and skipping ─────────────────────────────────────────────────────────────

  /** The judgment from the page, or {error} naming what is missing. */
  function buildJudgment() {
    if (ui.notRankable.checked) {
      return {
        judgment: { ranking: [], strengths: [], all_bad: ui.allBad.checked, not_rankable: true, edited: null },
      };
    }
    const missing = [];
    state.gaps.forEach((gap, index) => {
      const empty = gap.select.value === '';
      gap.wrap.classList.toggle('missing', empty);
      if (empty) {
        missing.push(index);
      }
    });
    if (missing.length > 0) {
      const names = missing.map((index) => `#${index + 1} vs #${index + 2}`).join(', ');
      return {
        error: `Choose how much better each response is than the one below it (missing: ${names}).`,
        focus: state.gaps[missing[0]].select,
      };
    }
    let edited = null;
    if (editIsChanged()) {
      if (!state.edit.content.trim()) {
        return { error: 'The edited response is empty: write it, or discard the edit.', focus: ui.editedText };
      }
      edited = { candidate_id: state.edit.candidate_id, content: state.edit.content };
    }
    return {
      judgment: {
        ranking: state.ranking.slice(),
        strengths: state.gaps.map((gap) => gap.select.value),
        all_bad: ui.allBad.checked,
        not_rankable: false,
        edited,
      },
    };
  }

  function sameJudgment(body, judgment) {
    const pick = (value) =>
      JSON.stringify([value.ranking, value.strengths, value.all_bad, value.not_rankable, value.edited]);
    return pick(body) === pick(judgment);
  }

  function submit() {
    if (!state.task || state.busy) {
      return;
    }
    const built = buildJudgment();
    if (built.error) {
      setMessage(built.error, 'error');
      if (built.focus && !built.focus.disabled) {
        built.focus.focus();
      }
      return;
    }
    const task = state.task;
    let body;
    if (
      state.pending &&
      state.pending.lease_token === task.lease_token &&
      state.pending.submission_id === state.submissionId &&
      sameJudgment(state.pending, built.judgment)
    ) {
      body = state.pending; // a retry sends exactly the same body
    } else {
      body = {
        lease_token: task.lease_token,
        submission_id: state.submissionId,
        ...built.judgment,
        time_spent_ms: Math.min(7 * 24 * 3600 * 1000, Math.max(0, Math.round(timeSpent()))),
      };
    }
    state.pending = body;
    saveLocal();
    setBusy(true);
    setMessage('Submitting…', 'info');
    sendSubmit(task, body, 0);
  }

  async function sendSubmit(task, body, attempt) {
    state.submitTimer = null;
    const result = await api('POST', `/api/slots/${encodeURIComponent(task.slot_id)}/submit`, body);
    if (state.task !== task) {
      return;
    }
    if (result.ok) {
      onSubmitted(task, result.data);
      return;
    }
    if (isTransient(result)) {
      const delay = backoffDelay(attempt);
      setMessage(
        `Submit failed (${describeError(result)}): retrying… in ${Math.ceil(delay / 1000)} s (attempt ${attempt + 1}). Your work is kept.`,
        'warning',
      );
      state.submitTimer = window.setTimeout(() => sendSubmit(task, body, attempt + 1), delay);
      return;
    }
    setBusy(false);
    if (result.status !== 401) {
      // The server looked at this body and refused it: the next submit builds a new one.
      state.pending = null;
      saveLocal();
    }
    setMessage(`Not submitted: ${describeError(result)}`, 'error');
  }

  function onSubmitted(task, data) {
    const notes = ['Submitted.'];
    if (data.late) {
      notes.push('It was late (your lease had expired), so it is flagged late.');
    }
    if (data.over_quota) {
      notes.push('Someone else had taken this item meanwhile; yours is kept as an extra annotation (over quota).');
    }
    removeLocal(draftKey(task.slot_id));
    updateProgress(data.progress);
    leaveTask();
    setMessage(notes.join(' '), data.late || data.over_quota ? 'warning' : 'success', SUCCESS_MESSAGE_MS);
    claim();
  }

  async function skip() {
    if (!state.task || state.busy) {
      return;
    }
    const reason = ui.skipReason.value.trim();
    if (!reason) {
      setMessage('Say why you skip this item (in the box next to Skip).', 'error');
      ui.skipReason.focus();
      return;
    }
    const task = state.task;
    setBusy(true);
    setMessage('Skipping…', 'info');
    const result = await api('POST', `/api/slots/${encodeURIComponent(task.slot_id)}/skip`, {
      lease_token: task.lease_token,
      reason,
    });
    if (state.task !== task) {
      return;
    }
    if (result.ok) {
      removeLocal(draftKey(task.slot_id));
      updateProgress(result.data.progress);
      leaveTask();
      setMessage('Skipped.', 'success', SUCCESS_MESSAGE_MS);
      claim();
      return;
    }
    setBusy(false);
    if (result.status === 409) {
      onLeaseLost();
    }
    setMessage(`Not skipped: ${describeError(result)}`, 'error');
  }

  // ─── Keyboard ────────────────────────────────────────────────────────────────────────────

  function focusSelectedOrList() {
    const entry = state.selected !== null ? state.candidates.get(state.selected) : null;
    if (entry) {
      entry.li.focus({ preventScroll: true });
    } else if (document.activeElement instanceof HTMLElement) {
      document.activeElement.blur();
    }
  }

  function onKeyDown(event) {
    if (event.defaultPrevented || event.isComposing) {
      return;
    }
    const typing = isTypingTarget(event.target);
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey) {
      event.preventDefault();
      submit();
      return;
    }
    if (typing) {
      if (event.key === 'Escape') {
        event.preventDefault();
        event.target.blur();
        focusSelectedOrList();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (event.key === '?') {
      event.preventDefault();
      toggleGuidelines();
      return;
    }
    if (!state.task || state.busy || state.drag) {
      return;
    }
    if (event.shiftKey) {
      const strength = STRENGTH_BY_CODE[event.code];
      if (strength) {
        event.preventDefault();
        setStrengthForSelected(strength);
      }
      return;
    }
    const key = event.key;
    if (/^[1-9]$/.test(key)) {
      const id = state.ranking[Number(key) - 1];
      if (id !== undefined) {
        event.preventDefault();
        selectCandidate(id, { focus: true });
      }
      return;
    }
    switch (key) {
      case 'ArrowUp':
      case 'k':
      case 'K':
        event.preventDefault();
        moveSelected(-1);
        break;
      case 'ArrowDown':
      case 'j':
      case 'J':
        event.preventDefault();
        moveSelected(1);
        break;
      case 'e':
      case 'E':
        if (canRank()) {
          event.preventDefault();
          openEditor();
        }
        break;
      default:
        break;
    }
  }

  // ─── Wiring ──────────────────────────────────────────────────────────────────────────────

  function onCandidatesClick(event) {
    const target = event.target instanceof Element ? event.target : null;
    const li = target ? target.closest('li.candidate') : null;
    if (!li || !state.task) {
      return;
    }
    const id = state.ranking.find((candidate) => state.candidates.get(candidate).li === li);
    if (id === undefined) {
      return;
    }
    const entry = state.candidates.get(id);
    if (target.closest('.toggle-raw')) {
      const showRaw = entry.raw.hidden;
      entry.raw.hidden = !showRaw;
      entry.body.hidden = showRaw;
      entry.toggleRaw.setAttribute('aria-pressed', String(showRaw));
      entry.toggleRaw.textContent = showRaw ? 'Rendered' : 'Raw text';
      return;
    }
    if (target.closest('.gap')) {
      return;
    }
    selectCandidate(id);
    if (target.closest('.move-up')) {
      moveSelected(-1);
    } else if (target.closest('.move-down')) {
      moveSelected(1);
    } else if (!target.closest('a, button, select, input, textarea')) {
      if (!window.getSelection || String(window.getSelection()).length === 0) {
        li.focus({ preventScroll: true });
      }
    }
  }

  function onCandidatesFocusIn(event) {
    const target = event.target;
    if (state.drag || state.restoringFocus) {
      return;
    }
    if (target instanceof HTMLLIElement && target.classList.contains('candidate')) {
      const id = state.ranking.find((candidate) => state.candidates.get(candidate).li === target);
      if (id !== undefined && state.selected !== id) {
        selectCandidate(id);
      }
    }
  }

  function onCandidatesChange(event) {
    const select = event.target;
    if (select instanceof HTMLSelectElement && select.classList.contains('strength')) {
      if (select.value) {
        select.closest('.gap').classList.remove('missing');
      }
      changed();
    }
  }

  function onVisibilityChange() {
    if (!state.task) {
      return;
    }
    if (document.visibilityState === 'visible') {
      startClock();
      if (Date.now() - state.lastHeartbeat >= HEARTBEAT_MS) {
        heartbeat();
      }
    } else {
      pauseClock();
      saveLocal();
      if (state.saveTimer) {
        putDraft({ keepalive: true });
      }
    }
  }

  function onPageHide() {
    if (!state.task) {
      return;
    }
    saveLocal();
    if (state.saveTimer) {
      putDraft({ keepalive: true });
    }
  }

  function wire() {
    ui.toggleGuidelines.addEventListener('click', toggleGuidelines);
    ui.retry.addEventListener('click', () => {
      setMessage('');
      claim();
    });
    ui.candidates.addEventListener('pointerdown', onPointerDown);
    ui.candidates.addEventListener('click', onCandidatesClick);
    ui.candidates.addEventListener('focusin', onCandidatesFocusIn);
    ui.candidates.addEventListener('change', onCandidatesChange);
    ui.allBad.addEventListener('change', changed);
    ui.notRankable.addEventListener('change', () => {
      applyNotRankable();
      changed();
    });
    ui.editBest.addEventListener('click', openEditor);
    ui.discardEdit.addEventListener('click', discardEdit);
    ui.editedText.addEventListener('input', () => {
      if (state.edit) {
        state.edit.content = ui.editedText.value;
        renderEditChanged();
        changed();
      }
    });
    ui.skipReason.addEventListener('input', changed);
    ui.skipReason.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.ctrlKey && !event.metaKey && !event.altKey && !event.shiftKey) {
        event.preventDefault();
        skip();
      }
    });
    ui.submit.addEventListener('click', submit);
    ui.skip.addEventListener('click', skip);
    document.addEventListener('keydown', onKeyDown);
    document.addEventListener('visibilitychange', onVisibilityChange);
    window.addEventListener('pagehide', onPageHide);
    window.setInterval(() => {
      if (state.task && document.visibilityState === 'visible') {
        saveLocal();
      }
    }, LOCAL_TIME_SAVE_MS);
  }

  // ─── Start ───────────────────────────────────────────────────────────────────────────────

  buildShell();
  wire();
  pruneOldDrafts();
  setGuidelinesOpen(readLocal(GUIDELINES_KEY) === true);
  if (!projectId || !csrfToken) {
    setView('failed');
    setMessage('This page is missing its project id or CSRF token; reload it.', 'error');
    return;
  }
  claim();
})();
