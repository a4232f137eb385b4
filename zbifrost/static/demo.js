// demo.js: the page at / as a zUI front end. It connects back to the server that served the
// page and drives one section per concern of index.html:
//   navigation   the current block's menu (from `discover`), a breadcrumb of the blocks
//                visited, and zBack in every block but the first; zLink/zBack move it;
//   results      each command's outcome rendered by its shape (messages with their level,
//                tables, key/value lists, zDisplay events, progress), raw JSON one click away;
//   channels     one channel at a time: subscribe, publish, its messages with their sender,
//                and whether a reconnection recovered the messages missed meanwhile; who is
//                in it and their joins and leaves, where its rule turns presence on;
//   connection   connection_info, following the client's current zVaFile and zBlock;
// plus the form of a zDialog command (forms.js), which stays open with each field's problem
// when the server rejects it; results are drawn by render.js. A `?token=` in the page's URL
// is passed on. A new panel adds its own section to index.html and its own block of code here.
import { BifrostClient } from '/bifrost.js';
import { openForm, secretsOf } from '/forms.js';
import { $, el, hidden, isPlainObject, renderDisplay, renderResult } from '/render.js';

const state = {
  info: null, // connection_info.data
  trail: [], // [{zVaFile, zBlock}] from the first block to the current one
  trouble: '', // why the connection went down, in words, kept while retrying
};

const client = new BifrostClient(undefined, {
  token: new URLSearchParams(location.search).get('token') || undefined,
  hooks: {
    onConnected(info) {
      state.info = info;
      state.trail = [{zVaFile: info.session.zVaFile, zBlock: info.session.zBlock}];
      setStatus('connected', 'Connected');
      channel.away = false;
      showBlock().catch(showFailure);
    },
    onDisconnected(closed) {
      state.trouble = explainClose(closed);
      setStatus('down', state.trouble);
      if (channel.name && !channel.away && !closed.final) {
        channel.away = true; // one note per outage, however many attempts fail
        channelNote('info', 'Connection lost: the messages missed meanwhile will be asked for on reconnection.');
      }
    },
    onReconnecting: (attempt, delay) =>
      setStatus('down', `${state.trouble} Retrying in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})…`),
    onServerShutdown: () => setStatus('down', 'The server is shutting down…'),
    onInput: (request) => askForm(request.prompt || 'The command needs input', request.fields),
    onRecovered: channelRecovered,
    onJoin: (name, info) => memberCame(name, info, true),
    onLeave: (name, info) => memberCame(name, info, false),
    onUnsubscribed: channelTakenAway,
  },
});

client.connect().catch((err) => {
  if (err.closeCode === undefined) setStatus('down', `Could not connect: ${err.message}`); // else already said
});

const bare = (key) => (key.startsWith('^') ? key.slice(1) : key);

function setStatus(state, text) {
  const status = $('status');
  status.dataset.state = state;
  status.textContent = text;
}

// Why a connection closed, in words a user can act on (docs/protocol.md sections 2 and 9).
const TOKEN_REFUSALS = new Set(['Authentication required', 'Invalid token', 'Token expired']);

function explainClose({code, reason, refusal, why}) {
  if (refusal?.status === 403) {
    return `The server refused this page (HTTP 403: ${refusal.reason}). ` +
      `Add ${location.origin} to the server's allowed_origins.`;
  }
  if (refusal) return `The server is unavailable (HTTP ${refusal.status}: ${refusal.reason}).`;
  if (code === 1008 && TOKEN_REFUSALS.has(reason)) {
    return `The server refused the connection: ${reason}. Open this page with ?token=<your token>.`;
  }
  if (code === 1008) return `${why} Reload the page to connect again.`; // Disconnected, Unauthorized, ...
  if (code === 1001) return 'The server shut down.';
  if (code === 1006) return 'The connection to the server was lost.';
  return `Disconnected (${code}${reason ? `: ${reason}` : ''}).`;
}

function showFailure(err) {
  addEntry('Menu').error(err);
}

