/**
 * `tiller` — the engine from a terminal: inspect a graph, check the steering edit, extract a direction (or
 * diff a fine-tune against its base), see the next-token distribution, generate text.
 * Same engine code as the browser app; models come from a folder, a single .onnx file, or a Hub id.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { renderANSI } from 'uqr';
import { checkSteering, openCheckPair } from '../src/engine/model/check.ts';
import { EMBEDDED_MODEL, EMBEDDED_MODELS_DIR, startAppServer } from './serve-files.ts';
import { type ContrastiveSet, extractDirections } from '../src/engine/directions/extract.ts';
import { type GenerateRequest, generate } from '../src/engine/generation/generate.ts';
import { type ControlVector, readControlVectorGguf, writeControlVectorGguf } from '../src/engine/directions/gguf.ts';
import { type LoadOptions, fusionOptionsFor, loadModel, openCheckedSession, prepareGraph, readModelGraph } from '../src/engine/model/load.ts';
import type { FusionOptions } from '../src/engine/onnx/fusion.ts';
import { selfCheck } from '../src/engine/model/self-check.ts';
import { type LensToken, directionLogitLens } from '../src/engine/inside/logit-lens.ts';
import { analyseGraph } from '../src/engine/onnx/analysis.ts';
import { parseModel, typeName } from '../src/engine/onnx/model.ts';
import type { Backend } from '../src/engine/model/runtime.ts';
import { HubSource } from '../src/engine/sources/hub.ts';
import { FolderSource } from '../src/engine/sources/node-folder.ts';
import { type ModelSource, ModelFileError } from '../src/engine/sources/source.ts';
import { type Dtype, parseDtype } from '../src/engine/sources/variants.ts';
import { type NextToken, nextTokens } from '../src/engine/generation/next-token.ts';
import { contrastiveSetOf, diffPromptsOf, presetById } from '../src/engine/directions/presets.ts';
import { type DiffRequest, diffModels, loadFineTune, vectorFileFromDiff } from '../src/engine/directions/model-diff.ts';
import { meterScaleOf, meterValue, textProjections } from '../src/engine/inside/projection.ts';
import { type FusionReport, type ModelConfig, type SteeringRow, SteerableModel } from '../src/engine/model/steerable-model.ts';
import { directionMultiplier, scaledDirection } from '../src/engine/directions/strength.ts';
import {
  type VectorDirection, type VectorFile, assertVectorFits, parseVectorFile, serializeVectorFile, vectorFileFromControlVector, vectorFileFromExtraction,
} from '../src/engine/directions/vector-file.ts';

const USAGE = `usage:
  tiller inspect <model> [--json] [--dtype D] [--no-fuse]
  tiller check <model> [--dtype D] [--no-fuse]
  tiller generate <model> --prompt TEXT [--chat] [--system TEXT] [--dtype D] [--max-new-tokens N]
                  [--temperature T] [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S]
                  [--vector FILE [--layer L] [--strength S | --ablate]]
  tiller extract <model> (--preset NAME | --positive FILE --negative FILE) [--method mean|pca]
                  [--mode last|mean|answer] --out FILE.json|FILE.gguf
  tiller diff <base> <fine-tune> (--preset NAME | --prompts FILE) [--mode mean|answer] --out FILE.json
                  the direction a fine-tune moved: its mean residual minus the base's, per layer
  tiller next <model> --prompt TEXT [--chat] [--vector FILE [--layer L] [--strength S]] [--top K] [--json]
  tiller lens <model> --vector FILE [--layer L] [--top K] [--json]     tokens the direction raises and lowers
  tiller meter <model> --vector FILE [--layer L] --text TEXT [--json]  the persona meter, token by token
  tiller serve [--models DIR] [--port N] [--host H] [--app DIR]   the built app (dist/) and a models folder, to the room

--strength is relative to the layer's typical residual length (1 adds a vector as long as a token's
residual; ±0.1–0.5 is the useful range) for vectors Tiller extracted; for GGUF control vectors, which
carry no residual norms, it multiplies the vector as llama.cpp does. --layer defaults to the file's
recommended layer. --positive/--negative files hold one text per line, or a JSON list of strings.
A diff file steers both models of its pair: --strength S on the base adds the diff (the table's "strength
of the diff" adds it as measured), a negative strength or --ablate on the fine-tune takes it away.
extract recommends the layer where steering moves the examples most (steerability), not the one that
separates them best, and prints the strengths that keep them coherent there.

Commands that load a model fuse torch-export attention and rotary into ONNX Runtime's MultiHeadAttention and
RotaryEmbedding (faster), used only where the logits match the graph as published; --no-fuse runs the graph
as published.

<model> is a model folder (Transformers.js layout), a Hub id (owner/name; --hub URL or TILLER_HUB_URL
sets the server), or, for inspect and check, a single .onnx file. Without it, the embedded stories260K.`;

class UsageError extends Error {}

/** The usage lines of one command (its line and the indented ones after it), or all of them. */
function usageOf(command: string | undefined): string {
  const lines = USAGE.split('\n');
  const start = lines.findIndex((line) => line.startsWith(`  tiller ${command} `));
  if (start < 0) return USAGE;
  let end = start + 1;
  while (lines[end]?.startsWith('       ')) end++;
  return `usage:\n${lines.slice(start, end).join('\n')}\n(tiller --help shows every command)`;
}

