/**
 * The monitoring files in ops/ against what a consumer really serves: every
 * metric the Prometheus alerts and the Grafana dashboard query is one a
 * running `qsync consume --metrics-port` declares on /metrics, so that a
 * renamed metric cannot leave an alert that never fires or an empty panel.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { createProducer } from '../producer/index.js';
import { spawnCli } from './support/cli.js';
import { startPair, waitForDrain } from './support/fixtures.js';
import { eventually } from './support/wait.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const read = (path: string) => readFileSync(`${ROOT}${path}`, 'utf8');

/** Series Prometheus makes itself for every scrape target. */
const PROMETHEUS_SERIES = new Set(['up']);

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/**
 * The metric names a PromQL expression selects: its identifiers, once label
 * matchers, ranges, strings, groupings and function calls are set aside.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  return [...bare.matchAll(/(?<![\w$.:])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()/g)].map((m) => m[1]).filter((w) => !PROMQL_WORDS.has(w.toLowerCase()));
}

interface AlertRule {
  alert: string;
  expr: string;
  severity?: string;
  summary?: string;
}

/**
 * The rules of ops/prometheus/alerts.yml, read line by line: the file keeps
 * one rule per `- alert:` item with its `expr:` on one line (checked here).
 */
function alertRules(text: string): AlertRule[] {
  const blocks = text.split(/^\s*- alert: /m).slice(1);
  return blocks.map((block) => {
    const field = (name: string) =>
      new RegExp(`^\\s*${name}: (.+)$`, 'm')
        .exec(block)?.[1]
        .trim()
        .replace(/^"(.*)"$/, '$1');
    const alert = block.split('\n')[0].trim();
    const expr = field('expr');
    if (!expr || /^[|>]/.test(expr)) throw new Error(`alert ${alert}: expr missing or not on one line`);
    return { alert, expr, severity: field('severity'), summary: field('summary') };
  });
}

interface Panel {
  title?: string;
  type: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

/** Every query of the dashboard: panel targets and template variables (`label_values(metric, label)`). */
function dashboardQueries(dashboard: {
  panels: Panel[];
  templating: { list: { query: { query: string } | string }[] };
}): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      for (const target of p.targets ?? []) if (target.expr) out.push({ where: `panel '${p.title}'`, expr: target.expr });
      walk(p.panels ?? []);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating.list) {
    const query = typeof v.query === 'string' ? v.query : v.query.query;
    const m = /^label_values\((.+),\s*\w+\)$/.exec(query);
    if (!m) throw new Error(`template query '${query}' is not label_values(metric, label)`);
    out.push({ where: 'template variable', expr: m[1] });
  }
  return out;
}

/** Names of the series a /metrics text declares: each `# TYPE`, with a histogram's and a summary's own series. */
function servedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix);
    if (type === 'summary') for (const suffix of ['_sum', '_count']) names.add(name + suffix);
  }
  return names;
}

test('the metric-name reader finds the metrics of an expression and nothing else', (t) => {
  t.deepEqual(
    metricNames('histogram_quantile(0.99, sum by (queue, le) (rate(qsync_batch_apply_seconds_bucket{queue=~"$queue"}[$__rate_interval])))'),
    ['qsync_batch_apply_seconds_bucket'],
  );
  t.deepEqual(metricNames('max by (queue) (qsync_state{state="resync-needed"}) == 1 or max by (queue) (qsync_queue_state{state="a or b"}) == 1'), [
    'qsync_state',
    'qsync_queue_state',
  ]);
  t.deepEqual(metricNames('time() - max by (queue) (qsync_verify_last_run_timestamp_seconds) > 1e3'), ['qsync_verify_last_run_timestamp_seconds']);
});

test('every metric the alert rules and the dashboard query is one a consumer serves', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const cli = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--metrics-port', '0', '--lease-ms', '1000']);
  t.teardown(() => cli.kill('SIGKILL'));
  const { port } = await cli.waitForLog((l) => typeof l.port === 'number', 15_000, 'the metrics port');
  await createProducer(pair.master.client()).incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());
  const served = servedNames(await (await fetch(`http://127.0.0.1:${port as number}/metrics`)).text());
  t.true(served.has('qsync_queue_depth') && served.has('process_cpu_seconds_total'), [...served].join(' '));

  const rules = alertRules(read('ops/prometheus/alerts.yml'));
  const dashboard = dashboardQueries(JSON.parse(read('ops/grafana/dashboards/qsync.json')));
  const queries = [...rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })), ...dashboard];
  const unknown = queries.flatMap(({ where, expr }) =>
    metricNames(expr)
      .filter((name) => !served.has(name) && !PROMETHEUS_SERIES.has(name))
      .map((name) => `${where}: ${name}`),
  );
  t.deepEqual(unknown, []);

  // What the alerts and the dashboard are for, each with something to say.
  for (const rule of rules) {
    t.true(metricNames(rule.expr).length > 0, rule.alert);
    t.true(rule.severity === 'critical' || rule.severity === 'warning', `${rule.alert}: severity ${rule.severity}`);
    t.truthy(rule.summary, `${rule.alert}: summary`);
  }
  const alerted = rules.map((r) => r.expr).join('\n');
  const charted = dashboard.map((q) => q.expr).join('\n');
  for (const what of [
    'qsync_queue_depth',
    'qsync_lag_entries',
    'qsync_oldest_entry_age_seconds',
    'qsync_dead_letters',
    'state="halted"',
    'state="resync-needed"',
  ]) {
    t.true(alerted.includes(what), `an alert on ${what}`);
    t.true(charted.includes(what), `a panel of ${what}`);
  }
});

