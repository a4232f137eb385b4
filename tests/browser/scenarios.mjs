// scenarios.mjs: what tests/test_browser.py does in a real browser, one scenario per test.
//
//   node scenarios.mjs <scenario> <server http url> <artifact dir>
//
// Each scenario drives Debian's Chromium through playwright-core (never a downloaded
// browser), prints `{"step": name}` lines when the pytest side has to act (restart the server,
// publish), and ends with one `{"result": {...}}` line holding what it observed: the
// assertions live in pytest. Waits are bounded; a failed wait exits 1 with the error on stderr.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
// NAMED_HOST reaches the server under a host name, as a page served through a proxy does.
const NAMED_HOST = 'zbifrost.test';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  `--host-resolver-rules=MAP ${NAMED_HOST} 127.0.0.1`];
const WAIT_MS = 15000;

const [name, base, artifacts, ...extra] = process.argv.slice(2);
const SCENARIO_MS = 60000; // the whole run, browser start included

const say = (message) => console.log(JSON.stringify(message));

// A demo page loaded from the server, connected, with its page errors collected.
async function openDemo(context, query = '') {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.errors = errors;
  await page.goto(`${base}/${query}`);
  await page.locator('#status[data-state="connected"]').waitFor({timeout: WAIT_MS});
  await page.locator('#menu button').first().waitFor({timeout: WAIT_MS});
  return page;
}

// Click a menu button and return the lines of the result entry it adds, once it is complete.
async function runFromMenu(page, button) {
  const before = await page.locator('#results > li').count();
  await page.getByRole('button', {name: button, exact: true}).click();
  return finishedEntry(page, before);
}

async function finishedEntry(page, before) {
  await page.waitForFunction((count) => {
    const entries = document.querySelectorAll('#results > li');
    return entries.length > count && entries[0].dataset.state;
  }, before, {timeout: WAIT_MS});
  return lines(await page.locator('#results > li').first().innerText());
}

// An element's text as its non-empty lines.
const lines = (text) => text.split('\n').map((line) => line.trim()).filter(Boolean);

// Click a dialog command's button, fill its form by label, submit: its title and result entry.
async function submitDialog(page, button, values) {
  const before = await page.locator('#results > li').count();
  await page.getByRole('button', {name: button, exact: true}).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor({timeout: WAIT_MS});
  const title = await dialog.locator('h2').innerText();
  for (const [label, value] of Object.entries(values)) await dialog.getByLabel(label).fill(value);
  await dialog.getByRole('button', {name: 'Submit'}).click();
  return {title, entry: await finishedEntry(page, before)};
}

// The lines of the first (newest) result's rendered value, as {tag: text} of its elements.
const shapes = async (page, button) => {
  await runFromMenu(page, button);
  return page.locator('#results > li').first().locator('.body > *').evaluateAll((nodes) =>
    nodes.map((node) => ({tag: node.tagName.toLowerCase(), className: node.className, text: node.innerText})));
};

// The newest result's raw JSON, after a click on its toggle.
async function rawJson(page) {
  const entry = page.locator('#results > li').first();
  await entry.getByRole('button', {name: 'Raw JSON'}).click();
  return entry.locator('pre.raw').innerText();
}

// Where the page says the client is: breadcrumb, heading, menu, Connection panel.
const place = async (page) => ({
  breadcrumb: await page.locator('#breadcrumb li').allInnerTexts(),
  heading: await page.locator('#menu-title').innerText(),
  menu: (await menu(page)).map((item) => item.name),
  info: await page.locator('#info').innerText(),
});

const menu = (page) => page.locator('#menu button').evaluateAll((buttons) =>
  buttons.map((button) => ({name: button.textContent, disabled: button.disabled})));

// The channel panel: subscribe to `name` through its form, publish a text, read its lines as
// [sender, text] for messages and [`note:<level>`, text] for its notes.
async function joinChannel(page, name) {
  await page.getByLabel('Channel', {exact: true}).fill(name);
  await page.getByRole('button', {name: 'Subscribe'}).click();
  await page.locator('#channel-state', {hasText: `Subscribed to ${name}`}).waitFor({timeout: WAIT_MS});
}

async function publishFromPanel(page, text) {
  await page.getByLabel('Message', {exact: true}).fill(text);
  await page.getByRole('button', {name: 'Publish'}).click();
  await channelLine(page, text);
}

