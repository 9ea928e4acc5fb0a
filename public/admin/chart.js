// Small line charts in SVG: each series a polyline over a fixed window of samples, scaled to
// the largest value shown. Colours come from CSS classes (no inline styles under the CSP).

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 300;
const HEIGHT = 100;

function svgElement(name, attributes) {
  const element = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

export class Chart {
  // `series`: the class names of the lines, in order; `window`: samples kept.
  constructor(svg, series, window) {
    this.svg = svg;
    this.window = window;
    this.samples = series.map(() => []);
    svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.append(svgElement('line', { class: 'axis', x1: 0, y1: HEIGHT, x2: WIDTH, y2: HEIGHT }));
    this.lines = series.map((name) => {
      const line = svgElement('polyline', { class: `line ${name}`, points: '' });
      svg.append(line);
      return line;
    });
    this.label = svgElement('text', { class: 'label', x: 2, y: 10 });
    svg.append(this.label);
  }

  // One sample per series (null: no value this time).
  push(values) {
    values.forEach((value, i) => {
      const samples = this.samples[i];
      samples.push(value);
      if (samples.length > this.window) samples.shift();
    });
    this.draw();
  }

  draw() {
    const known = this.samples.flat().filter((v) => v !== null && Number.isFinite(v));
    const top = Math.max(1, ...known);
    const step = WIDTH / (this.window - 1);
    this.samples.forEach((samples, i) => {
      // The newest sample sits at the right edge.
      const offset = this.window - samples.length;
      const points = [];
      samples.forEach((value, k) => {
        if (value === null || !Number.isFinite(value)) return;
        const x = (offset + k) * step;
        const y = HEIGHT - (value / top) * (HEIGHT - 14);
        points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      });
      this.lines[i].setAttribute('points', points.join(' '));
    });
    this.label.textContent = `max ${formatNumber(top)}`;
  }
}

export function formatNumber(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  if (Number.isInteger(value)) return value.toLocaleString('en');
  return value.toLocaleString('en', { maximumFractionDigits: 1 });
}
