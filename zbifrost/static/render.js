// render.js: the page's DOM helpers and a command's result rendered by its shape (messages
// with their level, zDisplay events, lists, tables, key/value lists), typed passwords masked.

export const $ = (id) => document.getElementById(id);
export const isPlainObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
const MESSAGE_LEVELS = new Set(['text', 'success', 'info', 'warning', 'error', 'header']);
const MASK = '••••••';
const MAX_DEPTH = 4; // nesting rendered as lists and tables; deeper values show as JSON

export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// A copy of a value with every typed password replaced by a mask.
export function hidden(value, secrets) {
  if (!secrets.size) return value;
  if (typeof value === 'string') return secrets.has(value) ? MASK : value;
  if (Array.isArray(value)) return value.map((item) => hidden(item, secrets));
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, hidden(v, secrets)]));
  return value;
}

// A command's result by its shape (docs/protocol.md section 5): a message with its level, a
// zDisplay event, or any JSON value as text, a list, a table or a key/value list (whose
// items are rendered the same way, a wizard's step results for instance).
export function renderResult(value, depth = 0) {
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

export function renderDisplay(event, data = {}) {
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
