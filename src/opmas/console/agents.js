// Agents: status and last heartbeat (live from /ws/agents), their configuration (editable with agents:admin).
import { useEffect, useState } from './vendor/hooks.module.js';
import { api, can, live } from './api.js';
import { ErrorNote, fmtTime, html, Loading } from './ui.js';

function Config({ agent, admin, onSaved }) {
  const [text, setText] = useState(JSON.stringify(agent.config || {}, null, 2));
  const [error, setError] = useState(null);
  const [message, setMessage] = useState(null);
  const save = async () => {
    setError(null); setMessage(null);
    let config;
    try { config = JSON.parse(text); } catch (err) { setError(`not JSON: ${err.message}`); return; }
    try {
      const row = await api(`/agents/${encodeURIComponent(agent.id)}`, { method: 'PUT', body: { config } });
      setMessage(`Saved (config version ${row.config_version}${row.config_pushed ? ', pushed to the agent' : ''}).`);
      onSaved(row);
    } catch (err) {
      setError(err.message);
    }
  };
  const label = `config-${agent.id}`;
  return html`
    <section class="card" aria-labelledby=${`${label}-h`}>
      <h2 id=${`${label}-h`}>Configuration of ${agent.name || agent.id}</h2>
      <p class="muted">Version ${agent.config_version ?? '—'}, applied by the agent: ${agent.applied_config_version ?? '—'}.</p>
      ${admin ? html`
        <label for=${label} class="block">Configuration (JSON)</label>
        <textarea id=${label} class="config" rows="14" spellcheck="false" value=${text}
                  onInput=${e => setText(e.target.value)}></textarea>
        <div class="row"><button type="button" onClick=${save}>Save configuration</button>
          <span class="ok" aria-live="polite">${message}</span></div>
        <${ErrorNote} error=${error} />`
      : html`<pre class="json" aria-label="Configuration">${JSON.stringify(agent.config || {}, null, 2)}</pre>
             <p class="muted">Changing it needs agents:admin.</p>`}
    </section>`;
}

export function Agents({ me }) {
  const admin = can(me, 'agents:admin');
  const [agents, setAgents] = useState(null);
  const [error, setError] = useState(null);
  const [open, setOpen] = useState(null);
  const [liveState, setLiveState] = useState('connecting');

  useEffect(() => {
    api('/agents', { params: { limit: 1000 } }).then(page => setAgents(page.items), err => setError(err.message));
    const stream = live('/ws/agents', message => {
      const d = message.data || {};
      const id = d.agent_id || d.id;
      if (!id) return;
      setAgents(old => (old || []).map(a => (a.id === id ? {
        ...a, status: d.status || a.status, last_seen: d.last_seen || d.timestamp || a.last_seen,
        applied_config_version: d.applied_config_version ?? a.applied_config_version,
      } : a)));
    }, setLiveState);
    return () => stream.close();
  }, []);

  const selected = agents && agents.find(a => a.id === open);
  return html`
    <h1>Agents</h1>
    <p class="live" aria-live="polite">Live updates: <span class=${`live-${liveState.split(':')[0]}`}>${liveState}</span></p>
    <${ErrorNote} error=${error} />
    ${agents === null && !error ? html`<${Loading} />` : null}
    ${agents && !agents.length ? html`<p class="muted">No agents registered yet (events replayed or sent through
      the API need none).</p>` : null}
    ${agents && agents.length ? html`
      <table class="agents">
        <thead><tr><th scope="col">agent</th><th scope="col">type</th><th scope="col">status</th>
          <th scope="col">last heartbeat</th><th scope="col">config</th></tr></thead>
        <tbody>${agents.map(a => html`
          <tr key=${a.id}>
            <td>${a.name || a.id}<br /><code class="muted">${a.id}</code></td>
            <td>${a.type}</td>
            <td><span class=${`status agent-${a.status}`}>${a.status}</span></td>
            <td class="time">${a.last_seen ? fmtTime(a.last_seen) : 'never'}</td>
            <td><button type="button" class="secondary" aria-expanded=${open === a.id}
                        onClick=${() => setOpen(open === a.id ? null : a.id)}>
              ${admin ? 'Edit' : 'View'} configuration</button></td>
          </tr>`)}</tbody>
      </table>` : null}
    ${selected ? html`<${Config} key=${selected.id} agent=${selected} admin=${admin}
        onSaved=${row => setAgents(old => old.map(a => (a.id === row.id ? { ...a, ...row } : a)))} />` : null}`;
}
