#!/usr/bin/env node
// The one test command: type checks, Node unit tests (Vitest), browser tests (Playwright in Chromium).
// Prints the closing line "N passed, N failed": the sum of what each runner reported in its JSON report.
// The browser tests take TILLER_TEST_PORT, else 4179, else (taken: a shared machine) any free port.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { freePort } from './free-port.mjs';

const wanted = Number(process.env.TILLER_TEST_PORT ?? 4179);
const port = await freePort(wanted);
if (port !== wanted) console.log(`port ${wanted} is taken: the browser tests use ${port}`);
const env = { ...process.env, TILLER_TEST_PORT: String(port) };
// The report playwright.config.ts writes for this port.
const playwrightReport = `.reports/playwright-${port}.json`;

mkdirSync('.reports', { recursive: true });
for (const report of ['.reports/vitest.json', playwrightReport]) rmSync(report, { force: true });

const run = (label, command, args) => {
  console.log(`\n=== ${label}: ${command} ${args.join(' ')}`);
  return spawnSync(command, args, { stdio: 'inherit', env }).status ?? 1;
};

let passed = 0;
let failed = 0;
const results = [];

const typecheck = run('type check', 'npx', ['tsc', '--noEmit', '-p', 'tsconfig.json']);
const svelteCheck = run('svelte check', 'npx', ['svelte-check', '--tsconfig', './tsconfig.json', '--threshold', 'error', '--output', 'human']);
for (const [name, status] of [['tsc', typecheck], ['svelte-check', svelteCheck]]) {
  if (status === 0) passed++;
  else failed++;
  results.push(`${name}: ${status === 0 ? 'ok' : 'FAILED'}`);
}

const unit = run('unit tests (Node, WASM)', 'npx', ['vitest', 'run', '--reporter=default', '--reporter=json', '--outputFile=.reports/vitest.json']);
if (existsSync('.reports/vitest.json')) {
  const report = JSON.parse(readFileSync('.reports/vitest.json', 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests + (report.numTotalTestSuites && !report.success && report.numFailedTests === 0 ? 1 : 0);
  results.push(`vitest: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests + report.numTodoTests} skipped`);
} else {
  failed++;
  results.push(`vitest: no report (exit ${unit})`);
}

const browser = run(`browser tests (Chromium: WASM and WebGPU, port ${port})`, 'npx', ['playwright', 'test']);
if (existsSync(playwrightReport)) {
  const stats = JSON.parse(readFileSync(playwrightReport, 'utf8')).stats;
  passed += stats.expected + stats.flaky;
  failed += stats.unexpected;
  results.push(`playwright: ${stats.expected} passed, ${stats.unexpected} failed, ${stats.flaky} flaky, ${stats.skipped} skipped`);
  if (stats.unexpected === 0 && browser !== 0) {
    failed++;
    results.push(`playwright exited ${browser}`);
  }
} else {
  failed++;
  results.push(`playwright: no report (exit ${browser})`);
}

console.log(`\n${results.join('\n')}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
