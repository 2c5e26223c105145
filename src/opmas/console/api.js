// The management API from the browser: REST with the bearer token, live streams over WebSocket.
// The token lives in sessionStorage (this tab only, gone when it closes), never in a URL.

const BASE = '/api/v1';
const TOKEN_KEY = 'opmas.token';
let onSignedOut = () => {};

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
}
export function whenSignedOut(callback) { onSignedOut = callback; }

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// The readable text of an API error body: {detail: "..."} or {detail: {message, errors}} or FastAPI's list.
export function describe(body, status) {
  const detail = body && body.detail;
  if (typeof detail === 'string') return detail;
  if (detail && typeof detail === 'object' && !Array.isArray(detail)) {
    const errors = (detail.errors || []).map(e => (e.line ? `line ${e.line}: ` : '') + e.message);
    return [detail.message, ...errors].filter(Boolean).join('; ');
  }
  if (Array.isArray(detail)) return detail.map(d => `${(d.loc || []).join('.')}: ${d.msg}`).join('; ');
  return status ? `HTTP ${status}` : 'no answer';
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === '') continue;
    for (const one of Array.isArray(value) ? value : [value]) search.append(key, one);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export async function api(path, { method = 'GET', body, params } = {}) {
  const headers = { accept: 'application/json' };
  const current = token();
  if (current) headers.authorization = `Bearer ${current}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(BASE + path + query(params), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, null, `the API did not answer (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (response.status === 401 && current && path !== '/auth/token') {
    setToken(null);
    onSignedOut('Your session ended (token expired or revoked): sign in again.');
  }
  if (!response.ok) throw new ApiError(response.status, data, describe(data, response.status));
  return data;
}

// A live stream: the token goes as the first message. Reconnects after a drop unless closed here or
// refused (4401/4403). onState(text) tells what the socket does.
export function live(path, onData, onState = () => {}) {
  let socket = null;
  let closed = false;
  let retry = null;
  const open = () => {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    socket = new WebSocket(`${scheme}//${location.host}${BASE}${path}`);
    socket.onopen = () => { socket.send(JSON.stringify({ token: token() })); onState('live'); };
    socket.onmessage = event => {
      try { onData(JSON.parse(event.data)); } catch (error) { console.warn('bad message', error); }
    };
    socket.onclose = event => {
      if (closed) return;
      if (event.code === 4401 || event.code === 4403) { onState(`refused: ${event.reason || event.code}`); return; }
      onState('reconnecting');
      retry = setTimeout(open, 2000);
    };
  };
  open();
  return { close() { closed = true; clearTimeout(retry); if (socket) socket.close(); } };
}

export function can(me, permission) { return !!me && me.permissions.includes(permission); }
