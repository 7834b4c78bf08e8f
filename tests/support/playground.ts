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
