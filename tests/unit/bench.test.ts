import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// Speed is judged in `npm run bench`, never here: this only checks that the quick run works end to end.
it('npm run bench -- --quick runs and writes its JSON report', async () => {
  const started = Date.now();
  const output = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['node_modules/tsx/dist/cli.mjs', 'scripts/bench.ts', '--quick'], { cwd: root, timeout: 120_000 },
      (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout)));
  });
  expect(output).toMatch(/ratio \(target ≥ 0\.97\)/);
  const file = path.join(root, '.reports/bench.json');
  expect(statSync(file).mtimeMs).toBeGreaterThanOrEqual(started - 1000);
  const report = JSON.parse(readFileSync(file, 'utf8'));
  expect(report.quick).toBe(true);
  expect(report.results.map((r: { model: string }) => r.model)).toEqual(['stories260K-hf', 'tiny-random-llama-builder-fp16']);
  for (const result of report.results) {
    expect(result.tokensPerSecond.unmodified).toBeGreaterThan(0);
    expect(result.steeringOverheadRatio).toBeGreaterThan(0);
    expect(result.load.instrumented.handedMb).toBeGreaterThan(0);
  }
});