/** Set once the command is known, so an error prints only its usage. */
let currentCommand: string | undefined;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (COMMANDS.includes(command)) currentCommand = command;
  const { values, positionals } = parseFlags(rest);
  if (!command || values.help || command === 'help' || command === '--help' || command === '-h') {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  if (!COMMANDS.includes(command)) throw new UsageError(`unknown command "${command}"`);
  if (command === 'serve') return serve(values);
  // Options that only mean something beside another one are refused alone rather than silently ignored.
  if (values.system !== undefined && !values.chat) throw new UsageError('--system needs --chat (it is the chat system prompt)');
  for (const name of ['layer', 'strength', 'ablate'] as const) {
    if (values[name] !== undefined && !values.vector) throw new UsageError(`--${name} needs --vector FILE`);
  }
  let target = positionals[0];
  if (!target) {
    target = path.join(EMBEDDED_MODELS_DIR, EMBEDDED_MODEL);
    console.error(`note: no model named: using the embedded ${EMBEDDED_MODEL}`);
  }
  const dtype = values.dtype ? parseDtype(values.dtype) : undefined;
  const backend = values.backend ? parseBackend(values.backend) : 'wasm';

  switch (command) {
    case 'inspect': return inspect(target, dtype, values);
    case 'check': return check(target, dtype, backend, values);
    case 'generate': return generateCommand(target, dtype, backend, values);
    case 'extract': return extractCommand(target, dtype, backend, values);
    case 'diff': return diffCommand(target, positionals[1], dtype, backend, values);
    case 'next': return nextCommand(target, dtype, backend, values);
    case 'lens': return lensCommand(target, dtype, backend, values);
    case 'meter': return meterCommand(target, dtype, backend, values);
    default: throw new UsageError(`unknown command "${command}"`);
  }
}

type Flags = Record<string, string | boolean | undefined>;

const COMMANDS = ['inspect', 'check', 'generate', 'extract', 'diff', 'next', 'lens', 'meter', 'serve'];

const OPTIONS = {
  json: { type: 'boolean' },
  dtype: { type: 'string' },
  backend: { type: 'string' },
  hub: { type: 'string' },
  revision: { type: 'string' },
  prompt: { type: 'string' },
  chat: { type: 'boolean' },
  system: { type: 'string' },
  'max-new-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  seed: { type: 'string' },
  vector: { type: 'string' },
  layer: { type: 'string' },
  strength: { type: 'string' },
  ablate: { type: 'boolean' },
  'no-fuse': { type: 'boolean' },
  text: { type: 'string' },
  preset: { type: 'string' },
  positive: { type: 'string' },
  negative: { type: 'string' },
  method: { type: 'string' },
  mode: { type: 'string' },
  prompts: { type: 'string' },
  out: { type: 'string' },
  top: { type: 'string' },
  models: { type: 'string' },
  app: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** parseArgs, with its errors (unknown option, missing value …) reported as usage errors: exit 2 with the usage. */
function parseFlags(args: string[]) {
  // parseArgs reads "--strength -0.25" as two options; glue a negative number to the option before it.
  const glued = args.flatMap((arg, i) => (/^-[\d.]/.test(arg) && args[i - 1]?.startsWith('--') ? [] : [
    /^--/.test(arg) && /^-[\d.]/.test(args[i + 1] ?? '') ? `${arg}=${args[i + 1]}` : arg,
  ]));
  try {
    return parseArgs({ args: glued, allowPositionals: true, options: OPTIONS });
  } catch (error) {
    const unknown = /^Unknown option '--([^'=]+)'/.exec((error as Error).message)?.[1];
    if (!unknown) throw new UsageError((error as Error).message);
    const near = Object.keys(OPTIONS).map((name) => ({ name, distance: editDistance(name, unknown) }))
      .sort((a, b) => a.distance - b.distance).find((option) => option.distance <= 2)?.name;
    throw new UsageError(`unknown option --${unknown}${near ? `: did you mean --${near}?` : ''}`);
  }
}

