// demo.js: the demo page's behaviour. It connects back to the server that served the page,
// renders the client's current zUI block as a menu of buttons (from `discover`), runs a
// command on click and logs its result, error, progress and display output, asks for dialog
// values with a form, and follows zLink/zBack. A `?token=` in the page's URL is passed on.
import { BifrostClient } from '/bifrost.js';

const $ = (id) => document.getElementById(id);
const MESSAGE_LEVELS = new Set(['text', 'success', 'info', 'warning', 'error', 'header']);
const INPUT_TYPES = {string: 'text', int: 'number', float: 'number', bool: 'checkbox', email: 'email', password: 'password'};

const client = new BifrostClient(undefined, {
  token: new URLSearchParams(location.search).get('token') || undefined,
  hooks: {
    onConnected(info) {
      setStatus('connected', 'Connected');
      showInfo(info);
      showBlock(info.session.zBlock).catch(showFailure);
    },
    onDisconnected(closed) {
      lastTrouble = explainClose(closed);
      setStatus('down', lastTrouble);
    },
    onReconnecting: (attempt, delay) =>
      setStatus('down', `${lastTrouble} Retrying in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})…`),
    onServerShutdown: () => setStatus('down', 'The server is shutting down…'),
    onInput: (request) => askForm(request.prompt || 'The command needs input', request.fields),
  },
});

let lastTrouble = ''; // why the connection went down, in words, kept while retrying

client.connect().catch((err) => {
  if (err.closeCode === undefined) setStatus('down', `Could not connect: ${err.message}`); // else already said
});

// Why a connection closed, in words a user can act on (PROTOCOL.md sections 2 and 9).
function explainClose({code, reason, refusal}) {
  if (refusal?.status === 403) {
    return `The server refused this page (HTTP 403: ${refusal.reason}). ` +
      `Add ${location.origin} to the server's allowed_origins.`;
  }
  if (refusal) return `The server is unavailable (HTTP ${refusal.status}: ${refusal.reason}).`;
  if (code === 1008) {
    const hint = reason === 'Rate limit exceeded' ? '' : ' Open this page with ?token=<your token>.';
    return `The server refused the connection: ${reason || 'policy violation'}.${hint}`;
  }
  if (code === 1001) return 'The server shut down.';
  if (code === 1006) return 'The connection to the server was lost.';
  return `Disconnected (${code}${reason ? `: ${reason}` : ''}).`;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const bare = (key) => (key.startsWith('^') ? key.slice(1) : key);

function setStatus(state, text) {
  const status = $('status');
  status.dataset.state = state;
  status.textContent = text;
}

function showInfo(info) {
  const rows = [
    ['Server', `zbifrost ${info.server_version} (protocol ${info.protocol})`],
    ['Client id', info.client_id],
    ['User', `${info.auth.user} (${info.auth.role})`],
    ['Workspace', info.session.workspace],
    ['zVaFile', info.session.zVaFile],
    ['Features', info.features.join(', ')],
  ];
  $('info').replaceChildren(...rows.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, value)]));
}

function showFailure(err) {
  addEntry('Menu').error(err);
}

// -- the menu ----------------------------------------------------------------------------

