/**
 * Downloads a model from the Hub (or a server laid out like it) into models/<name>/, so the app can load it
 * offline, e.g. in a workshop:
 *
 *   npm run models:fetch -- HuggingFaceTB/SmolLM2-135M-Instruct --dtype q4
 *
 * It fetches what the engine reads — config.json, generation_config.json, tokenizer files, chat_template.jinja
 * (the optional ones may be missing), onnx/<variant>.onnx and the external data files that graph names —
 * through the engine's own HubSource, so it sees the same files, errors and progress as the app.
 * Each file is written to a temporary name and renamed when complete: an interrupted download leaves no
 * half-written file behind.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { externalDataFiles, parseModel } from '../src/engine/onnx/model.ts';
import { HubSource } from '../src/engine/sources/hub.ts';
import { DATA_FILE_NAME, type FileProgress, checkRelativePath } from '../src/engine/sources/source.ts';
import { type Dtype, DTYPES, onnxFileForDtype, parseDtype, pickDtype } from '../src/engine/sources/variants.ts';

const USAGE = `usage: npm run models:fetch -- <hub id> [--dtype D[,D…]] [--hub URL] [--revision R] [--out DIR]

  <hub id>      a Hub repository with Transformers.js ONNX files, e.g. HuggingFaceTB/SmolLM2-135M-Instruct
  --dtype       variant(s) to download: ${DTYPES.join(', ')}; several separated by commas
                (default: the dtype in the model's config.json, else fp32)
  --hub         Hub base URL (default $TILLER_HUB_URL or https://huggingface.co)
  --revision    branch, tag or commit (default main)
  --out         folder to write (default models/<name>, or $TILLER_MODELS_DIR/<name>)`;

/** Files beside onnx/ that the engine reads; only config.json must exist. */
const REQUIRED = ['config.json'];
const OPTIONAL = ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'];

class UsageError extends Error {}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** One status line per file: rewritten in place on a terminal, printed once when done otherwise. */
function progressPrinter() {
  const tty = process.stderr.isTTY === true;
  let lastWidth = 0;
  return (p: FileProgress) => {
    const amount = p.total ? `${formatBytes(p.loaded)} / ${formatBytes(p.total)} (${Math.floor((100 * p.loaded) / p.total)}%)` : formatBytes(p.loaded);
    const line = `  ${p.file}  ${amount}`;
    if (tty) {
      process.stderr.write(`\r${line.padEnd(lastWidth)}${p.done ? '\n' : ''}`);
      lastWidth = p.done ? 0 : line.length;
    } else if (p.done) {
      process.stderr.write(`${line}\n`);
    }
  };
}

function parse(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        dtype: { type: 'string' },
        hub: { type: 'string' },
        revision: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return undefined;
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length === 0 ? 'name the Hub repository to download' : `one repository at a time, not ${positionals.join(' ')}`);
  }
  let dtypes: Dtype[] | undefined;
  if (values.dtype !== undefined) {
    try {
      dtypes = [...new Set(values.dtype.split(',').filter((d) => d.trim() !== '').map(parseDtype))];
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    if (dtypes.length === 0) throw new UsageError('--dtype is empty');
  }
  const repo = positionals[0];
  const name = repo.split('/').pop() ?? repo;
  const out = path.resolve(values.out ?? path.join(process.env.TILLER_MODELS_DIR ?? path.join(repoRoot, 'models'), name));
  const baseUrl = values.hub ?? process.env.TILLER_HUB_URL ?? 'https://huggingface.co';
  return { repo, dtypes, out, baseUrl, revision: values.revision };
}

async function main(argv: string[]): Promise<void> {
  const options = parse(argv);
  if (!options) {
    console.log(USAGE);
    return;
  }
  const { repo, out, baseUrl } = options;
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  const { signal } = controller;
  // Throws a clear error for ids that are not owner/name and for base URLs that are not http(s).
  const source = new HubSource(repo, { baseUrl, revision: options.revision });
  const progress = progressPrinter();

  const save = async (file: string, bytes: Uint8Array) => {
    const target = path.join(out, ...checkRelativePath(file));
    await mkdir(path.dirname(target), { recursive: true });
    const partial = `${target}.part`;
    try {
      await writeFile(partial, bytes);
      await rename(partial, target);
    } catch (error) {
      await rm(partial, { force: true });
      throw new Error(`could not write ${target}: ${(error as Error).message}`);
    }
  };

  console.error(`Downloading ${repo}${options.revision ? ` (revision ${options.revision})` : ''} from ${baseUrl} into ${out}`);
  let total = 0;
  const written: string[] = [];
  const fetchTo = async (file: string, optional: boolean): Promise<Uint8Array | undefined> => {
    const bytes = optional ? await source.readOptionalFile(file, progress, signal) : await source.readFile(file, progress, signal);
    if (!bytes) {
      console.error(`  ${file}  (not in the repository; optional)`);
      return undefined;
    }
    await save(file, bytes);
    total += bytes.length;
    written.push(file);
    return bytes;
  };

  let config: unknown;
  for (const file of REQUIRED) {
    const bytes = (await fetchTo(file, false))!;
    try {
      config = JSON.parse(new TextDecoder().decode(bytes));
    } catch (error) {
      throw new Error(`${file} of ${repo} is not JSON (${(error as Error).message}): is this a Transformers.js model repository?`);
    }
  }
  for (const file of OPTIONAL) await fetchTo(file, true);
  if (!written.includes('tokenizer.json')) console.error(`  warning: ${repo} has no tokenizer.json; the app cannot tokenise prompts for it`);

  const dtypes = options.dtypes ?? [pickDtype(undefined, config)];
  for (const dtype of dtypes) {
    const graphFile = onnxFileForDtype(dtype);
    let graph: Uint8Array;
    try {
      graph = (await fetchTo(graphFile, false))!;
    } catch (error) {
      const message = (error as Error).message;
      throw new Error(options.dtypes
        ? `${message} (the ${dtype} variant); try another --dtype: ${DTYPES.filter((d) => d !== dtype).join(', ')}`
        : `${message}. The ${dtype} variant was chosen from config.json; pick one the repository has with --dtype (${DTYPES.join(', ')})`);
    }
    const folder = graphFile.slice(0, graphFile.lastIndexOf('/') + 1);
    for (const location of externalDataFiles(parseModel(graph, graphFile))) {
      const dataFile = folder + location;
      if (written.includes(dataFile)) continue; // variants can share one data file
      if (!DATA_FILE_NAME.test(location)) {
        throw new Error(`${graphFile} names "${location}" as its external data, which is not a model data file name ` +
          '(expected e.g. model.onnx_data or model.onnx.data): refusing to save it where the app serves models');
      }
      try {
        await fetchTo(dataFile, false);
      } catch (error) {
        throw new Error(`${graphFile} keeps its weights in ${dataFile}: ${(error as Error).message}`);
      }
    }
  }
  console.error(`Done: ${written.length} files, ${formatBytes(total)} in ${out}`);
  console.log(out);
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`models:fetch: ${error.message}\n${USAGE}`);
      process.exit(2);
    }
    console.error(`models:fetch: ${(error as Error).message ?? String(error)}`);
    process.exit(1);
  },
);
