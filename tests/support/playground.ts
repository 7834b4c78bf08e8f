import { type Page, expect } from '@playwright/test';

/** Helpers the browser tests share: the generations area and loading a model from the app's models/. */
export const generations = (page: Page) => page.getByTestId('generations');

export async function finishedRuns(page: Page): Promise<number> {
  return Number(await generations(page).getAttribute('data-finished'));
}

/** Picks a local model folder and backend, loads it, and waits for its summary. */
export async function loadLocalModel(page: Page, name: string, backend: 'wasm' | 'webgpu', layers: number) {
  await expect(page.getByRole('option', { name })).toBeAttached({ timeout: 20_000 });
  await page.getByRole('combobox', { name: 'Model' }).selectOption(name);
  await page.getByRole('combobox', { name: 'Backend' }).selectOption(backend);
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect(page.getByTestId('model-info')).toContainText(`${name}: ${layers} layers`, { timeout: 60_000 });
  await expect(page.getByTestId('model-info')).toContainText(backend);
}

/** Opens "Other Hub models", points it at a test Hub and a repository, and presses Load (WASM). */
export async function loadHubRepo(page: Page, baseUrl: string, repo: string) {
  await page.getByRole('combobox', { name: 'Backend' }).selectOption('wasm');
  await page.getByText('Other Hub models').click();
  await page.getByLabel('Hub base URL').fill(baseUrl);
  await page.getByLabel('Hub id').fill(repo);
  await page.getByRole('button', { name: 'Load model' }).click();
}

/** A direction with its steerability pass: seconds on WASM, about a minute on the software WebGPU adapter
 *  of a 2-core machine (65 s measured on stories260K-hf), more when the machine is busy. */
export const COMPUTE_MS = 240_000;

/** Presses Compute direction and waits until the Strength slider can be used; returns the slider. */
export async function computeDirection(page: Page) {
  await page.getByRole('button', { name: 'Compute direction' }).click();
  const strength = page.getByRole('slider', { name: 'Strength' });
  await expect(strength).toBeEnabled({ timeout: COMPUTE_MS });
  return strength;
}