// -- connection ----------------------------------------------------------------------------

function showInfo() {
  const {info} = state;
  const here = state.trail.at(-1);
  const rows = [
    ['Server', `zbifrost ${info.server_version} (protocol ${info.protocol})`],
    ['Client id', info.client_id],
    ['User', `${info.auth.user} (${info.auth.role})`],
    ['Workspace', info.session.workspace],
    ['zVaFile', here.zVaFile],
    ['zBlock', here.zBlock],
    ['Features', info.features.join(', ')],
  ];
  $('info').replaceChildren(...rows.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, value)]));
}

// -- channels ------------------------------------------------------------------------------

// The one channel the panel shows. The server does not send a tab its own publishes, so they
// are listed from the publish reply, as "you"; a replay after a reconnection may bring them
// again (from the old client id), and `shown` keeps them from being listed twice.
const channel = {
  name: null,
  shown: new Set(), // offsets listed in the channel's current epoch
  latest: 0, // the highest offset listed (or the channel's offset when subscribed)
  away: false, // the connection was lost since the last connection_info
  members: new Map(), // client_id -> {user, role}: who is subscribed, when presence is on
};

// Subscribing to another channel leaves the current one and starts an empty list.
$('subscribe-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = $('channel-name').value.trim();
  if (!name || name === channel.name) return;
  const handler = (data, from, offset) => showChannelMessage(name, data, from, offset);
  let result;
  try {
    result = await client.subscribe(name, handler);
  } catch (err) {
    client.unsubscribe(name, handler).catch(() => {}); // else the client would retry it at each reconnection
    channelNote('error', `${err.code}: ${err.message}`);
    return;
  }
  const previous = channel.name;
  Object.assign(channel, {name, shown: new Set(), latest: result?.offset ?? 0});
  if (previous) client.unsubscribe(previous).catch(() => {}); // a lost connection ends it anyway
  $('channel-log').replaceChildren();
  $('channel-state').textContent = result
    ? `Subscribed to ${name} (offset ${result.offset}).` : `Subscribing to ${name} once connected…`;
  $('channel-text').disabled = $('publish').disabled = false;
  if (result) showPresence(name);
});

$('publish-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = channel.name;
  const text = $('channel-text').value;
  try {
    const {offset} = await client.publish(name, text);
    $('channel-text').value = '';
    showChannelMessage(name, text, 'you', offset);
  } catch (err) {
    channelNote('error', `${err.code}: ${err.message}`);
  }
});

function showChannelMessage(name, data, from, offset) {
  if (name !== channel.name || channel.shown.has(offset)) return;
  channel.shown.add(offset);
  channel.latest = Math.max(channel.latest, offset);
  const sender = from === 'you' || from === 'server' ? from : 'client';
  addChannelLine(el('li', {className: 'channel-message', title: `offset ${offset}`},
    el('span', {className: `from from-${sender}`}, from), ' ', typeof data === 'string' ? data : JSON.stringify(data)));
}

// After a reconnection: the messages missed meanwhile follow this note, or they are lost.
function channelRecovered(name, recovered, result) {
  if (name !== channel.name) return;
  showPresence(name); // others may have come and gone meanwhile
  if (recovered) {
    const missed = result.offset - channel.latest;
    channelNote('success', missed > 0
      ? `Reconnected: ${missed} missed message${missed === 1 ? '' : 's'} recovered.`
      : 'Reconnected: no message was missed.');
    return;
  }
  Object.assign(channel, {shown: new Set(), latest: result.offset});
  channelNote('warning', 'Reconnected, but the messages published meanwhile could not be recovered.');
}

// Who is in the channel now: asked at each subscribe, then kept by the join and leave events.
async function showPresence(name) {
  let clients = {};
  let note = '';
  try {
    ({clients} = await client.presence(name));
  } catch (err) {
    note = err.code === 'not_available' ? `Presence is not turned on for ${name}.` : `${err.code}: ${err.message}`;
  }
  if (name !== channel.name) return;
  channel.members = new Map(Object.entries(clients));
  $('presence-state').textContent = note;
  $('presence-state').hidden = !note;
  showMembers();
}