/** Levenshtein distance, for "did you mean" on a mistyped flag. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = row;
  }
  return previous[b.length];
}

function parseBackend(value: string): Backend {
  if (value === 'webgpu') throw new UsageError('WebGPU runs in the browser app; in Node the engine runs on WASM (--backend wasm, the default)');
  if (value !== 'wasm') throw new UsageError(`--backend must be wasm, not "${value}"`);
  return value;
}

/** What each number flag accepts; a value outside is a usage error, never quietly replaced by a default. */
const NUMBER_FLAGS: Record<string, { integer?: boolean; min?: number; above?: number; max?: number; says: string }> = {
  temperature: { min: 0, says: 'a number ≥ 0 (0 is greedy)' },
  'top-k': { integer: true, min: 1, says: 'a whole number ≥ 1' },
  'top-p': { above: 0, max: 1, says: 'a number above 0, at most 1' },
  'repetition-penalty': { above: 0, says: 'a number above 0 (1 is none)' },
  seed: { integer: true, says: 'a whole number' },
  'max-new-tokens': { integer: true, min: 1, says: 'a whole number ≥ 1' },
  top: { integer: true, min: 1, says: 'a whole number ≥ 1' },
  layer: { integer: true, min: 0, says: 'a layer number ≥ 0' },
  port: { integer: true, min: 0, max: 65535, says: 'a port number from 0 to 65535' },
};

function number(flags: Flags, name: string): number | undefined {
  const value = flags[name];
  if (value === undefined) return undefined;
  const parsed = typeof value === 'string' && value.trim() !== '' ? Number(value) : Number.NaN;
  const rule = NUMBER_FLAGS[name];
  const fits = Number.isFinite(parsed) && (!rule || ((!rule.integer || Number.isInteger(parsed)) && (rule.min === undefined || parsed >= rule.min) &&
    (rule.above === undefined || parsed > rule.above) && (rule.max === undefined || parsed <= rule.max)));
  if (!fits) throw new UsageError(`--${name} must be ${rule?.says ?? 'a number'}, not "${value}"`);
  return parsed;
}

async function sourceFor(target: string, flags: Flags): Promise<ModelSource> {
  const info = await stat(target).catch(() => undefined);
  if (info?.isDirectory()) return new FolderSource(target);
  if (info) throw new UsageError(`${target} is a file: this command needs a model folder (with config.json and tokenizer.json) or a Hub id`);
  if (!/^[\w.-]+\/[\w.-]+$/.test(target)) throw new UsageError(`${target} is neither a folder nor a Hub id (owner/name)`);
  const baseUrl = (flags.hub as string | undefined) ?? process.env.TILLER_HUB_URL;
  return new HubSource(target, { baseUrl, revision: flags.revision as string | undefined });
}

/** The graph to inspect or check: a single .onnx file, or the variant a model folder / Hub id offers. */
async function openGraph(target: string, dtype: Dtype | undefined, flags: Flags) {
  const info = await stat(target).catch(() => undefined);
  if (info?.isFile()) {
    const bytes = new Uint8Array(await readFile(target));
    // The folder's own reader: locations that climb out of it (../../etc/passwd) or name a device are refused, as in folder mode.
    const folder = new FolderSource(path.dirname(target));
    const readExternal = (location: string) =>
      folder.readFile(location).catch((error: unknown) => {
        if (!(error instanceof ModelFileError && error.kind === 'missing')) throw error;
        throw new Error(`${path.join(folder.folder, location)} is missing: ${path.basename(target)} keeps its weights there, so it must sit beside the .onnx file`);
      });
    return { id: target, file: path.basename(target), bytes, readExternal, config: {} as ModelConfig };
  }
  const source = await sourceFor(target, flags);
  return { id: source.id, ...(await readModelGraph(source, { dtype, onProgress: progressPrinter() })) };
}

function progressPrinter() {
  if (!process.stderr.isTTY) return undefined;
  return (p: { file: string; loaded: number; total: number | undefined; done: boolean }) => {
    const total = p.total ? ` / ${(p.total / 1e6).toFixed(1)} MB` : '';
    process.stderr.write(`\r${p.file}: ${(p.loaded / 1e6).toFixed(1)} MB${total}${p.done ? '\n' : ''}`);
  };
}