async function showBlock(zBlock) {
  const {zVaFile, blocks} = await client.request('discover');
  const block = blocks[zBlock] || {menu: [], commands: []};
  const commands = new Map(block.commands.map((command) => [bare(command.key), command]));
  $('menu-title').textContent = `Menu: ${zBlock}`;
  $('location').textContent = `${zVaFile} › ${zBlock}`;
  $('menu').replaceChildren(...block.menu.map((item) => {
    const name = bare(item);
    const command = commands.get(name) || (name === 'zBack' ? {key: 'zBack', kind: 'back'} : null);
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
}

async function run(command) {
  const entry = addEntry(bare(command.key));
  try {
    const data = command.kind === 'dialog' ? await dialogValues(command) : undefined;
    if (data === null) {
      entry.note('Cancelled');
      return;
    }
    const result = await client.dispatch(command.key, {data, onProgress: entry.progress, onDisplay: entry.display});
    if (result && typeof result.zBlock === 'string' && Array.isArray(result.menu)) {
      entry.note(`Now in ${result.zBlock}`);
      await showBlock(result.zBlock);
    } else {
      entry.result(result);
    }
  } catch (err) {
    entry.error(err);
  }
}

// A dialog command's form values (null when cancelled), or undefined when introspect lists no
// fields: the server then asks with an input_request, answered by the onInput hook.
async function dialogValues(command) {
  const {fields, prompt, description} = await client.request('introspect', {zKey: command.key});
  return fields && fields.length ? askForm(prompt || description || bare(command.key), fields) : undefined;
}

// -- the dialog form ---------------------------------------------------------------------

function askForm(title, fields) {
  const dialog = $('dialog');
  const form = $('dialog-form');
  $('dialog-title').textContent = title;
  $('dialog-fields').replaceChildren(...fields.map(fieldRow));
  dialog.showModal();
  return new Promise((resolve) => {
    const finish = (value) => {
      form.onsubmit = dialog.onclose = $('dialog-cancel').onclick = null;
      dialog.close();
      resolve(value);
    };
    form.onsubmit = (event) => {
      event.preventDefault();
      finish(formValues(fields));
    };
    $('dialog-cancel').onclick = () => finish(null);
    dialog.onclose = () => finish(null);
  });
}

function fieldRow(field) {
  const input = el('input', {
    id: `field-${field.name}`, name: field.name, type: INPUT_TYPES[field.type] || 'text',
    required: Boolean(field.required) && field.type !== 'bool',
  });
  if (field.type === 'int') input.step = '1';
  if (field.type === 'float') input.step = 'any';
  if (input.type !== 'checkbox') { // min/max: a number's bounds, a text's length
    const [low, high] = input.type === 'number' ? ['min', 'max'] : ['minLength', 'maxLength'];
    if (field.min != null) input[low] = field.min;
    if (field.max != null) input[high] = field.max;
    if (field.pattern) input.pattern = field.pattern;
  }
  const label = el('label', {htmlFor: input.id}, field.label || field.name);
  return el('div', {className: `field field-${input.type}`}, label, input);
}

function formValues(fields) {
  const values = {};
  for (const field of fields) {
    const input = $(`field-${field.name}`);
    if (field.type === 'bool') values[field.name] = input.checked;
    else if (input.value === '') continue; // left empty: the server applies its rules
    else if (field.type === 'int') values[field.name] = Number.parseInt(input.value, 10);
    else if (field.type === 'float') values[field.name] = Number(input.value);
    else values[field.name] = input.value;
  }
  return values;
}

// -- the results log ---------------------------------------------------------------------

function addEntry(title) {
  const body = el('div', {className: 'body'}, el('p', {className: 'muted'}, 'Running…'));
  const item = el('li', {className: 'entry', ariaBusy: 'true'}, el('h3', {}, title), body);
  $('results').prepend(item);
  let progress = null;
  const finish = (state, ...content) => {
    item.ariaBusy = 'false';
    item.dataset.state = state;
    body.querySelector('p.muted')?.remove();
    body.append(...content);
  };
  return {
    progress({current, total, label}) {
      if (!progress) {
        progress = {bar: el('progress'), text: el('span')};
        body.append(el('label', {className: 'progress'}, progress.text, progress.bar));
      }
      progress.bar.max = total || 1;
      progress.bar.value = current;
      progress.text.textContent = `${label || 'Progress'}: ${current}${total ? ` / ${total}` : ''}`;
    },
    display: (frame) => body.append(render(frame.display_event, frame.data)),
    result: (value) => finish('ok', value && typeof value === 'object' && 'message' in value
      ? render(value.level || 'text', {content: value.message})
      : render(value && value.display_event, value && value.data, value)),
    error(err) {
      const details = err.details
        ? el('ul', {}, ...Object.entries(err.details).map(([name, problem]) => el('li', {}, `${name}: ${problem}`)))
        : '';
      finish('error', el('p', {className: 'level-error'}, `${err.code}: ${err.message}`), details);
    },
    note: (text) => finish('ok', el('p', {}, text)),
  };
}

// One piece of output: a message with a level, a list, a table, or JSON (`whole` when the
// value is not a display shape at all).
function render(event, data = {}, whole = data) {
  if (MESSAGE_LEVELS.has(event)) {
    const content = data.content ?? data.message;
    return typeof content === 'string'
      ? el(event === 'header' ? 'h4' : 'p', {className: `level-${event}`}, content)
      : json(content);
  }
  const rows = data.rows || data.items || Object.values(data).find(Array.isArray);
  if (event === 'list' && rows) return el('ul', {}, ...rows.map((item) => el('li', {}, text(item))));
  if (event === 'table' && rows) return table(rows, data.columns || data.headers);
  return json(event === 'json' ? data : whole);
}

function table(rows, columns) {
  const keys = columns || (rows[0] && typeof rows[0] === 'object' && !Array.isArray(rows[0]) ? Object.keys(rows[0]) : null);
  const cells = (row) => (Array.isArray(row) ? row : keys.map((key) => row[key]));
  return el('table', {},
    keys ? el('thead', {}, el('tr', {}, ...keys.map((key) => el('th', {scope: 'col'}, key)))) : '',
    el('tbody', {}, ...rows.map((row) => el('tr', {}, ...cells(row).map((cell) => el('td', {}, text(cell)))))));
}

const text = (value) => (typeof value === 'string' ? value : JSON.stringify(value));
const json = (value) => el('pre', {}, JSON.stringify(value, null, 2));
