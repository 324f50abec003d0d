/**
 * A progress bar for long runs, drawn on stdout only when it is a terminal:
 * piped output and `--json` stay free of control characters.
 */
import cliProgress from 'cli-progress';

export interface Bar {
  update(done: number, total: number, differences: number): void;
  stop(): void;
}

const NONE: Bar = { update: () => {}, stop: () => {} };

/** A bar that shows up once a run has taken `delayMs`, so that short runs print only their result. */
export function progressBar(enabled: boolean, label: string, delayMs = 1000): Bar {
  if (!enabled) return NONE;
  const started = Date.now();
  let bar: cliProgress.SingleBar | undefined;
  return {
    update(done, total, differences) {
      if (!bar && Date.now() - started < delayMs) return;
      if (!bar) {
        bar = new cliProgress.SingleBar(
          { format: `${label} |{bar}| {percentage}% {value}/{total} keys, {differences} differences`, stream: process.stdout, hideCursor: true },
          cliProgress.Presets.shades_classic,
        );
        bar.start(Math.max(total, done), done, { differences });
      }
      bar.setTotal(Math.max(total, done));
      bar.update(done, { differences });
    },
    stop() {
      bar?.stop();
    },
  };
}
