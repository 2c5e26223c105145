// Findings: the live list (REST page + /ws/findings), bulk triage, and a finding's page.
import { useEffect, useMemo, useRef, useState } from './vendor/hooks.module.js';
import { api, can, live } from './api.js';
import { ErrorNote, fmtTime, html, Loading, SEVERITIES, Severity, Status, STATUSES } from './ui.js';
import { fieldAliases, highlightPaths, JsonView } from './json.js';

const PAGE = 50;
const SORTS = [['-time', 'newest first'], ['time', 'oldest first'], ['-severity', 'most severe first'],
  ['severity', 'least severe first'], ['rule', 'rule A-Z'], ['-rule', 'rule Z-A']];

function matches(finding, filters) {
  if (filters.severity && finding.severity !== filters.severity) return false;
  if (filters.status.length && !filters.status.includes(finding.status || 'open')) return false;
  if (filters.rule_id && finding.rule_id !== filters.rule_id) return false;
  if (filters.agent_id && finding.agent_id !== filters.agent_id) return false;
  if (filters.q) {
    const text = `${finding.title} ${finding.rule_title} ${finding.rule_id} ${finding.agent_id} ${finding.description || ''}`;
    if (!text.toLowerCase().includes(filters.q.toLowerCase())) return false;
  }
  return true;
}

// POST /findings/triage; where the API has no bulk route yet, one PATCH per finding.
async function triage(ids, change) {
  try {
    return await api('/findings/triage', { method: 'POST', body: { ids, ...change } });
  } catch (err) {
    if (err.status !== 404 && err.status !== 405) throw err;
  }
  const items = [];
  for (const id of ids) items.push(await api(`/findings/${id}`, { method: 'PATCH', body: change }));
  return { updated: items.length, items, missing: [] };
}