test('the monitoring profile of compose.yaml mounts the files in ops/ where Prometheus and Grafana read them', (t) => {
  const compose = read('compose.yaml');
  const mounts = [...compose.matchAll(/^\s*- \.\/(ops\/[^:\s]+):([^:\s]+)(?::ro)?$/gm)].map(([, from, to]) => ({ from, to }));
  t.deepEqual(mounts.map((m) => m.from).sort(), [
    'ops/grafana/dashboards',
    'ops/grafana/provisioning',
    'ops/prometheus/alerts.yml',
    'ops/prometheus/prometheus.yml',
  ]);
  for (const { from } of mounts) t.true(existsSync(`${ROOT}${from}`), from);

  const prometheus = read('ops/prometheus/prometheus.yml');
  const rulesAt = mounts.find((m) => m.from === 'ops/prometheus/alerts.yml')!.to;
  const ruleGlob = /rule_files:\s*\n\s*- (\S+)/.exec(prometheus)![1];
  t.regex(rulesAt, new RegExp(`^${ruleGlob.replace(/\./g, '\\.').replace('*', '[^/]+')}$`), 'the alerts are mounted where rule_files looks');
  t.regex(compose, /QSYNC_METRICS_PORT: "9464"/);
  t.regex(prometheus, /port: 9464/, 'Prometheus scrapes the port the consumer serves');

  const provider = read('ops/grafana/provisioning/dashboards/qsync.yml');
  const dashboardsAt = mounts.find((m) => m.from === 'ops/grafana/dashboards')!.to;
  t.regex(provider, new RegExp(`path: ${dashboardsAt}$`, 'm'), 'Grafana loads the dashboards from where they are mounted');
  const datasource = /uid: (\S+)/.exec(read('ops/grafana/provisioning/datasources/prometheus.yml'))![1];
  const dashboard = read('ops/grafana/dashboards/qsync.json');
  const uids = new Set([...dashboard.matchAll(/"uid": "([^"]+)"/g)].map((m) => m[1]));
  uids.delete('qsync'); // the dashboard's own
  t.deepEqual([...uids], [datasource], 'every panel queries the provisioned Prometheus');
});

/** The consumer's compose health check: the `>-` block after CMD-SHELL, its lines folded into one as YAML does. */
function composeHealthCheck(compose: string): string {
  const m = /^( *)- CMD-SHELL\n\1- >-\n((?:\1 {2}.+\n)+)/m.exec(compose);
  if (!m) throw new Error('no CMD-SHELL health check with a >- block in compose.yaml');
  return m[2]
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
}

/** Runs a shell command from the checkout's root, as the image runs it from /app, and resolves with its exit code. */
function shell(command: string, env: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    execFile('sh', ['-c', command], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 15_000 }, (err) => {
      resolve(err ? Number((err as { code?: unknown }).code ?? 1) : 0);
    });
  });
}

test('the compose health check of the consumer passes while it streams, fails once it halts, and passes again once the cause is gone', async (t) => {
  const command = composeHealthCheck(read('compose.yaml'));
  t.regex(command, /^node bin\/qsync\.js status --json \| /);
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const cli = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--lease-ms', '1000']);
  t.teardown(() => cli.kill('SIGKILL'));
  const master = pair.master.client();
  await createProducer(pair.master.client()).incr('n');
  await waitForDrain(master, pair.replica.client());
  const env = { QSYNC_MASTER: pair.master.url };
  await eventually(async () => (await shell(command, env)) === 0, 15_000, 'healthy while streaming or idle');

  await master.rpush('qsync:default:log', Buffer.from([0xc1, 0xff]));
  await eventually(async () => (await shell(command, env)) === 1, 15_000, 'unhealthy once halted');
  await master.lrem('qsync:default:log', 1, Buffer.from([0xc1, 0xff]));
  await eventually(async () => (await shell(command, env)) === 0, 20_000, 'healthy again');
  t.is(await shell(command, { QSYNC_MASTER: 'redis://127.0.0.1:1' }), 1, 'unhealthy when the master cannot be reached');
});