async function inspect(target: string, dtype: Dtype | undefined, flags: Flags): Promise<number> {
  const graph = await openGraph(target, dtype, flags);
  const prepared = await prepareGraph(graph.bytes, graph.file, graph.readExternal, {
    numHiddenLayers: graph.config.num_hidden_layers, hiddenSize: graph.config.hidden_size,
  }, false, fusionFlag(graph.config, flags));
  const { analysis } = prepared;
  // The load-time fusion check and self-check, on an instrumented session of this graph.
  const modelOf = (session: SteerableModel['session']) =>
    new SteerableModel(graph.id, graph.file, session, analysis, prepared.instrumentation, undefined, graph.config, {}, 'wasm');
  const { session, report: fusion } = await openCheckedSession(prepared, 'wasm', modelOf);
  const model = modelOf(session);
  const verified = await selfCheck(model);
  await model.dispose();
  const report = {
    model: graph.id,
    file: graph.file,
    flavour: analysis.flavour,
    residualLayout: analysis.residualLayout,
    rowsRunSeparately: analysis.rowsCoupled ?? null,
    fusion,
    selfCheck: { ok: verified.ok, message: verified.message, milliseconds: Math.round(verified.milliseconds) },
    layerCount: analysis.layerCount,
    hiddenSize: analysis.hiddenSize,
    residualDtype: typeName(analysis.residualType),
    layers: analysis.layers.map((site) => ({
      layer: site.layer,
      residual: site.residual ?? null,
      materialised: Boolean(site.residual),
      producedBy: `${site.node.opType} ${site.node.name}`.trim(),
      steeredInput: site.node.inputs[site.branchInput],
      flattened: site.flattened,
      dtype: typeName(site.elemType),
    })),
    inputs: {
      inputIds: typeName(analysis.inputIds.elemType),
      attentionMask: Boolean(analysis.attentionMask),
      positionIds: Boolean(analysis.positionIds),
      numLogitsToKeep: Boolean(analysis.numLogitsToKeep),
    },
    kvCache: analysis.kv.map((entry) => ({ layer: entry.layer, key: entry.keyInput, value: entry.valueInput, dtype: typeName(entry.elemType), shape: entry.shape })),
    externalData: analysis.externalDataFiles,
  };
  if (flags.json) {
    console.log(JSON.stringify(report, null, 2));
    return 0;
  }
  console.log(`${report.model} (${report.file})`);
  console.log(`flavour      ${report.flavour === 'torch' ? 'torch (residual Adds)' : 'fused (Skip*LayerNormalization output 3)'}`);
  console.log(`layers       ${report.layerCount}`);
  console.log(`layout       ${report.residualLayout === 'parallel' ? 'parallel (x + attention + MLP: one residual addition a layer)' : 'sequential (attention, then MLP: two residual additions a layer)'}`);
  console.log(`hidden size  ${report.hiddenSize}`);
  console.log(`residual     ${report.residualDtype}`);
  console.log(`inputs       input_ids ${report.inputs.inputIds}${report.inputs.positionIds ? ', position_ids' : ''}${report.inputs.numLogitsToKeep ? ', num_logits_to_keep' : ''}`);
  console.log(`kv cache     ${analysis.kv.length} layers, ${report.kvCache[0].dtype} [${report.kvCache[0].shape.join(', ')}]`);
  if (report.externalData.length) console.log(`data files   ${report.externalData.join(', ')}`);
  console.log(`batch rows   ${report.rowsRunSeparately ? `run one at a time: ${report.rowsRunSeparately}` : 'independent (run together)'}`);
  console.log(`fused        ${describeFusion(fusion, Boolean(flags['no-fuse']))}`);
  console.log(`self-check   ${report.selfCheck.message} (${report.selfCheck.milliseconds} ms)`);
  console.log('residual after each layer:');
  for (const layer of report.layers) {
    const flattened = layer.flattened ? ' (a [batch·seq, hidden] view: steered per position)' : '';
    console.log(`  ${String(layer.layer).padStart(3)}  ${layer.residual ?? '(not materialised: Tiller adds residual + branch beside the final norm)'}  ← ${layer.producedBy}${flattened}`);
  }
  return verified.ok ? 0 : 1;
}

async function check(target: string, dtype: Dtype | undefined, backend: Backend, flags: Flags): Promise<number> {
  const graph = await openGraph(target, dtype, flags);
  const { analysis, fused, original: reference, instrumented } = await openCheckPair(
    graph.bytes, graph.file, graph.readExternal, backend, graph.config,
    { numHiddenLayers: graph.config.num_hidden_layers, hiddenSize: graph.config.hidden_size }, fusionFlag(graph.config, flags),
  );
  const report = await checkSteering(reference, instrumented);
  console.log(`${graph.id}: ${analysis.flavour} graph, ${analysis.layerCount} layers, ${typeName(analysis.residualType)} residual, ${backend}`);
  // Checked as the app runs it: fused where attention or rotary matched, against the graph as published.
  if (fused.length > 0) console.log(`fused: ${fused.join(', ')}`);
  console.log(`zero steering: largest logit difference ${report.zeroSteeringMaxDiff.toExponential(2)} (tolerance ${report.zeroSteeringTolerance.toExponential(2)}) ${report.zeroSteeringMaxDiff <= report.zeroSteeringTolerance ? 'ok' : 'FAIL'}`);
  for (const layer of report.layers) {
    console.log(`layer ${layer.layer}: steering by v moves the residual by v ± ${layer.maxError.toExponential(2)} (tolerance ${layer.tolerance.toExponential(2)}) ${layer.ok ? 'ok' : 'FAIL'}`);
  }
  console.log(report.ok ? 'check passed' : 'check FAILED');
  await reference.dispose();
  await instrumented.dispose();
  return report.ok ? 0 : 1;
}

