// forms.js: the dialog of a zDialog command or an input_request: one input per field, the
// values typed (numbers as numbers, empty fields left out), each field's problem shown in place.
import { $, el } from '/render.js';

const INPUT_TYPES = {string: 'text', int: 'number', float: 'number', bool: 'checkbox', email: 'email', password: 'password'};

// Shows the form; `submit(values)` resolves with null to close it, or with the server's
// problems ({field: problem}) to keep it open with them. Resolves with whether it was submitted.
export function openForm(title, fields, submit) {
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
export function secretsOf(fields, values) {
  return new Set(fields.filter((field) => field.type === 'password' && values[field.name])
    .map((field) => values[field.name]));
}
