// The console: sign-in, navigation and the hash router (#/overview, #/findings[/id], #/rules[/id|/new], #/agents).
import { render } from './vendor/preact.module.js';
import { useEffect, useState } from './vendor/hooks.module.js';
import { api, can, setToken, token, whenSignedOut } from './api.js';
import { ErrorNote, html } from './ui.js';
import { Overview } from './overview.js';
import { FindingPage, Findings } from './findings.js';
import { RulePage, Rules } from './rules.js';
import { Agents } from './agents.js';

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || 'overview', id: parts[1] || null };
}

function SignIn({ onSignedIn, notice }) {
  const [principal, setPrincipal] = useState('admin');
  const [secret, setSecret] = useState('');
  const [error, setError] = useState(notice);
  const [busy, setBusy] = useState(false);
  const submit = async event => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const answer = await api('/auth/token', { method: 'POST', body: { principal_id: principal, secret } });
      setToken(answer.access_token);
      setSecret('');
      await onSignedIn();
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <main class="signin" id="main">
      <h1>OPMAS console</h1>
      <form onSubmit=${submit} aria-label="Sign in">
        <label for="principal">Principal id</label>
        <input id="principal" name="principal" autocomplete="username" required value=${principal}
               onInput=${e => setPrincipal(e.target.value)} />
        <label for="secret">Secret</label>
        <input id="secret" name="secret" type="password" autocomplete="current-password" required value=${secret}
               onInput=${e => setSecret(e.target.value)} />
        <button type="submit" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
        <${ErrorNote} error=${error} />
      </form>
      <p class="muted">The admin's secret is printed by <code>opmas up</code> on its first start (or set by
        <code>OPMAS_ADMIN_TOKEN</code>).</p>
    </main>`;
}

const PAGES = [
  ['overview', 'Overview', null],
  ['findings', 'Findings', 'findings:read'],
  ['rules', 'Rules', 'rules:read'],
  ['agents', 'Agents', 'agents:read'],
];

function App() {
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(!!token());
  const [notice, setNotice] = useState(null);
  const [route, setRoute] = useState(parseRoute());

  const loadMe = async () => {
    try {
      setMe(await api('/auth/me'));
      setNotice(null);
    } catch (err) {
      setToken(null);
      setMe(null);
      if (err.status !== 401) setNotice(err.message);
    } finally {
      setChecking(false);
    }
  };

  useEffect(() => {
    whenSignedOut(message => { setMe(null); setNotice(message); });
    const onHash = () => setRoute(parseRoute());
    window.addEventListener('hashchange', onHash);
    if (token()) loadMe();
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  const signOut = async () => {
    try { await api('/auth/revoke', { method: 'POST' }); } catch { /* signed out here anyway */ }
    setToken(null);
    setMe(null);
    setNotice('Signed out.');
  };

  if (checking) return html`<p class="muted">Loading…</p>`;
  if (!me) return html`<${SignIn} onSignedIn=${loadMe} notice=${notice} />`;

  let page;
  const { page: name, id } = route;
  if (name === 'findings') page = id ? html`<${FindingPage} key=${id} me=${me} id=${id} />` : html`<${Findings} me=${me} />`;
  else if (name === 'rules') page = id ? html`<${RulePage} key=${id} me=${me} id=${id} />` : html`<${Rules} me=${me} />`;
  else if (name === 'agents') page = html`<${Agents} me=${me} />`;
  else page = html`<${Overview} me=${me} />`;

  return html`
    <a class="skip" href="#main" onClick=${e => { e.preventDefault(); document.getElementById('main').focus(); }}>
      Skip to content</a>
    <header class="top">
      <span class="brand">OPMAS</span>
      <nav aria-label="Pages">
        ${PAGES.filter(([, , perm]) => !perm || can(me, perm)).map(([key, label]) => html`
          <a href=${`#/${key}`} aria-current=${name === key ? 'page' : undefined}>${label}</a>`)}
      </nav>
      <span class="who">Signed in as <strong>${me.name}</strong> (${me.id})</span>
      <button type="button" class="secondary" onClick=${signOut}>Sign out</button>
    </header>
    <main id="main" tabindex="-1">${page}</main>`;
}

const root = document.getElementById('app');
root.textContent = '';  // the no-JavaScript notice
render(html`<${App} />`, root);
