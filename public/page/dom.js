// dom.js: the page's small building blocks. Everything another user controls (names,
// messages, room names) is written with textContent, never parsed as HTML, and every name sits
// in a <bdi>, so a right-to-left name cannot reorder the text around it.

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A name someone chose, isolated so that its direction cannot spill into the text around it. */
export function nameNode(name) {
  return el('bdi', 'name', name);
}

/**
 * Text with names in it: parts are strings or `{ name }`, each name in its own <bdi>.
 * @returns {Node[]}
 */
export function withNames(parts) {
  return parts.map((part) => (typeof part === 'string' ? document.createTextNode(part) : nameNode(part.name)));
}

/** A name inside plain text that cannot hold elements (a tooltip): Unicode's own isolates. */
export function isolated(name) {
  return '\u2068' + name + '\u2069';
}

/** A message can be any JSON value; strings are shown as they are. */
export function messageText(message) {
  return typeof message === 'string' ? message : JSON.stringify(message);
}

/** A stable hue per id, so a person keeps the same colour in every tab. */
function hueOf(id) {
  let hash = 0;
  for (const ch of id) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return hash % 360;
}

export function avatar(person) {
  const node = el('span', 'avatar', (person.name.trim()[0] || '?').toUpperCase());
  node.style.setProperty('--hue', hueOf(person.id));
  node.setAttribute('aria-hidden', 'true');
  return node;
}

/** `1 recipient`, `2 recipients`. */
export function plural(n, one, many = one + 's') {
  return `${n} ${n === 1 ? one : many}`;
}