const channelLine = (page, text) => page.locator('#channel-log li', {hasText: text}).waitFor({timeout: WAIT_MS});

const channelLog = (page) => page.locator('#channel-log li').evaluateAll((items) => items.map((item) => {
  const from = item.querySelector('.from');
  return from ? [from.textContent, item.textContent.slice(from.textContent.length + 1)]
    : [`note:${item.className.replace('message level-', '')}`, item.textContent];
}));

// The presence list of the channel panel: [title (client id and role), text] per member.
const memberList = (page) => page.locator('#channel-members li').evaluateAll((items) =>
  items.map((item) => [item.title, item.textContent]));

const memberCount = (page, count) => page.waitForFunction(
  (expected) => document.querySelectorAll('#channel-members li').length === expected, count, {timeout: WAIT_MS});

const clientId = (page) => page.evaluate(() =>
  [...document.querySelectorAll('#info dt')].find((dt) => dt.textContent === 'Client id').nextElementSibling.textContent);

// In the page: `outcome(promise)` records a result or a BifrostError's fields, for pytest.
const OUTCOME = `
  window.outcome = (promise) => promise.then(
    (result) => ({result}),
    (err) => ({error: err.constructor.name, code: err.code, message: err.message, details: err.details,
               closeCode: err.closeCode, reason: err.reason, status: err.status}));
`;