/** A model as every command loads it: from its source flags, with progress on stderr, fused unless --no-fuse. */
async function loadFromFlags(target: string, dtype: Dtype | undefined, backend: Backend, flags: Flags, options: Pick<LoadOptions, 'ablation'> = {}) {
  return loadModel(await sourceFor(target, flags), { dtype, backend, onProgress: progressPrinter(), fuse: !flags['no-fuse'], ...options });
}

/** Fusion options for prepareGraph: none with --no-fuse. */
function fusionFlag(config: ModelConfig, flags: Flags): FusionOptions | undefined {
  return flags['no-fuse'] ? undefined : fusionOptionsFor(config);
}

function describeFusion(fusion: FusionReport, off: boolean): string {
  if (fusion.fellBack) return `nothing (${fusion.fellBack})`;
  if (fusion.applied.length === 0) return off ? 'nothing (--no-fuse)' : 'nothing (no pattern matched: the graph runs as published)';
  return `${fusion.applied.join(', ')} (logits as published within ${fusion.maxLogitError?.toExponential(1)})`;
}

/** The vector file named by --vector, read before the model so a bad file is refused before a long load. */
async function readVectorFlag(flags: Flags): Promise<VectorFile | ControlVector | undefined> {
  const file = flags.vector as string | undefined;
  if (!file) return undefined;
  const bytes = await readFile(file).catch(() => {
    throw new UsageError(`--vector ${file}: no such file`);
  });
  return file.endsWith('.gguf') ? readControlVectorGguf(new Uint8Array(bytes), file) : parseVectorFile(bytes.toString('utf8'), file);
}

/** The direction --vector/--layer name (the file's recommended layer by default), checked against the model. */
function directionFromFlags(vectors: VectorFile | ControlVector, model: SteerableModel, flags: Flags): VectorDirection {
  const file = 'format' in vectors ? vectors : vectorFileFromControlVector(vectors, model.info);
  assertVectorFits(file, model.info);
  const layers = file.directions.map((d) => d.layer).join(', ');
  const layer = number(flags, 'layer') ?? file.recommendedLayer ?? (file.directions.length === 1 ? file.directions[0].layer : undefined);
  if (layer === undefined) throw new UsageError(`${flags.vector} holds directions for layers ${layers}: choose one with --layer`);
  const direction = file.directions.find((d) => d.layer === layer);
  if (!direction) throw new UsageError(`${flags.vector} has no direction for layer ${layer} (it has ${layers})`);
  return direction;
}

/** One steering row from --vector/--layer/--strength (or --ablate), with the strength printed both ways. */
function steeringFromFlags(vectors: VectorFile | ControlVector | undefined, model: SteerableModel, flags: Flags): SteeringRow {
  if (!vectors) return [];
  const direction = directionFromFlags(vectors, model, flags);
  const layer = direction.layer;
  if (flags.ablate) {
    console.error(`ablating the direction at layer ${layer}: its component is removed from the residual`);
    return [{ layer, vector: direction.vector, operation: 'ablate' }];
  }
  const strength = number(flags, 'strength') ?? 0.25;
  const multiplier = directionMultiplier(strength, direction);
  console.error(direction.meanResidualNorm
    ? `steering layer ${layer}: strength ${strength} (relative to the residual norm ${direction.meanResidualNorm.toFixed(3)}) = ${multiplier.toFixed(4)} × the direction (norm ${direction.norm.toFixed(3)})`
    : `steering layer ${layer}: ${multiplier} × the control vector (norm ${direction.norm.toFixed(3)}; the file has no residual norms, so the strength is absolute)`);
  return [{ layer, vector: scaledDirection(direction.vector, multiplier) }];
}

function promptFromFlags(flags: Flags): Pick<GenerateRequest, 'prompt' | 'messages'> {
  const prompt = flags.prompt as string;
  if (!flags.chat) return { prompt };
  const system = typeof flags.system === 'string' ? [{ role: 'system', content: flags.system }] : [];
  return { messages: [...system, { role: 'user', content: prompt }] };
}

async function generateCommand(target: string, dtype: Dtype | undefined, backend: Backend, flags: Flags): Promise<number> {
  if (typeof flags.prompt !== 'string') throw new UsageError('generate needs --prompt TEXT (it may be empty: --prompt "")');
  const vectors = await readVectorFlag(flags);
  const model = await loadFromFlags(target, dtype, backend, flags, { ablation: Boolean(flags.ablate) });
  const result = await generate(model, {
    ...promptFromFlags(flags),
    maxNewTokens: number(flags, 'max-new-tokens') ?? 128,
    sampling: {
      temperature: number(flags, 'temperature') ?? 0,
      topK: number(flags, 'top-k'),
      topP: number(flags, 'top-p'),
      repetitionPenalty: number(flags, 'repetition-penalty'),
      seed: number(flags, 'seed') ?? 0,
    },
    rows: [steeringFromFlags(vectors, model, flags)],
  }, { onToken: (event) => process.stdout.write(event.text) });
  process.stdout.write('\n');
  if (result.truncatedPromptTokens) console.error(`note: the prompt was cut by ${result.truncatedPromptTokens} tokens to fit the ${model.contextLength}-token context`);
  console.error(`${result.rows[0].tokenIds.length} tokens, ${result.tokensPerSecond.toFixed(1)} tokens/s (${model.backend})`);
  await model.dispose();
  return 0;
}

