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
// plus the form of a zDialog command, which stays open with each field's problem when the
// server rejects it. A `?token=` in the page's URL is passed on. A new panel (presence, ...)
// adds its own section to index.html and its own block of code here.
import { BifrostClient } from '/bifrost.js';

const $ = (id) => document.getElementById(id);
const MESSAGE_LEVELS = new Set(['text', 'success', 'info', 'warning', 'error', 'header']);
const INPUT_TYPES = {string: 'text', int: 'number', float: 'number', bool: 'checkbox', email: 'email', password: 'password'};
const MASK = '••••••';
const MAX_DEPTH = 4; // nesting rendered as lists and tables; deeper values show as JSON

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

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const bare = (key) => (key.startsWith('^') ? key.slice(1) : key);
const isPlainObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

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

// Shows the form; `submit(values)` resolves with null to close it, or with the server's
// problems ({field: problem}) to keep it open with them. Resolves with whether it was submitted.
function openForm(title, fields, submit) {
  const dialog = $('dialog');
  const form = $('dialog-form');
  $('dialog-title').textContent = title;
  $('dialog-fields').replaceChildren(...fields.map(fieldRow));
  showProblems(fields, {});
  dialog.showModal();
  return new Promise((resolve) => {
    const finish = (submitted) => {
      form.onsubmit = dialog.onclose = $('dialog-cancel').onclick = null;
      dialog.close();
      resolve(submitted);
    };
    form.onsubmit = async (event) => {
      event.preventDefault();
      $('dialog-submit').disabled = true;
      try {
        const problems = await submit(formValues(fields));
        if (problems) showProblems(fields, problems);
        else finish(true);
      } finally {
        $('dialog-submit').disabled = false;
      }
    };
    $('dialog-cancel').onclick = () => finish(false);
    dialog.onclose = () => finish(false);
  });
}

function fieldRow(field) {
  const input = el('input', {
    id: `field-${field.name}`, name: field.name, type: INPUT_TYPES[field.type] || 'text',
    required: Boolean(field.required) && field.type !== 'bool',
  });
  if (field.type === 'int') input.step = '1';
  if (field.type === 'float') input.step = 'any';
  if (field.type === 'password') input.autocomplete = 'new-password';
  if (field.type === 'email') input.autocomplete = 'email';
  if (input.type === 'number') { // the server checks every bound; these are hints
    if (field.min != null) input.min = field.min;
    if (field.max != null) input.max = field.max;
  }
  const optional = field.required || field.type === 'bool' ? '' : ' (optional)';
  const label = el('label', {htmlFor: input.id}, field.label || field.name, el('span', {className: 'muted'}, optional));
  const problem = el('p', {id: `problem-${field.name}`, className: 'field-problem', hidden: true});
  return el('div', {className: `field field-${input.type}`}, label, input, problem);
}

// Marks each field with its problem (and lists the ones that name no field); the first
// marked field gets the focus.
function showProblems(fields, problems) {
  const names = new Set(fields.map((field) => field.name));
  for (const name of names) {
    const input = $(`field-${name}`);
    const problem = $(`problem-${name}`);
    const text = problems[name];
    problem.textContent = text || '';
    problem.hidden = !text;
    if (text) {
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', problem.id);
    } else {
      input.removeAttribute('aria-invalid');
      input.removeAttribute('aria-describedby');
    }
  }
  const others = Object.entries(problems).filter(([name]) => !names.has(name));
  $('dialog-errors').replaceChildren(...others.map(([name, text]) => el('li', {}, `${name}: ${text}`)));
  $('dialog-errors').hidden = !others.length;
  $('dialog-fields').querySelector('[aria-invalid="true"]')?.focus();
}

