/**
 * A plain SVG line chart, written by hand so the docs need no charting
 * dependency: series over time on one y axis, and vertical marks at moments.
 */

export interface Series {
  name: string;
  color: string;
  /** dashed, so that a series drawn over another one leaves it visible */
  dashed?: boolean;
  /** [x, y] points in the order drawn */
  points: [number, number][];
}

export interface Mark {
  label: string;
  x: number;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  marks: Mark[];
}

const W = 760;
const H = 380;
const PAD = { left: 80, right: 20, top: 56, bottom: 50 };

/** A round step giving about `count` ticks from 0 to `max`. */
function step(max: number, count = 6): number {
  const raw = max / count || 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fixed = (n: number) => Number(n.toFixed(1));

/** The chart as an SVG document. */
export function renderChart(chart: Chart): string {
  const xs = chart.series.flatMap((s) => s.points.map((p) => p[0])).concat(chart.marks.map((m) => m.x));
  const ys = chart.series.flatMap((s) => s.points.map((p) => p[1]));
  const xStep = step(Math.max(...xs));
  const yStep = step(Math.max(1, ...ys));
  const xMax = Math.ceil(Math.max(...xs) / xStep) * xStep;
  const yMax = Math.ceil(Math.max(1, ...ys) / yStep) * yStep;
  const px = (x: number) => fixed(PAD.left + (x / xMax) * (W - PAD.left - PAD.right));
  const py = (y: number) => fixed(H - PAD.bottom - (y / yMax) * (H - PAD.top - PAD.bottom));
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(chart.title)}</text>`,
  ];
  for (let y = 0; y <= yMax; y += yStep) {
    out.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`);
    out.push(`<text x="${PAD.left - 6}" y="${py(y) + 4}" text-anchor="end">${y.toLocaleString('en-US')}</text>`);
  }
  for (let x = 0; x <= xMax + 1e-9; x += xStep) {
    out.push(`<text x="${px(x)}" y="${H - PAD.bottom + 16}" text-anchor="middle">${fixed(x)}</text>`);
  }
  out.push(
    `<line x1="${PAD.left}" x2="${PAD.left}" y1="${PAD.top}" y2="${H - PAD.bottom}" stroke="black"/>`,
    `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${H - PAD.bottom}" y2="${H - PAD.bottom}" stroke="black"/>`,
    `<text x="${(PAD.left + W - PAD.right) / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(chart.xLabel)}</text>`,
    `<text transform="translate(18 ${(PAD.top + H - PAD.bottom) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(chart.yLabel)}</text>`,
  );
  // Labels one below the other, so that close marks stay readable.
  chart.marks.forEach((m, i) => {
    out.push(`<line x1="${px(m.x)}" x2="${px(m.x)}" y1="${PAD.top}" y2="${H - PAD.bottom}" stroke="#888" stroke-dasharray="4 3"/>`);
    out.push(`<text x="${px(m.x) + 3}" y="${PAD.top + 12 + i * 14}" fill="#555">${escapeXml(m.label)}</text>`);
  });
  chart.series.forEach((s, i) => {
    const path = s.points.map(([x, y]) => `${px(x)},${py(y)}`).join(' ');
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${path}"/>`);
    // The legend sits in a row between the title and the plot.
    const lx = PAD.left + i * 260;
    out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${PAD.top - 18}" y2="${PAD.top - 18}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${lx + 26}" y="${PAD.top - 14}">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>', '');
  return out.join('\n');
}