async function nextCommand(target: string, dtype: Dtype | undefined, backend: Backend, flags: Flags): Promise<number> {
  if (typeof flags.prompt !== 'string') throw new UsageError('next needs --prompt TEXT');
  const vectors = await readVectorFlag(flags);
  const model = await loadFromFlags(target, dtype, backend, flags, { ablation: Boolean(flags.ablate) });
  const steering = steeringFromFlags(vectors, model, flags);
  const rows = steering.length > 0 ? [[], steering] : [[]];
  const [unsteered, steered] = await nextTokens(model, { ...promptFromFlags(flags), rows, top: number(flags, 'top') ?? 10 });
  if (flags.json) {
    console.log(JSON.stringify({ prompt: flags.prompt, unsteered, steered }, null, 1));
  } else {
    const show = (t: NextToken) => `${JSON.stringify(t.piece).padEnd(16)} p=${t.probability.toFixed(4)}  logit=${t.logit.toFixed(3)}`;
    console.log(steered ? `${'unsteered'.padEnd(44)}steered` : 'next token');
    unsteered.forEach((token, i) => console.log(`${show(token).padEnd(44)}${steered ? show(steered[i]) : ''}`));
  }
  await model.dispose();
  return 0;
}

/** The logit lens of a direction: the tokens it raises and lowers most through the final norm and LM head. */
async function lensCommand(target: string, dtype: Dtype | undefined, backend: Backend, flags: Flags): Promise<number> {
  const vectors = await readVectorFlag(flags);
  if (!vectors) throw new UsageError('lens needs --vector FILE');
  const model = await loadFromFlags(target, dtype, backend, flags);
  const direction = directionFromFlags(vectors, model, flags);
  const lens = await directionLogitLens(model, direction.vector, number(flags, 'top') ?? 12);
  if (flags.json) {
    console.log(JSON.stringify({ layer: direction.layer, ...lens }, null, 1));
  } else {
    const show = (t: LensToken) => `${JSON.stringify(t.piece).padEnd(16)} ${t.effect >= 0 ? '+' : ''}${t.effect.toFixed(3)}`;
    console.log(`${'raises (layer ' + direction.layer + ')'}`.padEnd(30) + 'lowers');
    lens.raised.forEach((token, i) => console.log(`${show(token).padEnd(30)}${show(lens.lowered[i])}`));
  }
  await model.dispose();
  return 0;
}

/** The persona meter on a text: each token's residual at the layer, on the direction (−1 … +1 between the examples' means). */
async function meterCommand(target: string, dtype: Dtype | undefined, backend: Backend, flags: Flags): Promise<number> {
  if (typeof flags.text !== 'string') throw new UsageError('meter needs --text TEXT');
  const vectors = await readVectorFlag(flags);
  if (!vectors) throw new UsageError('meter needs --vector FILE');
  const model = await loadFromFlags(target, dtype, backend, flags);
  const direction = directionFromFlags(vectors, model, flags);
  const tokens = await textProjections(model, { text: flags.text, layer: direction.layer, direction: direction.vector });
  const scale = direction.projections && meterScaleOf(direction.projections);
  const rows = tokens.map((t) => ({ text: t.text, projection: t.projection, meter: scale ? meterValue(t.projection, scale) : undefined }));
  if (flags.json) {
    console.log(JSON.stringify({ layer: direction.layer, tokens: rows }, null, 1));
  } else {
    for (const row of rows) console.log(`${JSON.stringify(row.text).padEnd(18)} ${row.meter === undefined ? `projection ${row.projection.toFixed(3)}` : `${row.meter >= 0 ? '+' : ''}${row.meter.toFixed(2)}`}`);
    const values = rows.map((r) => r.meter ?? r.projection);
    console.log(`mean ${(values.reduce((a, b) => a + b, 0) / values.length).toFixed(2)}${scale ? ' (+1: where the positive examples sat, −1: the negative ones)' : ' (raw projection: the file has no example projections)'}`);
  }
  await model.dispose();
  return 0;
}