function formValues(fields) {
  const values = {};
  for (const field of fields) {
    const input = $(`field-${field.name}`);
    if (field.type === 'bool') values[field.name] = input.checked;
    else if (input.value === '') continue; // left empty: the server applies its rules
    else if (field.type === 'int' && /^-?\d+$/.test(input.value)) values[field.name] = Number.parseInt(input.value, 10);
    else if (field.type === 'float' && Number.isFinite(Number(input.value))) values[field.name] = Number(input.value);
    else values[field.name] = input.value; // the server says what is wrong with it
  }
  return values;
}

// The typed passwords of a form: never shown again, not even inside a result.
function secretsOf(fields, values) {
  return new Set(fields.filter((field) => field.type === 'password' && values[field.name])
    .map((field) => values[field.name]));
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

// A copy of a value with every typed password replaced by a mask.
function hidden(value, secrets) {
  if (!secrets.size) return value;
  if (typeof value === 'string') return secrets.has(value) ? MASK : value;
  if (Array.isArray(value)) return value.map((item) => hidden(item, secrets));
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, hidden(v, secrets)]));
  return value;
}

// A command's result by its shape (docs/protocol.md section 5): a message with its level, a
// zDisplay event, or any JSON value as text, a list, a table or a key/value list (whose
// items are rendered the same way, a wizard's step results for instance).
function renderResult(value, depth = 0) {
  if (isPlainObject(value) && typeof value.message === 'string') {
    const {message, level, ...rest} = value;
    const shown = messageLine(MESSAGE_LEVELS.has(level) ? level : 'text', message);
    return Object.keys(rest).length ? el('div', {}, shown, renderValue(rest, depth)) : shown;
  }
  if (isPlainObject(value) && typeof value.display_event === 'string' && isPlainObject(value.data)) {
    return renderDisplay(value.display_event, value.data);
  }
  return renderValue(value, depth);
}

function renderDisplay(event, data = {}) {
  if (MESSAGE_LEVELS.has(event)) {
    const content = data.content ?? data.message;
    return typeof content === 'string' ? messageLine(event, content) : renderValue(content);
  }
  const rows = data.rows || data.items || Object.values(data).find(Array.isArray);
  if (event === 'list' && rows) return el('ul', {className: 'list'}, ...rows.map((item) => el('li', {}, renderValue(item, 1))));
  if (event === 'table' && rows) return table(rows, data.columns || data.headers);
  return json(event === 'json' && 'value' in data ? data.value : data);
}

function messageLine(level, text) {
  return el(level === 'header' ? 'h4' : 'p', {className: `message level-${level}`}, text);
}

function renderValue(value, depth = 0) {
  if (value === null || value === undefined) return el('p', {className: 'muted'}, 'No result');
  if (typeof value !== 'object') return el('p', {className: 'scalar'}, String(value));
  if (depth >= MAX_DEPTH) return json(value);
  if (Array.isArray(value)) {
    if (!value.length) return el('p', {className: 'muted'}, 'Empty list');
    if (value.every(isPlainObject)) return table(value);
    return el('ul', {className: 'list'}, ...value.map((item) => el('li', {}, renderResult(item, depth + 1))));
  }
  const entries = Object.entries(value);
  if (!entries.length) return el('p', {className: 'muted'}, 'Empty');
  return el('dl', {className: 'kv'}, ...entries.flatMap(([key, item]) =>
    [el('dt', {}, key), el('dd', {}, renderResult(item, depth + 1))]));
}

function table(rows, columns) {
  const keys = columns || (rows.every(isPlainObject) ? [...new Set(rows.flatMap(Object.keys))] : null);
  const cells = (row) => (Array.isArray(row) ? row : keys ? keys.map((key) => row[key]) : [row]);
  return el('div', {className: 'table-wrap'}, el('table', {},
    keys ? el('thead', {}, el('tr', {}, ...keys.map((key) => el('th', {scope: 'col'}, key)))) : '',
    el('tbody', {}, ...rows.map((row) => el('tr', {}, ...cells(row).map((cell) => el('td', {}, text(cell))))))));
}

const text = (value) => (value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value));
const json = (value) => el('pre', {}, JSON.stringify(value, null, 2));
