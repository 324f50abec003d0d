/**
 * The code's dependencies point one way: cli -> features -> drain -> shared,
 * and nothing imports in a circle. Read from the sources' import statements,
 * so that a wrong import fails here before anyone has to untangle it.
 */
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const SOURCES = ['index.ts', 'producer', 'consumer', 'shared'];

function sourceFiles(entry: string): string[] {
  const full = path.join(root, entry);
  if (statSync(full).isFile()) return entry.endsWith('.ts') ? [entry] : [];
  return readdirSync(full).flatMap((name) => sourceFiles(path.join(entry, name)));
}

/** Every file each source file imports (relative imports, `import type` and re-exports included). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of SOURCES.flatMap(sourceFiles)) {
    const text = readFileSync(path.join(root, file), 'utf8');
    const targets = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?(?:from\s*)?['"](\.{1,2}\/[^'"]+)['"]/gm)].map((m) =>
      path.normalize(path.join(path.dirname(file), m[1])).replace(/\.js$/, '.ts'),
    );
    graph.set(file, targets);
  }
  return graph;
}

/** The consumer folder a file is in (`drain`, `cli`, ...), or its top-level folder elsewhere. */
function area(file: string): string {
  const parts = file.split(path.sep);
  return parts[0] === 'consumer' && parts.length > 2 ? `consumer/${parts[1]}` : parts.length > 1 ? parts[0] : file;
}

/** Strongly connected components with more than one member, or a member importing itself. */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const order = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    order.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!order.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, order.get(w)!));
      }
    }
    if (low.get(v) === order.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!order.has(v)) visit(v);
  return found;
}

const graph = importGraph();
const edges = [...graph].flatMap(([from, targets]) => targets.map((to) => ({ from, to })));

test('every relative import names a source file that exists', (t) => {
  const missing = edges.filter((e) => !graph.has(e.to)).map((e) => `${e.from} -> ${e.to}`);
  t.deepEqual(missing, []);
});

test('shared/ imports neither the producer nor the consumer, and the producer does not import the consumer', (t) => {
  const wrong = edges
    .filter((e) => (area(e.from) === 'shared' && area(e.to) !== 'shared') || (area(e.from) === 'producer' && area(e.to).startsWith('consumer')))
    .map((e) => `${e.from} -> ${e.to}`);
  t.deepEqual(wrong, []);
});

test('consumer/drain/ imports only itself and shared/: the drain loop knows no feature', (t) => {
  const wrong = edges
    .filter((e) => area(e.from) === 'consumer/drain' && !['consumer/drain', 'shared'].includes(area(e.to)))
    .map((e) => `${e.from} -> ${e.to}`);
  t.deepEqual(wrong, []);
});

test('no feature folder imports the CLI', (t) => {
  const wrong = edges.filter((e) => area(e.from) !== 'consumer/cli' && area(e.to) === 'consumer/cli').map((e) => `${e.from} -> ${e.to}`);
  t.deepEqual(wrong, []);
});

test('no import cycle, between files or between the consumer folders', (t) => {
  t.deepEqual(cycles(graph), [], 'files');
  const folders = new Map<string, string[]>();
  for (const { from, to } of edges) {
    const [a, b] = [area(from), area(to)];
    if (a !== b && a.startsWith('consumer/') && b.startsWith('consumer/')) folders.set(a, [...(folders.get(a) ?? []), b]);
  }
  t.deepEqual(cycles(folders), [], 'consumer folders');
});

test('the library entry qsync/consumer does not load the CLI', (t) => {
  const seen = new Set<string>();
  const walk = (f: string): void => {
    if (seen.has(f)) return;
    seen.add(f);
    for (const g of graph.get(f) ?? []) walk(g);
  };
  walk('consumer/index.ts');
  t.true(seen.size > 5, 'the walk follows the imports');
  t.deepEqual(
    [...seen].filter((f) => area(f) === 'consumer/cli'),
    [],
  );
});

test('consumer/ keeps at most a handful of files at its top level', (t) => {
  const top = readdirSync(path.join(root, 'consumer')).filter((name) => statSync(path.join(root, 'consumer', name)).isFile());
  t.true(top.length <= 5, top.join(', '));
});

test('script reply codes are named: no Lua script returns a bare negative code, no TypeScript compares with one', (t) => {
  const lua = readdirSync(path.join(root, 'shared/lua')).filter((f) => f.endsWith('.lua'));
  t.true(lua.length > 5, 'the scripts are found');
  const bare = lua.filter((f) => /return\s*\{?\s*-\d/.test(readFileSync(path.join(root, 'shared/lua', f), 'utf8')));
  t.deepEqual(bare, []);
  const compared = [...graph.keys()].filter((f) => /(===|!==)\s*-\d|\bcase\s+-\d/.test(readFileSync(path.join(root, f), 'utf8')));
  t.deepEqual(compared, []);
});