async function extractCommand(target: string, dtype: Dtype | undefined, backend: Backend, flags: Flags): Promise<number> {
  const out = flags.out as string | undefined;
  if (!out || !/\.(json|gguf)$/.test(out)) throw new UsageError('extract needs --out FILE.json or --out FILE.gguf');
  const method = flags.method === undefined ? undefined : oneOf(flags, 'method', ['mean', 'pca'] as const);
  const mode = flags.mode === undefined ? undefined : oneOf(flags, 'mode', ['last', 'mean', 'answer'] as const);
  let set: ContrastiveSet;
  const preset = flags.preset as string | undefined;
  if (preset) set = contrastiveSetOf(presetById(preset));
  else if (flags.positive && flags.negative) set = { kind: 'texts', positive: await readTexts(flags.positive as string), negative: await readTexts(flags.negative as string) };
  else throw new UsageError('extract needs --preset NAME, or --positive FILE and --negative FILE');

  const model = await loadFromFlags(target, dtype, backend, flags);
  const started = performance.now();
  const extraction = await extractDirections(model, set, { method, mode }, {
    onProgress: (stage, done, total) => process.stderr.isTTY && process.stderr.write(`\r${stage} ${done}/${total}${done === total ? '\n' : ''}`),
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(`${model.id}: ${extraction.method} of ${extraction.mode === 'answer' ? 'answer tokens' : extraction.mode === 'last' ? 'last tokens' : 'token means'}, ` +
    `${extraction.positiveCount} + ${extraction.negativeCount} examples, scores held out over ${extraction.folds} folds, ${seconds.toFixed(1)} s`);
  const scores = extraction.steerability;
  console.log(`layer  ‖direction‖  residual norm  AUROC  separation (d′)  steerability (±${scores?.strength ?? 0.25})  perplexity ×`);
  for (const l of extraction.layers) {
    const scored = scores?.layers.find((s) => s.layer === l.layer);
    const steering = scored
      ? `${scored.steerability.toFixed(3).padStart(21)}  ${Math.max(scored.perplexityRatio.positive, scored.perplexityRatio.negative).toFixed(2).padStart(12)}`
      : `${'–'.padStart(21)}  ${'–'.padStart(12)}`;
    console.log(`${String(l.layer).padStart(5)}  ${l.norm.toFixed(4).padStart(11)}  ${l.meanResidualNorm.toFixed(3).padStart(13)}  ${l.auroc.toFixed(3)}  ${l.separation.toFixed(2).padStart(15)}  ${steering}${l.layer === extraction.recommendedLayer ? '  ← recommended' : ''}`);
  }
  console.log('steerability: how much more likely steering at +s makes the positive examples than −s does (nats per token); ' +
    'perplexity ×: the examples\' perplexity under the worse of ±s over unsteered');
  if (scores?.problem) console.log(`steerability not scored: ${scores.problem}; recommended by separation only`);
  else if (scores) console.log(`steerability pass ${(scores.milliseconds / 1000).toFixed(1)} s`);
  if (extraction.coherent) {
    console.log(extraction.coherent.strength > 0
      ? `coherent up to ±${extraction.coherent.strength} at layer ${extraction.coherent.layer} (perplexity within 1.5× of unsteered)`
      : `at layer ${extraction.coherent.layer} even ±0.05 raises perplexity over 1.5×: steer gently`);
  }
  for (const [side, answers] of Object.entries(extraction.sampleAnswers ?? {})) {
    for (const answer of answers) console.log(`${side} answer: ${JSON.stringify(answer)}`);
  }
  const file = vectorFileFromExtraction(extraction, model.info, preset);
  if (out.endsWith('.gguf')) {
    const exportable = file.directions.filter((d) => d.layer > 0);
    if (exportable.length < file.directions.length) console.error('note: layer 0 is left out of the GGUF file: llama.cpp cannot load a direction for block 0');
    await writeFile(out, writeControlVectorGguf({ modelHint: String(model.config.model_type ?? 'llama'), directions: exportable }));
  } else {
    await writeFile(out, serializeVectorFile(file));
  }
  console.log(`recommended layer ${extraction.recommendedLayer}; wrote ${out}`);
  await model.dispose();
  return 0;
}

/** Model diffing: the same prompts through a base and its fine-tune; per layer the mean residual difference. */
async function diffCommand(baseTarget: string, fineTuneTarget: string | undefined, dtype: Dtype | undefined, backend: Backend, flags: Flags): Promise<number> {
  if (!fineTuneTarget) throw new UsageError('diff needs two models: tiller diff <base> <fine-tune> …');
  const out = flags.out as string | undefined;
  if (!out || !out.endsWith('.json')) throw new UsageError('diff needs --out FILE.json');
  const mode = flags.mode === undefined ? undefined : oneOf(flags, 'mode', ['mean', 'answer'] as const);
  const preset = flags.preset as string | undefined;
  let prompts: DiffRequest['prompts'];
  if (preset) prompts = diffPromptsOf(presetById(preset));
  else if (flags.prompts) prompts = await readTexts(flags.prompts as string);
  else throw new UsageError('diff needs --preset NAME (its prompts) or --prompts FILE (neutral prompts, one a line or a JSON list)');

  const base = await loadFromFlags(baseTarget, dtype, backend, flags);
  const fineTune = await loadFineTune(base, await sourceFor(fineTuneTarget, flags), { dtype, onProgress: progressPrinter(), fuse: !flags['no-fuse'] });
  const started = performance.now();
  const extraction = await diffModels(base, fineTune, { prompts, mode }, {
    onProgress: (stage, done, total) => process.stderr.isTTY && process.stderr.write(`\r${stage} ${done}/${total}${done === total ? '\n' : ''}`),
  });
  console.log(`${fineTune.id} − ${base.id}: mean residual over ${extraction.mode === 'answer' ? "the fine-tune's answers" : 'prompt tokens'} of ${prompts.length} prompts, ` +
    `separation held out over ${extraction.folds} folds, ${((performance.now() - started) / 1000).toFixed(1)} s`);
  console.log('layer       ‖diff‖  residual norm  strength of the diff  AUROC  separation (d′)');
  for (const l of extraction.layers) {
    console.log(`${String(l.layer).padStart(5)}  ${l.norm.toFixed(4).padStart(11)}  ${l.meanResidualNorm.toFixed(3).padStart(13)}  ${(l.norm / l.meanResidualNorm).toFixed(3).padStart(20)}  ` +
      `${l.auroc.toFixed(3)}  ${l.separation.toFixed(2).padStart(15)}${l.layer === extraction.recommendedLayer ? '  ← most separated' : ''}`);
  }
  await writeFile(out, serializeVectorFile(vectorFileFromDiff(extraction, base.info, fineTune.info, prompts.length, preset)));
  console.log(`wrote ${out}`);
  await fineTune.dispose();
  await base.dispose();
  return 0;
}

/** Serves dist/ and a models folder (with cross-origin isolation) until stopped: laptops in the room
 *  download each model once from this machine instead of the internet. */
async function serve(flags: Flags): Promise<number> {
  const appDir = path.resolve((flags.app as string | undefined) ?? fileURLToPath(new URL('../dist', import.meta.url)));
  if (!(await stat(path.join(appDir, 'index.html')).catch(() => undefined))) {
    throw new Error(`the app is not built (${appDir} has no index.html): run npm run build first`);
  }
  const modelsDir = path.resolve((flags.models as string | undefined) ?? process.env.TILLER_MODELS_DIR ?? 'models');
  const port = number(flags, 'port') ?? 8080;
  const host = (flags.host as string | undefined) ?? '0.0.0.0';
  await startAppServer(appDir, modelsDir, port, host);
  const everywhere = host === '0.0.0.0' || host === '::';
  const lan = everywhere
    ? Object.values(os.networkInterfaces()).flat().filter((a) => a && a.family === 'IPv4' && !a.internal).map((a) => `http://${a!.address}:${port}/`)
    : [];
  console.log(`Tiller is served at http://${everywhere ? 'localhost' : host}:${port}/${lan.length ? ` and to the room at ${lan.join(', ')}` : ''}`);
  console.log(`models from ${modelsDir} (npm run models:fetch -- <hub id> adds one); Ctrl-C stops`);
  // The room's address as a QR code for phones (white and black backgrounds, right on light and dark terminals).
  const roomUrl = lan[0] ?? `http://${everywhere ? 'localhost' : host}:${port}/`;
  console.log(`\n${roomUrl}\n${renderANSI(roomUrl, { border: 2 })}`);
  return new Promise<number>(() => {});
}

function oneOf<T extends string>(flags: Flags, name: string, allowed: readonly T[]): T {
  const value = flags[name];
  if (typeof value !== 'string' || !allowed.includes(value as T)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, not "${value}"`);
  return value as T;
}

async function readTexts(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch(() => {
    throw new UsageError(`${file}: no such file`);
  });
  if (file.endsWith('.json')) {
    const list = JSON.parse(text);
    if (!Array.isArray(list) || !list.every((t) => typeof t === 'string')) throw new Error(`${file} must hold a JSON list of strings`);
    return list;
  }
  return text.split('\n').map((line) => line.trim()).filter(Boolean);
}

/** process.exit drops what a pipe has not taken yet (`tiller next --json | wc -c` stopped at 64 KiB): exit once both streams have flushed. */
function exitWhenFlushed(code: number): void {
  let open = 2;
  const flushed = () => --open === 0 && process.exit(code);
  process.stdout.write('', flushed);
  process.stderr.write('', flushed);
}

main(process.argv.slice(2)).then(
  exitWhenFlushed,
  (error: Error) => {
    console.error(`tiller: ${error.message}`);
    if (error instanceof UsageError) console.error(usageOf(currentCommand));
    exitWhenFlushed(error instanceof UsageError ? 2 : 1);
  },
);
