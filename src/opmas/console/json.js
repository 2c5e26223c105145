// Pretty-printed JSON with some fields highlighted, and the fields a Sigma rule's detection tests.
import { html } from './ui.js';

// What a rule's `detection` selections test: the keys under each selection (or under its list
// items), before any `|modifier`, and whether a selection is a list of keywords. A line scan of the
// YAML, not a YAML parser.
export function ruleFields(source) {
  const fields = new Set();
  let keywords = false;
  let detectionIndent = null;
  let selectionIndent = null;
  let childIndent = null;
  for (const raw of source.split('\n')) {
    const line = raw.replace(/\s+#.*$/, '');
    if (!line.trim() || line.trim().startsWith('#')) continue;
    const indent = line.length - line.trimStart().length;
    if (detectionIndent === null) {
      if (/^\s*detection\s*:/.test(line)) detectionIndent = indent;
      continue;
    }
    if (indent <= detectionIndent) { detectionIndent = null; selectionIndent = null; continue; }
    if (selectionIndent === null || indent <= selectionIndent) {
      selectionIndent = indent;  // a selection (or condition, timeframe) of detection
      childIndent = null;
      continue;
    }
    if (childIndent === null) childIndent = indent;
    const match = line.match(/^\s*(?:-\s+)?(['"]?)([^'":\s][^'":]*?)\1\s*:(\s|$)/);
    if (match) {
      const name = match[2].split('|')[0].trim();
      if (name && name !== 'condition' && name !== 'timeframe') fields.add(name);
    } else if (indent === childIndent && /^\s*-\s/.test(line)) {
      keywords = true;  // a list of plain values right under a selection
    }
  }
  return { fields, keywords };
}

// The event paths to highlight for a rule: its field names, what the shipped logsource mappings
// map them to (/field-aliases.json) and, for keywords, the fields keywords search.
export function highlightPaths(source, aliases) {
  const { fields, keywords } = ruleFields(source);
  const paths = new Set(fields);
  for (const name of fields) for (const path of (aliases.fields || {})[name] || []) paths.add(path);
  if (keywords) for (const path of aliases.keywords || []) paths.add(path);
  return paths;
}

let aliasesLoaded = null;
export function fieldAliases() {
  if (!aliasesLoaded) {
    aliasesLoaded = fetch('/field-aliases.json').then(r => (r.ok ? r.json() : {}), () => ({}));
  }
  return aliasesLoaded;
}

function Value({ value }) {
  if (value === null) return html`<span class="j-null">null</span>`;
  if (typeof value === 'string') return html`<span class="j-str">${JSON.stringify(value)}</span>`;
  if (typeof value === 'number') return html`<span class="j-num">${String(value)}</span>`;
  if (typeof value === 'boolean') return html`<span class="j-bool">${String(value)}</span>`;
  return null;
}

// Children of a <pre>: strings and elements (htm would drop the newlines between them).
function node(value, path, fields, indent, out) {
  const pad = '  '.repeat(indent + 1);
  const end = '  '.repeat(indent);
  if (Array.isArray(value)) {
    if (!value.length) { out.push('[]'); return; }
    out.push('[\n');
    value.forEach((item, i) => {
      out.push(pad);
      node(item, path, fields, indent + 1, out);
      out.push(i < value.length - 1 ? ',\n' : '\n');
    });
    out.push(`${end}]`);
    return;
  }
  if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (!keys.length) { out.push('{}'); return; }
    out.push('{\n');
    keys.forEach((key, i) => {
      const full = path ? `${path}.${key}` : key;
      const hit = fields.has(full) || fields.has(key);  // a nested key: EVTX data fields
      const leaf = value[key] === null || typeof value[key] !== 'object';
      const line = [html`<span class="j-key">${JSON.stringify(key)}</span>`, ': '];
      node(value[key], full, fields, indent + 1, line);
      out.push(pad);
      if (hit && leaf) out.push(html`<mark title="tested by the rule">${line}</mark>`); else out.push(...line);
      out.push(i < keys.length - 1 ? ',\n' : '\n');
    });
    out.push(`${end}}`);
    return;
  }
  out.push(html`<${Value} value=${value} />`);
}

export function JsonView({ value, fields = new Set() }) {
  const out = [];
  node(value, '', fields, 0, out);
  return html`<pre class="json">${out}</pre>`;
}
