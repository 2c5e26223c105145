// Rules: the list (enable/disable), a rule's YAML, the editor (validate as you type, run tests, save)
// and hunting the edited rule over the archive.
import { useEffect, useRef, useState } from './vendor/hooks.module.js';
import { api, can, live } from './api.js';
import { ErrorNote, fmtTime, fromLocalInput, html, Loading, navigate, Severity, toLocalInput } from './ui.js';

const NEW_RULE = `title: My new rule
id: my-new-rule
status: experimental
description: what it detects
logsource:
    product: linux
    service: auth
detection:
    selection:
        process.name: sshd
        message|contains: 'Failed password'
    condition: selection
level: medium
`;

export function Rules({ me }) {
  const writable = can(me, 'rules:write');
  const [rules, setRules] = useState(null);
  const [error, setError] = useState(null);
  const [filter, setFilter] = useState('');
  const [busy, setBusy] = useState(null);

  const load = async () => {
    try {
      const page = await api('/rules', { params: { limit: 1000 } });
      setRules(page.items);
      setError(null);
    } catch (err) {
      setError(err.message);
    }
  };
  useEffect(() => { load(); }, []);

  const toggle = async rule => {
    setBusy(rule.id);
    try {
      const row = await api(`/rules/${encodeURIComponent(rule.id)}/${rule.enabled ? 'disable' : 'enable'}`, { method: 'POST' });
      setRules(old => old.map(r => (r.id === rule.id ? { ...r, ...row } : r)));
      setError(null);
    } catch (err) {
      setError(`${rule.id}: ${err.message}`);
    } finally {
      setBusy(null);
    }
  };

  const shown = (rules || []).filter(r => !filter || `${r.id} ${r.title} ${r.level} ${r.path || ''}`
    .toLowerCase().includes(filter.toLowerCase()));
  return html`
    <h1>Rules</h1>
    <div class="toolbar">
      <label for="rule-filter">Filter</label>
      <input id="rule-filter" type="search" value=${filter} onInput=${e => setFilter(e.target.value)} />
      ${writable ? html`<a class="button" href="#/rules/new">New rule</a>` : null}
    </div>
    <${ErrorNote} error=${error} />
    ${rules === null && !error ? html`<${Loading} />` : null}
    ${rules ? html`
      <p class="muted">${shown.length} of ${rules.length} rules. Rules from files are read-only here: change the file
        (the engine reloads it), or edit a copy and save it as a new rule.</p>
      <table class="rules">
        <thead><tr><th scope="col">title</th><th scope="col">level</th><th scope="col">kind</th>
          <th scope="col">origin</th><th scope="col">enabled</th></tr></thead>
        <tbody>${shown.map(r => html`
          <tr key=${r.id}>
            <td><a href=${`#/rules/${encodeURIComponent(r.id)}`}>${r.title}</a><br /><code class="muted">${r.id}</code></td>
            <td>${r.level ? html`<${Severity} value=${r.level} />` : ''}</td>
            <td>${r.kind}</td>
            <td>${r.path ? html`file <code class="muted">${r.path.split('/').slice(-2).join('/')}</code>` : 'API'}</td>
            <td>${r.enabled ? 'yes' : 'no'}
              ${writable && !r.path ? html` <button type="button" class="secondary" disabled=${busy === r.id}
                  onClick=${() => toggle(r)}>${r.enabled ? 'Disable' : 'Enable'}</button>` : null}</td>
          </tr>`)}</tbody>
      </table>` : null}`;
}

function Editor({ value, onInput, errors }) {
  const area = useRef(null);
  const gutter = useRef(null);
  const lines = value.split('\n').length;
  const bad = new Map();
  for (const e of errors) if (e.line) bad.set(e.line, (bad.get(e.line) || []).concat(e.message));
  const sync = () => { if (gutter.current && area.current) gutter.current.scrollTop = area.current.scrollTop; };
  const onKeyDown = event => {  // Tab indents (Escape, then Tab, leaves the editor: see the hint)
    if (event.key === 'Tab' && !event.shiftKey && !area.current.dataset.escaped) {
      event.preventDefault();
      const { selectionStart: start, selectionEnd: end } = event.target;
      const text = value.slice(0, start) + '    ' + value.slice(end);
      onInput(text);
      requestAnimationFrame(() => { area.current.selectionStart = area.current.selectionEnd = start + 4; });
    }
    area.current.dataset.escaped = event.key === 'Escape' ? '1' : '';
  };
  return html`
    <div class="editor">
      <div class="gutter" ref=${gutter} aria-hidden="true">
        ${Array.from({ length: lines }, (_, i) => html`
          <div class=${bad.has(i + 1) ? 'ln err' : 'ln'} data-line=${i + 1} title=${(bad.get(i + 1) || []).join('\n')}>
            ${i + 1}</div>`)}
      </div>
      <textarea id="rule-yaml" ref=${area} spellcheck="false" value=${value} wrap="off"
                aria-describedby="editor-hint rule-problems"
                onInput=${e => onInput(e.target.value)} onScroll=${sync} onKeyDown=${onKeyDown}></textarea>
    </div>
    <p id="editor-hint" class="muted">Tab indents; press Escape then Tab to leave the editor.</p>`;
}

function Problems({ check }) {
  if (!check) return html`<div id="rule-problems"></div>`;
  if (check.unavailable) return html`<p id="rule-problems" class="muted">Validation unavailable: ${check.unavailable}</p>`;
  if (check.pending) return html`<p id="rule-problems" class="muted" aria-live="polite">Checking…</p>`;
  return html`
    <div id="rule-problems" aria-live="polite">
      ${check.valid ? html`<p class="ok">Valid${check.rule_id ? ` (rule ${check.rule_id})` : ''}.</p>` : html`
        <ul class="problems" aria-label="Rule errors">${check.errors.map(e => html`
          <li>${e.line ? html`<strong>line ${e.line}${e.column ? `, column ${e.column}` : ''}</strong>: ` : null}${e.message}
            ${e.code ? html` <code class="muted">${e.code}</code>` : null}</li>`)}</ul>`}
    </div>`;
}

function Tests({ tests }) {
  if (!tests) return null;
  if (!tests.length) return html`<p class="muted" aria-live="polite">The rule has no tests.</p>`;
  const failed = tests.filter(t => !t.passed).length;
  return html`
    <section aria-labelledby="tests-h" aria-live="polite">
      <h3 id="tests-h">Tests: ${tests.length - failed} passed, ${failed} failed</h3>
      <ul class="tests">${tests.map(t => html`
        <li class=${t.passed ? 'pass' : 'fail'}>${t.passed ? '✔ passed' : '✘ failed'}: ${t.name}
          ${t.message ? html` — ${t.message}` : null}</li>`)}</ul>
    </section>`;
}

async function validate(text, ruleId) {
  try {  // ruleId: the stored rule being edited, left out of the set the text is checked beside
    return await api('/rules/validate', { method: 'POST', body: ruleId ? { yaml: text, rule_id: ruleId } : { yaml: text } });
  } catch (err) {
    if (err.status === 404 || err.status === 405) return { unavailable: 'the API has no /rules/validate' };
    if (err.status === 422 && err.body && err.body.detail && err.body.detail.errors) {
      return { valid: false, errors: err.body.detail.errors, tests: null };
    }
    return { unavailable: err.message };
  }
}

const TERMINAL = ['done', 'failed', 'cancelled'];

function Hunt({ yaml }) {
  const now = Date.now();
  const [since, setSince] = useState(toLocalInput(now - 86400 * 1000));
  const [until, setUntil] = useState(toLocalInput(now + 60 * 1000));
  const [agent, setAgent] = useState('');
  const [hunt, setHunt] = useState(null);
  const [hits, setHits] = useState(null);
  const [error, setError] = useState(null);
  const stream = useRef(null);
  const poll = useRef(null);

  const stop = () => {
    if (stream.current) stream.current.close();
    clearInterval(poll.current);
    stream.current = null;
  };
  useEffect(() => stop, []);

  const finish = async status => {
    stop();
    if (status.status !== 'done' && !status.findings) return;
    try {
      setHits(await api(`/hunts/${status.id}/findings`, { params: { limit: 200, offset: 0 } }));
    } catch (err) {
      setError(err.message);
    }
  };
  const update = status => {
    setHunt(status);
    if (TERMINAL.includes(status.status)) finish(status);
  };
  const start = async () => {
    stop();
    setError(null); setHits(null); setHunt(null);
    try {
      const body = { yaml, since: fromLocalInput(since), until: fromLocalInput(until) };
      if (agent.trim()) body.agent_id = agent.trim();
      const created = await api('/hunts', { method: 'POST', body });
      update(created);
      if (TERMINAL.includes(created.status)) return;
      stream.current = live(`/ws/hunts/${encodeURIComponent(created.id)}`, message => {
        if (message.data && message.data.id === created.id) update(message.data);
      });
      poll.current = setInterval(async () => {  // in case a message is missed
        try { update(await api(`/hunts/${created.id}`)); } catch { /* the socket may still tell */ }
      }, 3000);
    } catch (err) {
      setError(err.message);
    }
  };

  const cancel = async () => {
    try { update(await api(`/hunts/${hunt.id}`, { method: 'DELETE' })); } catch (err) { setError(err.message); }
  };
  const running = hunt && !TERMINAL.includes(hunt.status);
  return html`
    <section class="card" aria-labelledby="hunt-h">
      <h2 id="hunt-h">Hunt over the archive</h2>
      <p class="muted">Runs the rule as edited (not saved) over the archived events of a time range (UTC).</p>
      <div class="row">
        <label for="hunt-since">From (UTC)</label>
        <input id="hunt-since" type="datetime-local" value=${since} onInput=${e => setSince(e.target.value)} />
        <label for="hunt-until">To (UTC)</label>
        <input id="hunt-until" type="datetime-local" value=${until} onInput=${e => setUntil(e.target.value)} />
        <label for="hunt-agent">Agent id (optional)</label>
        <input id="hunt-agent" value=${agent} onInput=${e => setAgent(e.target.value)} size="12" />
        <button type="button" onClick=${start} disabled=${running}>Hunt</button>
        ${running ? html`<button type="button" class="secondary" onClick=${cancel}>Cancel hunt</button>` : null}
      </div>
      <${ErrorNote} error=${error} />
      ${hunt ? html`
        <p class="hunt-status" aria-live="polite" data-testid="hunt-status">${`Hunt ${hunt.status}: ${hunt.read ?? 0} of ${
          hunt.in_range ?? '?'} events read, ${hunt.findings ?? 0} findings`}${hunt.reached ? ` (reached ${fmtTime(hunt.reached)})` : ''}${
          hunt.error ? html` — <span class="error">${hunt.error}</span>` : null}</p>
        ${running ? html`<progress max=${hunt.in_range || 1} value=${hunt.read || 0} aria-label="Hunt progress"></progress>` : null}` : null}
      ${hits ? html`
        <h3>Hits (${hits.total})</h3>
        ${hits.items.length ? html`
          <table class="hits">
            <thead><tr><th scope="col">time</th><th scope="col">severity</th><th scope="col">finding</th>
              <th scope="col">agent</th><th scope="col">events</th></tr></thead>
            <tbody>${hits.items.map(f => html`
              <tr><td class="time">${fmtTime(f.event_time || f.timestamp)}</td><td><${Severity} value=${f.severity} /></td>
                <td>${f.title}${f.description ? html`<br /><span class="muted">${f.description}</span>` : null}</td><td>${f.agent_id}</td><td>${(f.event_ids || []).length}</td></tr>`)}</tbody>
          </table>` : html`<p class="muted">No hits.</p>`}` : null}
    </section>`;
}

export function RulePage({ me, id }) {
  const isNew = id === 'new';
  const writable = can(me, 'rules:write');
  const [rule, setRule] = useState(isNew ? { id: null, source: NEW_RULE, path: null, title: 'New rule' } : null);
  const [text, setText] = useState(isNew ? NEW_RULE : '');
  const [error, setError] = useState(null);
  const [check, setCheck] = useState(null);
  const [tests, setTests] = useState(null);
  const [saved, setSaved] = useState(null);
  const [busy, setBusy] = useState(false);
  const timer = useRef(null);
  const latest = useRef(0);

  useEffect(() => {
    if (isNew) return;
    setRule(null); setError(null); setCheck(null); setTests(null);
    api(`/rules/${encodeURIComponent(id)}`).then(r => { setRule(r); setText(r.source); }, err => setError(err.message));
  }, [id]);

  const runCheck = async (source, withTests) => {
    const ticket = ++latest.current;
    setCheck(c => ({ ...(c || {}), pending: true }));
    const answer = await validate(source, isNew ? null : id);
    if (ticket !== latest.current) return;  // an older answer than the text shown
    setCheck({ ...answer, errors: answer.errors || [] });
    if (withTests) setTests(answer.tests || (answer.valid === false ? [] : null));
  };
  const onInput = value => {
    setText(value);
    setSaved(null);
    setTests(null);
    clearTimeout(timer.current);
    timer.current = setTimeout(() => runCheck(value, false), 400);
  };
  useEffect(() => () => clearTimeout(timer.current), []);

  const save = async asNew => {
    setBusy(true); setError(null); setSaved(null);
    try {
      const row = asNew || isNew
        ? await api('/rules', { method: 'POST', body: { source: text } })
        : await api(`/rules/${encodeURIComponent(rule.id)}`, { method: 'PUT', body: { source: text } });
      setSaved(`Saved rule ${row.id}${row.reload && row.reload.status ? ` (engine: ${row.reload.status})` : ''}.`);
      if (asNew || isNew) navigate(`#/rules/${encodeURIComponent(row.id)}`);
      else setRule(row);
    } catch (err) {
      setError(err.message);
      if (err.body && err.body.detail && Array.isArray(err.body.detail.errors)) {
        setCheck({ valid: false, errors: err.body.detail.errors });
      }
    } finally {
      setBusy(false);
    }
  };

  if (error && !rule) return html`<p><a href="#/rules">← Rules</a></p><${ErrorNote} error=${error} />`;
  if (!rule) return html`<${Loading} />`;
  const fromFile = !!rule.path;
  return html`
    <p><a href="#/rules">← Rules</a></p>
    <h1>${isNew ? 'New rule' : rule.title}</h1>
    ${!isNew ? html`
      <dl class="facts">
        <dt>id</dt><dd><code>${rule.id}</code></dd>
        <dt>level</dt><dd>${rule.level ? html`<${Severity} value=${rule.level} />` : '—'}</dd>
        <dt>kind</dt><dd>${rule.kind}</dd>
        <dt>enabled</dt><dd>${rule.enabled ? 'yes' : 'no'}</dd>
        <dt>origin</dt><dd>${fromFile ? html`file <code>${rule.path}</code>` : 'API'}</dd>
        <dt>updated</dt><dd>${fmtTime(rule.updated_at)}</dd>
      </dl>` : null}
    ${writable ? html`
      <label for="rule-yaml" class="block">Rule YAML${fromFile ? ' (from a file: save it as a new rule with another id)' : ''}</label>
      <${Editor} value=${text} onInput=${onInput} errors=${(check && check.errors) || []} />
      <${Problems} check=${check} />
      <div class="row">
        <button type="button" onClick=${() => runCheck(text, true)}>Run tests</button>
        ${fromFile ? html`<button type="button" disabled=${busy} onClick=${() => save(true)}>Save as new rule</button>`
          : html`<button type="button" disabled=${busy} onClick=${() => save(false)}>${isNew ? 'Create rule' : 'Save'}</button>`}
        <span class="ok" aria-live="polite">${saved}</span>
      </div>
      <${ErrorNote} error=${error} />
      <${Tests} tests=${tests} />`
    : html`<h2>YAML</h2><pre class="yaml" aria-label="Rule YAML">${rule.source}</pre>`}
    ${can(me, 'hunts:run') && (writable || !isNew) ? html`<${Hunt} yaml=${writable ? text : rule.source} />` : null}`;
}
