// Shared view helpers: htm bound to Preact, time formatting, small components.
import { h } from './vendor/preact.module.js';
import htm from './vendor/htm.module.js';

export const html = htm.bind(h);

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'informational'];
export const STATUSES = ['open', 'acknowledged', 'resolved'];

export function fmtTime(value) {
  if (!value) return '';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/Z$/, ' UTC');
}

export function navigate(hash) { if (location.hash !== hash) location.hash = hash; }

export function Severity({ value }) {
  return html`<span class=${`sev sev-${value}`}>${value}</span>`;
}

export function Status({ value }) {
  return html`<span class=${`status status-${value}`}>${value}</span>`;
}

export function ErrorNote({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${typeof error === 'string' ? error : error.message}</p>`;
}

export function Loading({ what = 'Loading' }) {
  return html`<p class="muted" aria-live="polite">${what}…</p>`;
}

// datetime-local input value (UTC, as the console shows every time) <-> ISO string
export function toLocalInput(date) { return new Date(date).toISOString().slice(0, 16); }
export function fromLocalInput(value) { return value ? new Date(`${value}:00Z`).toISOString() : null; }
