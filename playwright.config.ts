import { defineConfig } from '@playwright/test';
import path from 'node:path';
import { testBuildDir } from './tests/support/paths.ts';

const sharedModels = process.env.TILLER_SHARED_MODELS ?? path.resolve('../shared/models');
// Parallel runs (several people or agents on one machine) pick their own port, build folder and report
// (`npm test` picks a free port by itself). The build goes outside the project, so that writing it does
// not reload a dev server's page that is open on this checkout.
const port = Number(process.env.TILLER_TEST_PORT ?? 4179);
const outDir = testBuildDir(port);
const report = process.env.TILLER_TEST_PORT ? `.reports/playwright-${port}.json` : '.reports/playwright.json';

export default defineConfig({
  testDir: 'tests/browser',
  timeout: 180_000,
  workers: 1,
  reporter: [['list'], ['json', { outputFile: report }]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--enable-unsafe-webgpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    },
  },
  webServer: {
    command: `npx vite build --outDir ${outDir} --emptyOutDir && npx vite preview --outDir ${outDir} --port ${port} --strictPort --host 127.0.0.1`,
    url: `http://127.0.0.1:${port}`,
    timeout: 180_000,
    reuseExistingServer: false,
    env: { TILLER_MODELS_DIR: sharedModels },
  },
});