function TriageBar({ ids, onDone }) {
  const [assignee, setAssignee] = useState('');
  const [note, setNote] = useState('');
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState(null);
  const [error, setError] = useState(null);
  const run = async change => {
    setBusy(true); setError(null); setMessage(null);
    try {
      const withNote = note.trim() ? { ...change, note: note.trim() } : change;
      const answer = await triage(ids, withNote);
      setMessage(`${answer.updated} finding${answer.updated === 1 ? '' : 's'} updated` +
                 (answer.missing && answer.missing.length ? `, ${answer.missing.length} not found` : ''));
      onDone(answer.items || []);
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  const none = !ids.length || busy;
  return html`
    <div class="triage" role="group" aria-label="Triage">
      <span>${ids.length} selected</span>
      <button type="button" disabled=${none} onClick=${() => run({ status: 'acknowledged' })}>Acknowledge</button>
      <button type="button" disabled=${none} onClick=${() => run({ status: 'resolved' })}>Resolve</button>
      <button type="button" class="secondary" disabled=${none} onClick=${() => run({ status: 'open' })}>Reopen</button>
      <label for="assignee">Assignee</label>
      <input id="assignee" value=${assignee} onInput=${e => setAssignee(e.target.value)} size="12" />
      <button type="button" disabled=${none || !assignee.trim()} onClick=${() => run({ assignee: assignee.trim() })}>Assign</button>
      <label for="note">Note</label>
      <input id="note" value=${note} onInput=${e => setNote(e.target.value)} size="20" />
      <span aria-live="polite">${message}</span>
      <${ErrorNote} error=${error} />
    </div>`;
}

export function Findings({ me }) {
  const writable = can(me, 'findings:write');
  const [filters, setFilters] = useState({ severity: '', status: [], rule_id: '', agent_id: '', q: '', sort: '-time' });
  const [draft, setDraft] = useState(filters);
  const [items, setItems] = useState([]);
  const [total, setTotal] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const [selected, setSelected] = useState(new Set());
  const [fresh, setFresh] = useState(new Set());
  const [liveState, setLiveState] = useState('connecting');
  const filtersRef = useRef(filters);
  filtersRef.current = filters;

  const load = async (offset = 0) => {
    setLoading(true);
    const f = filtersRef.current;
    try {
      const page = await api('/findings', { params: { severity: f.severity, status: f.status, rule_id: f.rule_id,
        agent_id: f.agent_id, q: f.q, sort: f.sort, limit: PAGE, offset } });
      setItems(old => {
        const base = offset ? old : [];
        const seen = new Set(base.map(x => x.id));
        return [...base, ...page.items.filter(x => !seen.has(x.id))];
      });
      setTotal(page.total);
      setError(null);
    } catch (err) {
      setError(err.message);
    } finally {
      setLoading(false);
    }
  };

  useEffect(() => { setSelected(new Set()); load(0); }, [filters]);

  useEffect(() => {
    const stream = live('/ws/findings', message => {
      const finding = message.data;
      if (!finding || !finding.id || !matches(finding, filtersRef.current)) return;
      setItems(old => (old.some(x => x.id === finding.id) ? old : [finding, ...old]));
      setTotal(t => (t === null ? t : t + 1));
      setFresh(old => new Set(old).add(finding.id));
    }, setLiveState);
    return () => stream.close();
  }, []);

  const apply = event => { event.preventDefault(); setFilters({ ...draft }); };
  const toggle = id => setSelected(old => {
    const next = new Set(old);
    if (next.has(id)) next.delete(id); else next.add(id);
    return next;
  });
  const allSelected = items.length > 0 && items.every(x => selected.has(x.id));
  const onTriaged = updated => {
    const byId = new Map(updated.map(x => [x.id, x]));
    setItems(old => old.map(x => (byId.has(x.id) ? { ...x, ...byId.get(x.id) } : x)));
  };
  const toggleStatus = status => setDraft(d => ({
    ...d, status: d.status.includes(status) ? d.status.filter(s => s !== status) : [...d.status, status] }));

  return html`
    <h1>Findings</h1>
    <p class="live" aria-live="polite">Live updates: <span class=${`live-${liveState.split(':')[0]}`}>${liveState}</span></p>
    <form class="filters" onSubmit=${apply} aria-label="Filter findings">
      <div>
        <label for="f-q">Search</label>
        <input id="f-q" type="search" value=${draft.q} onInput=${e => setDraft({ ...draft, q: e.target.value })} />
      </div>
      <div>
        <label for="f-severity">Severity</label>
        <select id="f-severity" value=${draft.severity} onChange=${e => setDraft({ ...draft, severity: e.target.value })}>
          <option value="">any</option>
          ${SEVERITIES.map(s => html`<option value=${s}>${s}</option>`)}
        </select>
      </div>
      <fieldset>
        <legend>Status</legend>
        ${STATUSES.map(s => html`
          <label class="inline"><input type="checkbox" checked=${draft.status.includes(s)}
                                       onChange=${() => toggleStatus(s)} /> ${s}</label>`)}
      </fieldset>
      <div>
        <label for="f-rule">Rule id</label>
        <input id="f-rule" value=${draft.rule_id} onInput=${e => setDraft({ ...draft, rule_id: e.target.value })} />
      </div>
      <div>
        <label for="f-agent">Agent id</label>
        <input id="f-agent" value=${draft.agent_id} onInput=${e => setDraft({ ...draft, agent_id: e.target.value })} />
      </div>
      <div>
        <label for="f-sort">Sort</label>
        <select id="f-sort" value=${draft.sort} onChange=${e => setDraft({ ...draft, sort: e.target.value })}>
          ${SORTS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select>
      </div>
      <button type="submit">Apply</button>
    </form>
    ${writable ? html`<${TriageBar} ids=${[...selected]} onDone=${onTriaged} />` : null}
    <${ErrorNote} error=${error} />
    <p class="muted" aria-live="polite">${total === null ? '' : `${items.length} of ${total} shown`}</p>
    <table class="findings">
      <thead><tr>
        ${writable ? html`<th scope="col"><input type="checkbox" aria-label="Select all shown" checked=${allSelected}
            onChange=${() => setSelected(allSelected ? new Set() : new Set(items.map(x => x.id)))} /></th>` : null}
        <th scope="col">time</th><th scope="col">severity</th><th scope="col">finding</th><th scope="col">rule</th>
        <th scope="col">agent</th><th scope="col">status</th><th scope="col">assignee</th>
      </tr></thead>
      <tbody>
        ${items.map(f => html`
          <tr key=${f.id} class=${fresh.has(f.id) ? 'fresh' : ''} data-id=${f.id}>
            ${writable ? html`<td><input type="checkbox" aria-label=${`Select ${f.title}`} checked=${selected.has(f.id)}
                                         onChange=${() => toggle(f.id)} /></td>` : null}
            <td class="time">${fmtTime(f.event_time || f.timestamp || f.created_at)}</td>
            <td><${Severity} value=${f.severity} /></td>
            <td><a href=${`#/findings/${f.id}`}>${f.title}</a>${fresh.has(f.id) ? html` <span class="badge">new</span>` : null}</td>
            <td>${f.rule_title || f.rule_id}</td>
            <td>${f.agent_id}</td>
            <td><${Status} value=${f.status || 'open'} /></td>
            <td>${f.assignee || ''}</td>
          </tr>`)}
      </tbody>
    </table>
    ${!items.length && !loading ? html`<p class="muted">No findings match.</p>` : null}
    ${loading ? html`<${Loading} />` : null}
    ${total !== null && items.length < total ? html`
      <button type="button" class="secondary" onClick=${() => load(items.length)}>Load more</button>` : null}`;
}

function hostOf(event) {
  const data = (event && event.data) || {};
  const host = data.host;
  if (typeof host === 'string') return host;
  if (host && typeof host === 'object') return host.name || host.hostname || null;
  return data['host.name'] || data.hostname || data.Computer || null;
}

function Around({ finding, events }) {
  const [state, setState] = useState({ loading: true });
  useEffect(() => {
    const first = events.find(Boolean);
    const at = Date.parse((first && first.timestamp) || finding.event_time || finding.created_at);
    if (Number.isNaN(at)) { setState({ error: 'no time to look around' }); return; }
    const since = new Date(at - 10 * 60 * 1000).toISOString();
    const until = new Date(at + 10 * 60 * 1000).toISOString();
    const host = first ? hostOf(first) : null;
    (async () => {
      if (host) {
        try {
          const page = await api('/events', { params: { host, since, until, limit: 100 } });
          setState({ by: `host ${host}`, items: page.items.filter(e => !hostOf(e) || hostOf(e) === host), total: page.total });
          return;
        } catch { /* older API: by agent */ }
      }
      try {
        const page = await api('/events', { params: { agent_id: finding.agent_id, since, until, limit: 100 } });
        setState({ by: `agent ${finding.agent_id}`, items: page.items, total: page.total });
      } catch (err) {
        setState({ error: err.message });
      }
    })();
  }, [finding.id]);
  if (state.loading) return html`<${Loading} what="Loading the events around" />`;
  if (state.error) return html`<${ErrorNote} error=${state.error} />`;
  const matched = new Set(finding.event_ids || []);
  return html`
    <p class="muted">Events of ${state.by} from 10 minutes before to 10 minutes after (${state.items.length} shown).</p>
    <table class="around">
      <thead><tr><th scope="col">time</th><th scope="col">type</th><th scope="col">event</th></tr></thead>
      <tbody>${state.items.map(e => html`
        <tr class=${matched.has(e.id) ? 'matched' : ''}>
          <td class="time">${fmtTime(e.timestamp)}</td><td>${e.type}</td>
          <td><code>${(e.data && (e.data.message || e.data.Message)) || JSON.stringify(e.data).slice(0, 200)}</code>
            ${matched.has(e.id) ? html` <span class="badge">matched</span>` : null}</td>
        </tr>`)}</tbody>
    </table>`;
}

function FindingTriage({ finding, onChange }) {
  const [assignee, setAssignee] = useState(finding.assignee || '');
  const [note, setNote] = useState(finding.note || '');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const save = async change => {
    setBusy(true); setError(null);
    try {
      onChange(await api(`/findings/${finding.id}`, { method: 'PATCH', body: change }));
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <section class="card" aria-labelledby="triage-h">
      <h2 id="triage-h">Triage</h2>
      <div class="row">
        ${STATUSES.filter(s => s !== (finding.status || 'open')).map(s => html`
          <button type="button" disabled=${busy} onClick=${() => save({ status: s })}>
            ${{ open: 'Reopen', acknowledged: 'Acknowledge', resolved: 'Resolve' }[s]}</button>`)}
      </div>
      <div class="row">
        <label for="t-assignee">Assignee</label>
        <input id="t-assignee" value=${assignee} onInput=${e => setAssignee(e.target.value)} />
        <label for="t-note">Note</label>
        <input id="t-note" value=${note} onInput=${e => setNote(e.target.value)} size="40" />
        <button type="button" disabled=${busy}
                onClick=${() => save({ assignee: assignee.trim() || null, note: note.trim() || null })}>Save</button>
      </div>
      <${ErrorNote} error=${error} />
    </section>`;
}

function History({ id, version }) {
  const [state, setState] = useState({ loading: true });
  useEffect(() => {
    api(`/findings/${id}/history`).then(a => setState({ items: a.items }), err => setState({ error: err.message }));
  }, [id, version]);
  if (state.loading) return html`<${Loading} />`;
  if (state.error) return html`<p class="muted">History unavailable: ${state.error}</p>`;
  if (!state.items.length) return html`<p class="muted">No changes yet.</p>`;
  return html`
    <ol class="history">${state.items.map(h => html`
      <li><span class="time">${fmtTime(h.at)}</span> <strong>${h.principal_id}</strong>
        ${h.status ? html` status <${Status} value=${h.status} />` : null}
        ${h.assignee ? ` assignee ${h.assignee}` : ''}${h.note ? html` — <q>${h.note}</q>` : null}</li>`)}
    </ol>`;
}

export function FindingPage({ me, id }) {
  const [finding, setFinding] = useState(null);
  const [events, setEvents] = useState(null);
  const [rule, setRule] = useState(null);
  const [error, setError] = useState(null);
  const [version, setVersion] = useState(0);
  const [aliases, setAliases] = useState({});
  useEffect(() => { fieldAliases().then(setAliases); }, []);
  useEffect(() => {
    setFinding(null); setEvents(null); setRule(null); setError(null);
    (async () => {
      let f;
      try { f = await api(`/findings/${id}`); setFinding(f); } catch (err) { setError(err.message); return; }
      if (can(me, 'rules:read')) api(`/rules/${encodeURIComponent(f.rule_id)}`).then(setRule, err => setRule({ error: err.message }));
      if (can(me, 'events:read')) {
        const ids = (f.event_ids || []).slice(0, 50);
        setEvents(await Promise.all(ids.map(e => api(`/events/${encodeURIComponent(e)}`).catch(err => ({ id: e, error: err.message })))));
      } else {
        setEvents([]);
      }
    })();
  }, [id]);
  const fields = useMemo(() => (rule && rule.source ? highlightPaths(rule.source, aliases) : new Set()), [rule, aliases]);

  if (error) return html`<p><a href="#/findings">← Findings</a></p><${ErrorNote} error=${error} />`;
  if (!finding) return html`<${Loading} />`;
  return html`
    <p><a href="#/findings">← Findings</a></p>
    <h1>${finding.title}</h1>
    <dl class="facts">
      <dt>severity</dt><dd><${Severity} value=${finding.severity} /></dd>
      <dt>status</dt><dd data-testid="finding-status"><${Status} value=${finding.status || 'open'} /></dd>
      <dt>assignee</dt><dd>${finding.assignee || '—'}</dd>
      <dt>rule</dt><dd><a href=${`#/rules/${encodeURIComponent(finding.rule_id)}`}>${finding.rule_title}</a> (${finding.rule_id})</dd>
      <dt>agent</dt><dd>${finding.agent_id}</dd>
      <dt>event time</dt><dd>${fmtTime(finding.event_time)}</dd>
      <dt>stored</dt><dd>${fmtTime(finding.created_at)}</dd>
      <dt>id</dt><dd><code>${finding.id}</code></dd>
      ${finding.note ? html`<dt>note</dt><dd>${finding.note}</dd>` : null}
    </dl>
    ${finding.description ? html`<p>${finding.description}</p>` : null}
    ${can(me, 'findings:write') ? html`<${FindingTriage} finding=${finding} key=${finding.updated_at}
        onChange=${f => { setFinding(f); setVersion(v => v + 1); }} />` : null}
    <section aria-labelledby="events-h">
      <h2 id="events-h">Matched events (${(finding.event_ids || []).length})</h2>
      ${fields.size ? html`<p class="muted">Highlighted: the fields the rule tests, or keywords search.</p>` : null}
      ${!can(me, 'events:read') ? html`<p class="muted">Reading events needs events:read.</p>` : null}
      ${events === null ? html`<${Loading} />` : events.map(e => html`
        <article class="event">
          <h3><code>${e.id}</code> ${e.timestamp ? html`<span class="time">${fmtTime(e.timestamp)}</span>` : null}</h3>
          ${e.error ? html`<${ErrorNote} error=${e.error} />` : html`<${JsonView} value=${e.data} fields=${fields} />`}
        </article>`)}
    </section>
    <section aria-labelledby="rule-h">
      <h2 id="rule-h">Rule</h2>
      ${rule === null ? (can(me, 'rules:read') ? html`<${Loading} />` : html`<p class="muted">Needs rules:read.</p>`)
        : rule.error ? html`<${ErrorNote} error=${rule.error} />` : html`<pre class="yaml">${rule.source}</pre>`}
    </section>
    <section aria-labelledby="history-h">
      <h2 id="history-h">Status history</h2>
      <${History} id=${finding.id} version=${version} />
    </section>
    ${can(me, 'events:read') && events ? html`
      <section aria-labelledby="around-h">
        <h2 id="around-h">Around this time</h2>
        <${Around} finding=${finding} events=${events.filter(e => !e.error)} />
      </section>` : null}`;
}