function memberCame(name, info, joined) {
  if (name !== channel.name) return;
  if (joined) channel.members.set(info.client_id, {user: info.user, role: info.role});
  else channel.members.delete(info.client_id);
  showMembers();
  channelNote('info', `${info.user} (${info.client_id}) ${joined ? 'joined' : 'left'}.`);
}

function showMembers() {
  const me = state.info?.client_id;
  $('channel-members').replaceChildren(...[...channel.members].map(([id, {user, role}]) =>
    el('li', {className: id === me ? 'from-you' : '', title: `${id} (${role})`}, id === me ? `${user} (you)` : user)));
}

// The server took this page off a channel: for good (`server`), or it subscribes again at once
// (`insufficient_state`, after which channelRecovered says what was lost).
function channelTakenAway(name, reason) {
  if (name !== channel.name || reason === 'insufficient_state') return;
  channelNote('warning', `The server took this page off ${name}: it receives no more of its messages.`);
  Object.assign(channel, {name: null, members: new Map()});
  $('channel-state').textContent = `Unsubscribed from ${name} by the server.`;
  $('channel-text').disabled = $('publish').disabled = true;
  showMembers();
}

function channelNote(level, text) {
  addChannelLine(el('li', {className: `message level-${level}`}, text));
}

function addChannelLine(line) {
  const log = $('channel-log');
  log.append(line);
  log.scrollTop = log.scrollHeight;
}

// -- navigation ----------------------------------------------------------------------------

async function showBlock() {
  const here = state.trail.at(-1);
  const {zVaFile, blocks} = await client.request('discover');
  const block = blocks[here.zBlock] || {menu: [], commands: []};
  const commands = new Map(block.commands.map((command) => [bare(command.key), command]));
  const items = [...block.menu];
  if (state.trail.length > 1 && !items.some((item) => bare(item) === 'zBack')) items.push('zBack');
  $('menu-title').textContent = `Menu: ${here.zBlock}`;
  $('location').textContent = zVaFile;
  $('breadcrumb').replaceChildren(...state.trail.map((step, index) => el('li', {
    title: step.zVaFile, ariaCurrent: index === state.trail.length - 1 ? 'location' : null,
  }, step.zBlock)));
  $('menu').replaceChildren(...items.map((item) => {
    const name = bare(item);
    const command = commands.get(name) || (name === 'zBack' && state.trail.length > 1
      ? {key: 'zBack', kind: 'back', description: `Back to ${state.trail.at(-2).zBlock}`} : null);
    const button = el('button', {type: 'button'}, name);
    if (command) {
      if (command.description) button.title = command.description;
      button.dataset.kind = command.kind;
      button.addEventListener('click', () => run(command));
    } else {
      button.disabled = true;
      button.title = 'Not a command of this block';
    }
    return el('li', {}, button);
  }));
  showInfo();
}

// zLink adds the block it reached to the trail; zBack returns to the one before.
function moved(command, result) {
  if (command.kind === 'back' && state.trail.length > 1) state.trail.pop();
  else if (command.kind !== 'back') state.trail.push({});
  state.trail[state.trail.length - 1] = {zVaFile: result.zVaFile, zBlock: result.zBlock};
}

// Up and down arrows move through the menu's buttons (Tab still leaves it).
$('menu').addEventListener('keydown', (event) => {
  const step = {ArrowDown: 1, ArrowUp: -1}[event.key];
  if (!step) return;
  const buttons = [...$('menu').querySelectorAll('button:not(:disabled)')];
  const next = buttons[(buttons.indexOf(document.activeElement) + step + buttons.length) % buttons.length];
  next?.focus();
  event.preventDefault();
});