const scenarios = {
  // The demo page: its menu, a click on Ping, the connection info.
  async ping(context) {
    const page = await openDemo(context);
    const entry = await runFromMenu(page, 'Ping');
    await page.screenshot({path: join(artifacts, 'page-default.png')});
    return {menu: await menu(page), entry, info: await page.locator('#info').innerText(),
      heading: await page.locator('#menu-title').innerText(), errors: page.errors};
  },

  // The bundled demo workspace (zui/zUI.demo.yaml) end to end, with every request the page
  // makes recorded (it must need nothing but its own server); docs/demo-page.png (a table
  // result among others) is a copy of its screenshot.
  async tour(context) {
    const foreign = [];
    await context.route((url) => url.origin !== base, (route) => {
      foreign.push(route.request().url());
      return route.abort();
    });
    const page = await openDemo(context);
    const root = await menu(page);
    const ping = await runFromMenu(page, 'Ping');
    const imported = await runFromMenu(page, 'Import Records');
    const wizard = await runFromMenu(page, 'Setup Wizard');
    const signUp = await submitDialog(page, 'Sign Up',
      {'User name': 'ada', Email: 'ada@example.org', Password: 'correct horse', Age: '36'});
    const raw = await rawJson(page);
    await runFromMenu(page, 'Tools');
    await page.locator('#menu-title', {hasText: 'Tools'}).waitFor({timeout: WAIT_MS});
    const tools = await menu(page);
    const whoAmI = await shapes(page, 'Who Am I');
    const time = [await runFromMenu(page, 'Server Time'), await runFromMenu(page, 'Server Time')];
    const cached = await page.locator('#results > li').first().locator('.badge').allInnerTexts();
    const colors = await shapes(page, 'Colors');
    await page.screenshot({path: join(artifacts, 'demo-page.png'), fullPage: true});
    await runFromMenu(page, 'zBack');
    await page.locator('#menu-title', {hasText: 'root'}).waitFor({timeout: WAIT_MS});
    return {root, ping, imported, wizard, signUp, raw, tools, whoAmI, time, cached, colors, foreign,
      messageClass: await page.locator('#results > li').nth(-1).locator('.message').getAttribute('class'),
      errors: page.errors};
  },

  // Navigation on the demo workspace: the breadcrumb, zBack where the block has none, and the
  // Connection panel following zLink across files.
  async navigation_demo(context) {
    const page = await openDemo(context);
    const atRoot = await place(page);
    await runFromMenu(page, 'Level 1 Menu');
    await page.locator('#menu-title', {hasText: 'Level1Menu'}).waitFor({timeout: WAIT_MS});
    const linked = await place(page);
    await runFromMenu(page, 'zBack');
    await page.locator('#menu-title', {hasText: 'root'}).waitFor({timeout: WAIT_MS});
    return {atRoot, linked, back: await place(page), errors: page.errors};
  },

  // The Sign Up form rejected by the server: it stays open with the typed values and each
  // field's problem (docs/page-form-error.png), then goes through once they are fixed.
  async form_errors(context) {
    const page = await openDemo(context);
    const before = await page.locator('#results > li').count();
    await page.getByRole('button', {name: 'Sign Up', exact: true}).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor({timeout: WAIT_MS});
    const typed = {'User name': 'A!', Email: 'not-an-email', Password: 'hunter2', Age: '7'};
    for (const [label, value] of Object.entries(typed)) await dialog.getByLabel(label).fill(value);
    await dialog.getByRole('button', {name: 'Submit'}).click();
    await dialog.locator('.field-problem:not([hidden])').first().waitFor({timeout: WAIT_MS});
    await page.screenshot({path: join(artifacts, 'page-form-error.png')});
    const problems = await dialog.locator('.field').evaluateAll((fields) => fields.map((field) => ({
      label: field.querySelector('label').childNodes[0].textContent,
      value: field.querySelector('input').value,
      type: field.querySelector('input').type,
      invalid: field.querySelector('input').getAttribute('aria-invalid'),
      problem: field.querySelector('.field-problem').hidden ? null : field.querySelector('.field-problem').textContent,
    })));
    const focused = await page.evaluate(() => document.activeElement.name);
    await dialog.getByLabel('User name').fill('ada');
    await dialog.getByLabel('Email').fill('ada@example.org');
    await dialog.getByLabel('Password').fill('correct horse');
    await dialog.getByLabel('Age').fill('36');
    await dialog.getByRole('button', {name: 'Submit'}).click();
    const entry = await finishedEntry(page, before);
    return {problems, focused, entry, dialogOpen: await dialog.isVisible(), raw: await rawJson(page),
      pageText: await page.locator('body').innerText(), errors: page.errors};
  },

  // The look: light and dark themes follow the system, a phone-sized window needs no sideways
  // scrolling, and the menu works from the keyboard.
  async look(context) {
    const page = await openDemo(context);
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.emulateMedia({colorScheme: 'light'});
    const light = await background();
    await page.emulateMedia({colorScheme: 'dark'});
    const dark = await background();
    await page.screenshot({path: join(artifacts, 'page-dark.png')});
    await page.setViewportSize({width: 390, height: 800});
    const phone = await page.evaluate(() => ({scroll: document.documentElement.scrollWidth, width: innerWidth}));
    await page.screenshot({path: join(artifacts, 'page-phone.png'), fullPage: true});
    const before = await page.locator('#results > li').count();
    await page.locator('#menu button').first().focus();
    await page.keyboard.press('ArrowDown');
    const second = await page.evaluate(() => document.activeElement.textContent);
    await page.keyboard.press('Enter');
    const entry = await finishedEntry(page, before);
    return {light, dark, phone, second, entry, errors: page.errors};
  },

  // BifrostClient's rejections: server error codes, its own timeout, and `disconnected`.
  async client_errors(context) {
    const page = await openDemo(context);
    await page.addScriptTag({content: OUTCOME});
    return page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const client = new BifrostClient();
      await client.connect();
      const unknown = await outcome(client.dispatch('^Nope'));
      const missing = await outcome(client.request('dispatch', {}));
      const noReply = await outcome(client.request('input_response', {requestId: 'none', value: 1}, {timeout: 300}));
      const afterErrors = await outcome(client.dispatch('^Ping'));
      const cutOff = client.dispatch('^Ping');
      client.disconnect();
      return {unknown, missing, noReply, afterErrors, cutOff: await outcome(cutOff),
        afterDisconnect: await outcome(client.dispatch('^Ping'))};
    });
  },

  // Tokens go in the query string; a refused one rejects connect() with the close code.
  async auth(context) {
    const page = await context.newPage();
    await page.goto(`${base}/`);
    await page.locator('#status[data-state="down"]').waitFor({timeout: WAIT_MS});
    const refusedPage = await page.locator('#status').innerText();
    await page.addScriptTag({content: OUTCOME});
    const [token] = extra;
    const client = await page.evaluate(async (token) => {
      const {BifrostClient} = await import('/bifrost.js');
      const attempt = async (options) => {
        let retries = 0;
        const client = new BifrostClient(undefined, {...options, hooks: {onReconnecting: () => retries++}});
        const connected = await outcome(client.connect());
        client.disconnect();
        return {...connected, retries};
      };
      return {none: await attempt({}), wrong: await attempt({token: 'not-a-token'}), good: await attempt({token})};
    }, token);
    const allowed = await openDemo(context, `?token=${encodeURIComponent(token)}`);
    return {refusedPage, client, allowedPage: await allowed.locator('#info').innerText()};
  },

  // getToken: the page mints 5-second JWTs (HS256 with the secret `extra[0]`, as an
  // application's server would) and stays on one connection for 15 s by refreshing them;
  // then its connection drops, and it reconnects with a new token (the first has expired).
  async jwt_refresh(context) {
    const page = await context.newPage();
    await page.goto(`${base}/`);
    const [secret] = extra;
    return page.evaluate(async (secret) => {
      const {BifrostClient} = await import('/bifrost.js');
      const encode = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
        .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      const text = (value) => encode(new TextEncoder().encode(JSON.stringify(value)));
      const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(secret),
        {name: 'HMAC', hash: 'SHA-256'}, false, ['sign']);
      const probe = {tokens: 0, connected: 0, disconnects: [], expires: [], roles: []};
      const getToken = async () => {
        probe.tokens++;
        // the first token says role user, every later one admin: a refresh changes the role
        const role = probe.tokens === 1 ? 'user' : 'admin';
        const claims = {sub: 'alice', role, exp: Math.floor(Date.now() / 1000) + 5};
        const body = `${text({alg: 'HS256', typ: 'JWT'})}.${text(claims)}`;
        return `${body}.${encode(await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(body)))}`;
      };
      let reconnected;
      const client = new BifrostClient(undefined, {getToken, hooks: {
        onConnected: (info) => {
          probe.connected++; probe.expires.push(info.auth.expires); probe.roles.push(info.auth.role); reconnected?.();
        },
        onDisconnected: ({code, reason}) => probe.disconnects.push(`${code} ${reason}`),
      }});
      const info = await client.connect();
      await new Promise((resolve) => setTimeout(resolve, 15000));
      probe.pong = await client.request('ping').then(() => true, (err) => err.message);
      probe.user = info.auth.user;
      probe.lastExpires = client.info?.auth.expires;
      probe.lastRole = client.info?.auth.role;
      probe.before = {tokens: probe.tokens, connected: probe.connected, disconnects: [...probe.disconnects]};
      const back = new Promise((resolve) => { reconnected = resolve; });
      client._socket.close(); // the connection drops (here from the page's side)
      await Promise.race([back, new Promise((resolve) => setTimeout(resolve, 10000))]);
      probe.pongAfter = await client.request('ping').then(() => true, (err) => err.message);
      client.disconnect();
      return probe;
    }, secret);
  },

  // The page of a server with an allowed_origins list connects (its own origin); under a
  // host name that is not listed (the DNS-rebinding guard) it says why and does not retry;
  // on a full server (`extra[0]`) it says why and retries.
  async refusals(context) {
    const own = await openDemo(context);
    const ownStatus = await own.locator('#status').innerText();
    const named = await context.newPage();
    await named.goto(base.replace('127.0.0.1', NAMED_HOST) + '/');
    await named.locator('#status[data-state="down"]').waitFor({timeout: WAIT_MS});
    const namedStatus = await named.locator('#status').innerText();
    await named.addScriptTag({content: OUTCOME});
    const namedClient = await named.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      let retries = 0;
      const client = new BifrostClient(undefined, {hooks: {onReconnecting: () => retries++}});
      const connected = await outcome(client.connect());
      return {...connected, retries};
    });
    const full = await context.newPage();
    await full.goto(`${extra[0]}/`);
    await full.locator('#status', {hasText: 'Retrying'}).waitFor({timeout: WAIT_MS});
    return {ownStatus, namedStatus, namedClient, fullStatus: await full.locator('#status').innerText()};
  },

  // A page whose main thread is busy for 2 s right after connect(), so that it handles the
  // refusal late (a browser answers the close frame only then), still sees the 1008.
  async auth_busy_page(context) {
    const page = await context.newPage();
    await page.goto(`${base}/`);
    await page.addScriptTag({content: OUTCOME});
    return page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      let retries = 0;
      const client = new BifrostClient(undefined, {hooks: {onReconnecting: () => retries++}});
      const connecting = outcome(client.connect());
      const busyUntil = Date.now() + 2000;
      while (Date.now() < busyUntil) { /* the page is busy */ }
      const connected = await connecting;
      client.disconnect();
      return {...connected, retries};
    });
  },

  // Two tabs with colliding request ids each get only their own replies.
  async two_tabs(context) {
    const tabs = [await openDemo(context), await openDemo(context)];
    const keys = ['^Ping', '^Status'];
    const seen = await Promise.all(tabs.map((tab, index) => tab.evaluate(async (zKey) => {
      const {BifrostClient} = await import('/bifrost.js');
      const frames = [];
      const client = new BifrostClient(undefined, {hooks: {onMessage: (frame) => frames.push(frame)}});
      await client.connect();
      const results = await Promise.all(Array.from({length: 5}, () => client.dispatch(zKey)));
      client.disconnect();
      return {results, frames};
    }, keys[index])));
    const entries = [await runFromMenu(tabs[0], 'Ping'), await runFromMenu(tabs[1], 'Status')];
    const logs = await Promise.all(tabs.map((tab) => tab.locator('#results').innerText()));
    return {seen, entries, logs};
  },

  // The server stops and a new one starts on the same port: the client comes back, with its
  // channel subscription, and so does the demo page.
  async reconnect(context) {
    const page = await openDemo(context);
    await page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const probe = window.probe = {connected: 0, disconnects: [], reconnecting: [], shutdown: 0, messages: []};
      const client = window.client = new BifrostClient(undefined, {hooks: {
        onConnected: () => probe.connected++,
        onDisconnected: ({code}) => probe.disconnects.push(code),
        onReconnecting: (attempt, delay) => probe.reconnecting.push({attempt, delay}),
        onServerShutdown: () => probe.shutdown++,
      }});
      client.subscribe('news', (data, from) => probe.messages.push({data, from}));
      await client.connect();
    });
    say({step: 'connected'});
    await page.waitForFunction(() => window.probe.connected >= 2, null, {timeout: WAIT_MS});
    await page.evaluate(() => window.client.request('ping')); // the re-subscribe went first
    say({step: 'reconnected'});
    await page.waitForFunction(() => window.probe.messages.length >= 1, null, {timeout: WAIT_MS});
    await page.locator('#status[data-state="connected"]').waitFor({timeout: WAIT_MS});
    await page.locator('#menu button').first().waitFor({timeout: WAIT_MS});
    const entry = await runFromMenu(page, 'Ping');
    return {probe: await page.evaluate(() => window.probe), entry, errors: page.errors};
  },

  // An `unsubscribed` of reason insufficient_state (pytest sends it) is followed by a subscribe
  // with `since` at once. Then the server API acting on the page: its unsubscribe takes the
  // page's channel away (the panel says so, the client drops it), then its disconnect closes
  // the page with 1008 "Disconnected", which the page explains and does not reconnect after.
  async api_disconnect(context) {
    const [token] = extra;
    const page = await openDemo(context, `?token=${encodeURIComponent(token)}`);
    await joinChannel(page, 'news');
    await page.evaluate(async (token) => {
      const {BifrostClient} = await import('/bifrost.js');
      const probe = window.probe = {unsubscribed: [], recovered: [], disconnects: [], reconnecting: 0};
      const client = window.client = new BifrostClient(undefined, {token, hooks: {
        onUnsubscribed: (channel, reason) => probe.unsubscribed.push([channel, reason]),
        onRecovered: (channel, recovered) => probe.recovered.push([channel, recovered]),
        onDisconnected: ({code, reason, final, why}) => probe.disconnects.push({code, reason, final, why}),
        onReconnecting: () => probe.reconnecting++,
      }});
      await client.connect();
      await client.subscribe('news', () => {});
    }, token);
    say({step: 'subscribed'});
    await page.waitForFunction(() => window.probe.recovered.length === 1, null, {timeout: WAIT_MS});
    say({step: 'resubscribed'});
    await page.locator('#channel-state', {hasText: 'Unsubscribed from news by the server'}).waitFor({timeout: WAIT_MS});
    await page.waitForFunction(() => window.probe.unsubscribed.length === 2, null, {timeout: WAIT_MS});
    const channels = await page.evaluate(() => [...window.client._channels.keys()]);
    const unsubscribedLog = await channelLog(page);
    say({step: 'unsubscribed'});
    await page.locator('#status[data-state="down"]').waitFor({timeout: WAIT_MS});
    await page.waitForFunction(() => window.probe.disconnects.length === 1, null, {timeout: WAIT_MS});
    await page.waitForTimeout(1500); // past the first retry's delay (at most 600 ms), had one been scheduled
    return {channels, unsubscribedLog, probe: await page.evaluate(() => window.probe),
      status: await page.locator('#status').innerText(), errors: page.errors};
  },

  // A subscribe the server refuses rejects, and is not sent again after a reconnection.
  async refused_subscribe(context) {
    const page = await openDemo(context);
    const outcome = await page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const client = window.client = new BifrostClient();
      await client.connect();
      try {
        await client.subscribe('secret', () => {});
        return 'subscribed';
      } catch (err) {
        return err.code;
      }
    });
    say({step: 'refused'});
    await page.waitForFunction(() => window.client.info === null, null, {timeout: WAIT_MS});
    await page.waitForFunction(() => window.client.info !== null, null, {timeout: WAIT_MS});
    await page.evaluate(() => window.client.request('ping')); // a re-subscribe would have gone first
    return {outcome, errors: page.errors};
  },

  // A tab publishes, then loses its connection while messages are published: after the
  // reconnection it gets what it missed (not its own message), in order, and is told it recovered. A second client subscribes with a
  // saved position and gets the same messages through the subscribe promise.
  async recovery(context) {
    const page = await openDemo(context);
    await page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const probe = window.probe = {messages: [], recovered: [], disconnects: 0};
      const client = window.client = new BifrostClient(undefined, {hooks: {
        onDisconnected: () => probe.disconnects++,
        onRecovered: (channel, recovered) => probe.recovered.push({channel, recovered}),
      }});
      await client.connect();
      await client.subscribe('orders', (data, from, offset) => probe.messages.push({data, from, offset}));
    });
    say({step: 'subscribed'});
    await page.waitForFunction(() => window.probe.messages.length >= 1, null, {timeout: WAIT_MS});
    say({step: 'first'});
    // its own publish is not sent back to it, and must not come back with the recovery either
    await page.evaluate(() => window.client.publish('orders', 'mine'));
    say({step: 'published'});
    await page.waitForFunction(() => window.probe.recovered.length >= 1 && window.probe.messages.length >= 3,
      null, {timeout: WAIT_MS});
    const fromSaved = await page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const other = new BifrostClient();
      await other.connect();
      const replayed = [];
      const since = {epoch: window.client.position('orders').epoch, offset: 0};
      const result = await other.subscribe('orders', (data) => replayed.push(data), {since});
      await other.request('ping'); // the replayed messages came before this reply
      other.disconnect();
      return {recovered: result.recovered, replayed};
    });
    return {probe: await page.evaluate(() => window.probe), position: await page.evaluate(() => window.client.position('orders')),
      fromSaved, errors: page.errors};
  },

  // The server ends a subscription with `insufficient_state`: the tab subscribes again at once
  // with `since`, gets what was published meanwhile and is told whether it recovered.
  async insufficient_state(context) {
    const page = await openDemo(context);
    await page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const probe = window.probe = {messages: [], recovered: []};
      const client = window.client = new BifrostClient(undefined, {hooks: {
        onRecovered: (channel, recovered) => probe.recovered.push({channel, recovered}),
      }});
      await client.connect();
      await client.subscribe('orders', (data, from, offset) => probe.messages.push({data, offset}));
    });
    say({step: 'subscribed'});
    await page.waitForFunction(() => window.probe.recovered.length >= 1 && window.probe.messages.length >= 1,
      null, {timeout: WAIT_MS});
    return {probe: await page.evaluate(() => window.probe), errors: page.errors};
  },

  // Two tabs talk through the channel panel: each sees the other's message under the other's
  // client id, and its own as "you".
  async channel_talk(context) {
    const tabs = [await openDemo(context), await openDemo(context)];
    for (const tab of tabs) await joinChannel(tab, 'chat');
    await publishFromPanel(tabs[0], 'hello from the first tab');
    await channelLine(tabs[1], 'hello from the first tab');
    await publishFromPanel(tabs[1], 'hello back');
    await channelLine(tabs[0], 'hello back');
    await tabs[0].screenshot({path: join(artifacts, 'page-channels.png'), fullPage: true});
    return {ids: await Promise.all(tabs.map(clientId)), logs: await Promise.all(tabs.map(channelLog)),
      errors: tabs.flatMap((tab) => tab.errors)};
  },

  // Two tabs on a channel whose rule turns presence and join/leave on: each lists who is here,
  // and the first sees the second arrive and go when its tab is closed. On a channel without
  // presence the panel says so.
  async presence_panel(context) {
    const first = await openDemo(context);
    await joinChannel(first, 'chat');
    const unavailable = await first.locator('#presence-state').textContent();
    await joinChannel(first, 'room.1');
    await memberCount(first, 1);
    const second = await openDemo(context);
    await joinChannel(second, 'room.1');
    await memberCount(first, 2);
    await memberCount(second, 2);
    await first.screenshot({path: join(artifacts, 'page-presence.png'), fullPage: true});
    const seen = {ids: [await clientId(first), await clientId(second)], unavailable,
      members: [await memberList(first), await memberList(second)], errors: [...first.errors, ...second.errors]};
    await second.close();
    await memberCount(first, 1);
    await channelLine(first, 'left');
    return {...seen, after: await memberList(first), log: await channelLog(first)};
  },

  // The channel panel of a tab whose connection pytest cuts twice: after the first cut it
  // shows the missed messages, recovered; after the second (more missed than the channel's
  // history holds) it says they are lost, and goes on with new messages.
  async channel_recovery(context) {
    const page = await openDemo(context);
    await joinChannel(page, 'orders');
    say({step: 'subscribed'});
    await channelLine(page, 'first');
    await publishFromPanel(page, 'mine');
    say({step: 'published'});
    await page.locator('#channel-log .level-success').waitFor({timeout: WAIT_MS});
    await channelLine(page, 'missed 2');
    say({step: 'recovered'});
    await page.locator('#channel-log .level-warning').waitFor({timeout: WAIT_MS});
    say({step: 'lost'});
    await channelLine(page, 'after');
    return {log: await channelLog(page), errors: page.errors};
  },

  // A zDialog: the page introspects it, renders a labelled form, dispatches with `data`.
  // The client alone: onInput answers an input_request; invalid data keeps its details.
  async dialog(context) {
    const page = await openDemo(context);
    const {title, entry} = await submitDialog(page, 'Greet', {'Your name': 'Ada', Age: '36'});
    const dialog = page.getByRole('dialog');
    await page.addScriptTag({content: OUTCOME});
    const client = await page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const requests = [];
      const client = new BifrostClient(undefined, {hooks: {
        onInput: (request) => { requests.push(request); return {name: 'Bob', age: 7}; },
      }});
      await client.connect();
      const asked = await outcome(client.dispatch('^Greet'));
      const invalid = await outcome(client.dispatch('^Greet', {data: {name: 'Eve', age: 'old'}}));
      client.disconnect();
      return {asked, invalid, requests};
    });
    return {title, entry, dialogOpen: await dialog.isVisible(), client, errors: page.errors};
  },

  // A command streaming display output and progress: the page shows a list and a progress
  // bar; the client calls both the hooks and the per-call callbacks.
  async progress(context) {
    const page = await openDemo(context);
    const entry = await runFromMenu(page, 'Import');
    const bar = await page.locator('#results > li progress').first().evaluate((el) => ({value: el.value, max: el.max}));
    const client = await page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      const hook = [];
      const perCall = [];
      const client = new BifrostClient(undefined, {hooks: {
        onProgress: (progress) => hook.push(progress),
        onDisplay: (frame) => hook.push(frame.data),
      }});
      await client.connect();
      const result = await client.dispatch('^Import', {
        onProgress: (progress) => perCall.push(progress),
        onDisplay: (frame) => perCall.push(frame.data),
      });
      client.disconnect();
      return {result, hook, perCall};
    });
    return {entry, bar, client, errors: page.errors};
  },

  // Replies are matched by _requestId: a dialog waiting for input does not hold back a Ping
  // sent after it.
  async out_of_order(context) {
    const page = await openDemo(context);
    return page.evaluate(async () => {
      const {BifrostClient} = await import('/bifrost.js');
      let answer;
      let asked;
      const askedForInput = new Promise((resolve) => { asked = resolve; });
      const client = new BifrostClient(undefined, {hooks: {onInput: () => {
        asked();
        return new Promise((resolve) => { answer = resolve; });
      }}});
      await client.connect();
      const order = [];
      const greet = client.dispatch('^Greet').then((result) => order.push(['Greet', result]));
      await askedForInput;
      await client.dispatch('^Ping').then((result) => order.push(['Ping', result]));
      answer({name: 'Zed', age: 1});
      await greet;
      client.disconnect();
      return order;
    });
  },

  // zLink moves the page to another block's menu; zBack returns.
  async navigation(context) {
    const page = await openDemo(context);
    const linked = await runFromMenu(page, 'Go Deeper');
    await page.locator('#menu-title', {hasText: 'Deeper'}).waitFor({timeout: WAIT_MS});
    const deeper = {heading: await page.locator('#menu-title').innerText(), menu: await menu(page)};
    const hello = await runFromMenu(page, 'Hello');
    await runFromMenu(page, 'zBack');
    await page.locator('#menu-title', {hasText: 'root'}).waitFor({timeout: WAIT_MS});
    return {linked, deeper, hello, back: {heading: await page.locator('#menu-title').innerText(), menu: await menu(page)},
      errors: page.errors};
  },
  // The chaos case of tests/test_chaos_browser.py: `pages` tabs (extra[0]) loaded from the
  // server, each with a BifrostClient subscribed to `chaos` that records, in order, what the
  // page is told: ['reply', epoch, offset, recovered] (its first subscribe and every
  // onRecovered), ['message', offset, data.id, epoch of its position] for each handler call, and
  // ['unsubscribed', reason]. Their positions are printed every 100 ms as `{"state": [...]}`
  // while pytest brings faults; the records are the result once pytest writes `collect` to stdin.
  async chaos(context) {
    const pages = await Promise.all(Array.from({length: Number(extra[0])}, async () => {
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (err) => errors.push(err.message));
      page.errors = errors;
      await page.goto(`${base}/bifrost.js`); // the server's origin, without the demo page's own client
      await page.evaluate(async () => {
        const {BifrostClient} = await import('/bifrost.js');
        const probe = window.probe = {events: [], connections: 0, lastMessage: performance.now()};
        const reply = (result) => probe.events.push(['reply', result.epoch, result.offset, result.recovered ?? null]);
        const client = window.client = new BifrostClient(undefined, {hooks: {
          onConnected: () => probe.connections++,
          onRecovered: (channel, recovered, result) => reply(result),
          onUnsubscribed: (channel, reason) => probe.events.push(['unsubscribed', reason]),
        }});
        await client.connect();
        reply(await client.subscribe('chaos', (data, from, offset) => {
          probe.events.push(['message', offset, data.id, client.position('chaos').epoch]);
          probe.lastMessage = performance.now();
        }));
      });
      return page;
    }));
    say({step: 'subscribed'});
    const state = () => Promise.all(pages.map((page) => page.evaluate(() => ({
      ...window.client.position('chaos'), quiet: (performance.now() - window.probe.lastMessage) / 1000,
      connections: window.probe.connections}))));
    let reporting = true;
    const report = (async () => {
      while (reporting) {
        say({state: await state()});
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    for await (const line of createInterface({input: process.stdin})) if (line === 'collect') break;
    reporting = false;
    await report;
    return Promise.all(pages.map(async (page) => ({...await page.evaluate(() => window.probe), errors: page.errors})));
  },
};

async function main() {
  const scenario = scenarios[name];
  if (!scenario) throw new Error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(', ')}`);
  const profile = mkdtempSync(join(tmpdir(), 'zbifrost-chromium-'));
  const context = await chromium.launchPersistentContext(profile,
    {executablePath: CHROMIUM, headless: true, args: ARGS, viewport: {width: 1100, height: 720}});
  try {
    say({result: await scenario(context)});
  } finally {
    await context.close();
    rmSync(profile, {recursive: true, force: true});
  }
}

setTimeout(() => {
  console.error(`scenario ${name} did not finish within ${SCENARIO_MS} ms`);
  process.exit(1);
}, SCENARIO_MS).unref();

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
