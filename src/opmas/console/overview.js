// Overview: events/s and findings by severity over time, top rules, hosts and agents, dead letters, lag.
import { useEffect, useRef, useState } from './vendor/hooks.module.js';
import uPlot from './vendor/uPlot.esm.js';
import { api, can } from './api.js';
import { ErrorNote, html, Loading, SEVERITIES } from './ui.js';

const RANGES = [['1h', 3600], ['24h', 86400], ['7d', 7 * 86400], ['30d', 30 * 86400], ['90d', 90 * 86400]];
const COLORS = { critical: '#b3002d', high: '#d9480f', medium: '#b08900', low: '#1c7ed6', informational: '#6b7280' };

// series: [[label, color, [[iso, value], ...]], ...] -> uPlot's aligned data
function align(series) {
  const times = [...new Set(series.flatMap(([, , points]) => points.map(([t]) => Date.parse(t) / 1000)))]
    .sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = series.map(([, , points]) => {
    const column = new Array(times.length).fill(0);
    for (const [t, v] of points) column[index.get(Date.parse(t) / 1000)] = v;
    return column;
  });
  return [times, ...columns];
}

function Chart({ title, series, unit }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current || !series.length) return undefined;
    const data = align(series);
    const width = Math.max(300, box.current.clientWidth || 600);
    const plot = new uPlot({
      width, height: 220,
      series: [{}, ...series.map(([label, color]) => ({ label, stroke: color, width: 2, points: { show: false } }))],
      axes: [{ stroke: '#333' }, { stroke: '#333', label: unit }],
      scales: { x: { time: true } },
    }, data, box.current);
    return () => plot.destroy();
  }, [series]);
  const empty = !series.length || series.every(([, , points]) => !points.length);
  return html`
    <figure class="chart">
      <figcaption>${title}</figcaption>
      ${empty ? html`<p class="muted">No data in this range.</p>` : html`<div ref=${box} role="img" aria-label=${title}></div>`}
    </figure>`;
}

function Top({ title, rows, label, link }) {
  const id = `top-${label}`;
  return html`
    <section class="card" aria-labelledby=${id}>
      <h3 id=${id}>${title}</h3>
      ${rows.length ? html`
        <table>
          <thead><tr><th scope="col">${label}</th><th scope="col" class="num">findings</th></tr></thead>
          <tbody>${rows.map(row => html`<tr><td>${link ? html`<a href=${link(row)}>${row.name}</a>` : row.name}</td>
                                         <td class="num">${row.count}</td></tr>`)}</tbody>
        </table>` : html`<p class="muted">None in this range.</p>`}
    </section>`;
}

export function Overview({ me }) {
  const [range, setRange] = useState(86400);
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [counts, setCounts] = useState(null);

  useEffect(() => {
    let stop = false;
    const load = async () => {
      const since = new Date(Date.now() - range * 1000).toISOString();
      const bucket = Math.max(60, Math.round(range / 60));
      try {
        const answer = await api('/overview', { params: { since, bucket } });
        if (!stop) { setData(answer); setError(null); }
      } catch (err) {
        if (!stop) { setData(null); setError(`The overview is unavailable: ${err.message}`); }
        if (can(me, 'findings:read')) {  // what the findings list can tell meanwhile
          const totals = {};
          for (const status of ['open', 'acknowledged', 'resolved']) {
            try { totals[status] = (await api('/findings', { params: { status, limit: 1 } })).total; } catch { /* */ }
          }
          if (!stop) setCounts(totals);
        }
      }
    };
    load();
    const timer = setInterval(load, 15000);
    return () => { stop = true; clearInterval(timer); };
  }, [range]);

  const severitySeries = data ? SEVERITIES.filter(s => (data.findings_by_severity || {})[s])
    .map(s => [s, COLORS[s], data.findings_by_severity[s]]) : [];
  const rateSeries = data ? [['events/s', '#2f6f4f', data.events_per_second || []]] : [];

  return html`
    <h1>Overview</h1>
    <div class="toolbar">
      <label for="range">Range</label>
      <select id="range" value=${range} onChange=${e => setRange(Number(e.target.value))}>
        ${RANGES.map(([label, seconds]) => html`<option value=${seconds}>last ${label}</option>`)}
      </select>
    </div>
    <${ErrorNote} error=${error} />
    ${error && counts ? html`
      <section class="stats" aria-label="Findings by status">
        ${Object.entries(counts).map(([status, n]) => html`
          <div class="stat"><span class="label">${status} findings</span><span class="value">${n}</span></div>`)}
      </section>` : null}
    ${!data && !error ? html`<${Loading} />` : null}
    ${data ? html`
      <section class="stats" aria-label="Pipeline">
        <div class="stat"><span class="label">dead letters</span>
          <span class="value">${data.dead_letters ?? 'n/a'}</span></div>
        <div class="stat"><span class="label">consumer lag</span>
          <span class="value">${data.consumer_lag ?? 'n/a'}</span></div>
        <div class="stat"><span class="label">findings in range</span>
          <span class="value">${Object.values(data.findings_by_severity || {})
            .reduce((sum, points) => sum + points.reduce((s, [, n]) => s + n, 0), 0)}</span></div>
      </section>
      <div class="charts">
        <${Chart} title="Events per second" series=${rateSeries} unit="events/s" />
        <${Chart} title="Findings by severity" series=${severitySeries} unit="findings" />
      </div>
      <div class="tops">
        <${Top} title="Top rules" label="rule" rows=${(data.top_rules || []).map(r => ({ ...r, name: r.rule_title || r.rule_id }))}
                link=${r => `#/rules/${encodeURIComponent(r.rule_id)}`} />
        <${Top} title="Top hosts" label="host" rows=${(data.top_hosts || []).map(r => ({ ...r, name: r.host }))} />
        <${Top} title="Top agents" label="agent" rows=${(data.top_agents || []).map(r => ({ ...r, name: r.agent_id }))} />
      </div>` : null}`;
}