async function run(command) {
  const entry = addEntry(bare(command.key));
  try {
    if (command.kind === 'dialog') {
      await runDialog(command, entry);
      return;
    }
    const result = await client.dispatch(command.key, entry.callbacks);
    if (isPlainObject(result) && typeof result.zBlock === 'string' && Array.isArray(result.menu)) {
      entry.note(`Now in ${result.zBlock}`);
      moved(command, result);
      await showBlock();
      $('menu').querySelector('button:not(:disabled)')?.focus();
    } else {
      entry.result(result);
    }
  } catch (err) {
    entry.error(err);
  }
}

// -- forms ---------------------------------------------------------------------------------

// A zDialog command: its form (titled with its prompt) is sent as `data`; a rejection keeps
// the form open with what was typed and each field's problem. Without fields (introspect
// lists none) the server asks with an input_request, answered by the onInput hook.
async function runDialog(command, entry) {
  const {fields, prompt, description} = await client.request('introspect', {zKey: command.key});
  if (!fields || !fields.length) {
    entry.result(await client.dispatch(command.key, entry.callbacks));
    return;
  }
  const submitted = await openForm(prompt || description || bare(command.key), fields, async (values) => {
    entry.hide(secretsOf(fields, values));
    try {
      entry.result(await client.dispatch(command.key, {data: values, ...entry.callbacks}));
    } catch (err) {
      if (err.code === 'invalid_input' && err.details) return err.details;
      entry.error(err);
    }
    return null;
  });
  if (!submitted) entry.note('Cancelled');
}

// The values for an input_request (null when cancelled).
async function askForm(title, fields) {
  let values = null;
  await openForm(title, fields, (typed) => { values = typed; return null; });
  return values;
}

// -- results -------------------------------------------------------------------------------

function addEntry(title) {
  const heading = el('h3', {}, title);
  const body = el('div', {className: 'body'}, el('p', {className: 'muted running'}, 'Running…'));
  const item = el('li', {className: 'entry', ariaBusy: 'true'}, el('div', {className: 'entry-head'}, heading), body);
  $('results').prepend(item);
  $('no-results').hidden = true;
  let progress = null;
  let secrets = new Set();
  let cached = false;
  const finish = (status, ...content) => {
    item.ariaBusy = 'false';
    item.dataset.state = status;
    body.querySelector('p.running')?.remove();
    body.append(...content);
  };
  return {
    callbacks: {
      onProgress({current, total, label}) {
        if (!progress) {
          progress = {bar: el('progress'), text: el('span')};
          body.append(el('label', {className: 'progress'}, progress.text, progress.bar));
        }
        progress.bar.max = total || 1;
        progress.bar.value = current;
        progress.text.textContent = `${label || 'Progress'}: ${current}${total ? ` / ${total}` : ''}`;
      },
      onDisplay: (frame) => body.append(renderDisplay(frame.display_event, hidden(frame.data, secrets))),
      onReply: (frame) => { cached = frame._cached === true; },
    },
    hide: (values) => { secrets = values; },
    result(value) {
      const shown = hidden(value, secrets);
      if (cached) heading.append(el('span', {className: 'badge', title: 'Served from the query cache'}, 'cached'));
      item.querySelector('.entry-head').append(rawToggle(shown, item));
      finish('ok', renderResult(shown));
    },
    error(err) {
      const details = err.details
        ? el('ul', {}, ...Object.entries(err.details).map(([name, problem]) => el('li', {}, `${name}: ${problem}`)))
        : '';
      finish('error', el('p', {className: 'level-error'}, `${err.code}: ${err.message}`), details);
    },
    note: (text) => finish('ok', el('p', {}, text)),
  };
}

// A button showing the reply's JSON under the rendered result (and hiding it again).
function rawToggle(value, item) {
  const raw = el('pre', {className: 'raw', hidden: true}, JSON.stringify(value, null, 2));
  const button = el('button', {type: 'button', className: 'raw-toggle', ariaLabel: 'Raw JSON', title: 'Raw JSON',
    ariaExpanded: 'false'});
  button.addEventListener('click', () => {
    raw.hidden = !raw.hidden;
    button.ariaExpanded = String(!raw.hidden);
  });
  item.append(raw);
  return button;
}
