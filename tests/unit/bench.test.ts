import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { checkSteering, openCheckPair } from '../../src/engine/model/check.ts';
import { LLAMA, syntheticDecoder } from '../support/synthetic-decoder.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// Speed is judged in `npm run bench`, never here: this only checks that the quick run works end to end.
it('npm run bench -- --quick runs and writes its JSON report', async () => {
  const started = Date.now();
  const output = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['node_modules/tsx/dist/cli.mjs', 'scripts/bench.ts', '--quick'], { cwd: root, timeout: 120_000 },
      (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout)));
  });
  expect(output).toMatch(/steered \/ plain tok\/s \(≥ 0\.97\)/);
  expect(output).toMatch(/Tiller \/ Transformers\.js tok\/s \(≥ 1\.1\)/);
  const file = path.join(root, '.reports/bench.json');
  expect(statSync(file).mtimeMs).toBeGreaterThanOrEqual(started - 1000);
  const report = JSON.parse(readFileSync(file, 'utf8'));
  expect(report.quick).toBe(true);
  expect(report.results.map((r: { model: string }) => r.model)).toEqual(['stories260K-hf', 'tiny-random-llama-builder-fp16']);
  for (const result of report.results) {
    const node = result.backends['node-wasm'];
    expect(node.steering.tokensPerSecond.unmodified).toBeGreaterThan(0);
    expect(node.steering.ratio).toBeGreaterThan(0);
    expect(node.againstTransformersJs.sameTokens).toBe(true);
    expect(node.batchedStrengths.rows.map((r: { rows: number }) => r.rows)).toEqual([1, 2, 4, 8]);
    expect(node.capture.batched).toBeGreaterThan(0);
    expect(node.steerability.steerabilitySeconds).toBeGreaterThan(0);
    expect(node.steerability.extractionSeconds).toBeGreaterThan(0);
    expect(result.load.instrumented.handedMb).toBeGreaterThan(0);
  }
});

// The bench's SmolLM2-shaped models, small: the engine must account for both export flavours and steer them exactly.
const SMALL = { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, vocab: 256, maxPositions: 64 };
const openPair = (model: ReturnType<typeof syntheticDecoder>) =>
  openCheckPair(model.graph, model.file.split('/').pop()!, async () => model.externalData!.data, 'wasm', model.config);

it.each([['torch', 'float'], ['builder', 'float'], ['torch', 'q4'], ['builder', 'q4']] as const)('a synthetic %s-flavour decoder (%s weights) is analysed, instrumented and steered exactly', async (flavour, weights) => {
  const shape = SMALL;
  const model = syntheticDecoder(shape, flavour, 1, LLAMA, weights);
  const readExternal = async (location: string) => {
    expect(location).toBe(model.externalData?.path);
    return model.externalData!.data;
  };
  const { original, instrumented, analysis } = await openCheckPair(model.graph, model.file.split('/').pop()!, readExternal, 'wasm', model.config);
  expect(analysis.flavour).toBe(flavour === 'torch' ? 'torch' : 'fused');
  expect(analysis.layerCount).toBe(2);
  const report = await checkSteering(original, instrumented);
  expect(report.ok).toBe(true);
  await original.dispose();
  await instrumented.dispose();
});

// MatMulNBits read as packed here: the q4 graph's logits are those of plain MatMuls holding the decoded weights.
it.each(['torch', 'builder'] as const)('the q4 %s-flavour decoder computes with the 4-bit weights it was given', async (flavour) => {
  const q4 = await openPair(syntheticDecoder(SMALL, flavour, 1, LLAMA, 'q4'));
  const reference = await openPair(syntheticDecoder(SMALL, flavour, 1, LLAMA, 'q4-dequantized'));
  const tokens = [[1, 17, 42, 99, 7, 200]];
  const quantised = (await q4.original.forward({ tokens, logits: 'all' })).logits!;
  const plain = (await reference.original.forward({ tokens, logits: 'all' })).logits!;
  const float = (await (await openPair(syntheticDecoder(SMALL, flavour, 1, LLAMA, 'float'))).original.forward({ tokens, logits: 'all' })).logits!;
  let worst = 0;
  let largest = 0;
  let quantisationError = 0;
  for (let i = 0; i < plain.length; i++) {
    worst = Math.max(worst, Math.abs(quantised[i] - plain[i]));
    largest = Math.max(largest, Math.abs(plain[i]));
    quantisationError = Math.max(quantisationError, Math.abs(float[i] - plain[i]));
  }
  expect(worst).toBeLessThan((flavour === 'torch' ? 1e-4 : 1e-2) * (1 + largest));
  // …and the 4-bit weights are not the float ones: the comparison above can tell them apart.
  expect(quantisationError).toBeGreaterThan(10 * worst);
});
