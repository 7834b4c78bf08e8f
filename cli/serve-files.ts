/**
 * HTTP for the app and its models, shared by Vite's dev/preview servers and `tiller serve`:
 * `/models/index.json` lists the model folders (those with a config.json), their onnx/ files (so the
 * engine can pick a variant) and whether they are chat models; `/models/<name>/<path>` serves their files; everything else is the built app.
 * The models folder comes first; the embedded default model (public/models/, tracked in the repository) is
 * always listed after it, so a fresh clone has one model with no network.
 * Every answer carries cross-origin isolation headers, which multi-threaded WASM needs.
 *
 * The server is open to a whole room (and to any page a learner opens), so no request may end the
 * process: every request ends in an answer (400 for a URL that does not parse, 500 for a read error),
 * a download the client abandons closes its file, and files under models/ are served as data only.
 */
import { open, readFile, readdir, realpath, stat } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
} as const;

/** The app's Content-Security-Policy, sent as a header as well as index.html's meta tag (a test keeps them equal). */
export const APP_CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self' http: https:; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'none'";

const APP_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.css': 'text/css',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** Model files are data: never a type a browser would run or render (an `evil.svg` among the weights stays bytes). */
const MODEL_TYPES: Record<string, string> = {
  '.json': 'application/json',
  '.jinja': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};
const MODEL_HEADERS = {
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
  // Even a browser that renders the file anyway gets no script, no plugins and no origin.
  'Content-Security-Policy': "default-src 'none'; sandbox",
} as const;

/** The request's path, decoded; undefined when the URL or its escapes do not parse. */
function requestPath(req: IncomingMessage): string | undefined {
  try {
    return decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
  } catch {
    return undefined;
  }
}

function answer(res: ServerResponse, status: number, text: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(text);
}

/**
 * Sends one file below `root` (already a real path), or returns false for 404. Refuses any path whose
 * real path leaves `root` (`..`, or a symlink out of the folder). The file is opened before the answer
 * starts, so a read error (EMFILE, EACCES) becomes a 500; the stream is destroyed when the client goes away.
 */
async function sendFile(res: ServerResponse, root: string, relative: string, types: Record<string, string>): Promise<boolean> {
  const inside = (file: string) => file.startsWith(root + path.sep);
  const asked = path.resolve(root, relative);
  if (!inside(asked)) return false;
  const file = await realpath(asked).catch(() => undefined);
  // Only regular files: opening a FIFO would block a thread until something writes to it.
  if (!file || !inside(file) || !(await stat(file).catch(() => undefined))?.isFile()) return false;
  const handle = await open(file, 'r');
  let size: number;
  let modified: Date;
  try {
    const info = await handle.stat();
    if (!info.isFile()) {
      await handle.close();
      return false;
    }
    size = info.size;
    modified = info.mtime;
  } catch (error) {
    await handle.close();
    throw error;
  }
  if (res.destroyed) {
    await handle.close();
    return true;
  }
  res.setHeader('Content-Length', String(size));
  // With the size, what the page's cache compares to notice a replaced model file.
  res.setHeader('Last-Modified', modified.toUTCString());
  res.setHeader('Content-Type', types[path.extname(file).toLowerCase()] ?? 'application/octet-stream');
  const stream = handle.createReadStream(); // closes the handle when it ends or is destroyed
  stream.on('error', () => answer(res, 500, `could not read ${relative}`));
  res.on('close', () => stream.destroy());
  stream.pipe(res);
  return true;
}

/** The models that ship with the repository (and with the built app, as public/ is copied into it). */
export const EMBEDDED_MODELS_DIR = fileURLToPath(new URL('../public/models', import.meta.url));
/** The default model of the app and the CLI, a folder of EMBEDDED_MODELS_DIR. */
export const EMBEDDED_MODEL = 'stories260K';

/** The model folders with a config.json under `root`, their onnx/ files and whether they are chat models. */
async function listModels(root: string): Promise<{ name: string; onnx: string[]; chat: boolean }[]> {
  const names = await readdir(root).catch(() => [] as string[]);
  const models = [];
  for (const name of names.sort()) {
    if (!(await stat(path.join(root, name, 'config.json')).catch(() => undefined))) continue;
    const onnx = await readdir(path.join(root, name, 'onnx')).catch(() => [] as string[]);
    // Whether it is a chat model, so the page can pre-select a fitting preset before loading it.
    const tokenizerConfig = await readFile(path.join(root, name, 'tokenizer_config.json'), 'utf8').catch(() => '');
    const chat = tokenizerConfig.includes('"chat_template"') || Boolean(await stat(path.join(root, name, 'chat_template.jinja')).catch(() => undefined));
    models.push({ name, onnx: onnx.sort(), chat });
  }
  return models;
}

/** The first of `roots` that has model `name` (a folder with a config.json). */
async function findRoot(roots: string[], name: string): Promise<string | undefined> {
  for (const root of roots) if (await stat(path.join(root, name, 'config.json')).catch(() => undefined)) return root;
  return undefined;
}

/** Handles `/models/…` from `modelsDir`, then the embedded models; calls `next` for anything else. Never rejects. */
export function modelsHandler(modelsDir: string) {
  const folders = [...new Set([path.resolve(modelsDir), EMBEDDED_MODELS_DIR])];
  return async (req: IncomingMessage, res: ServerResponse, next: () => void): Promise<void> => {
    const pathname = requestPath(req);
    if (pathname === undefined) return answer(res, 400, 'bad request: the URL does not parse');
    if (!pathname.startsWith('/models/')) return next();
    const relative = pathname.slice('/models/'.length);
    for (const [name, value] of Object.entries(MODEL_HEADERS)) res.setHeader(name, value);
    try {
      const roots = await Promise.all(folders.map((folder) => realpath(folder).catch(() => folder)));
      if (relative === 'index.json') {
        // The models folder first; a model of the same name there hides the embedded one.
        const models: { name: string; onnx: string[]; chat: boolean; embedded?: true }[] = [];
        for (const [i, root] of roots.entries()) {
          for (const model of await listModels(root)) {
            if (!models.some((m) => m.name === model.name)) models.push({ ...model, ...(folders[i] === EMBEDDED_MODELS_DIR ? { embedded: true as const } : {}) });
          }
        }
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ models }));
        return;
      }
      const name = relative.split('/')[0];
      const root = (await findRoot(roots, name)) ?? roots[0];
      if (!(await sendFile(res, root, relative, MODEL_TYPES))) answer(res, 404, `no such model file: ${relative}`);
    } catch (error) {
      answer(res, 500, `could not read ${relative}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
}

/** The built app from `appDir` and models from `modelsDir`, on one port. */
export function startAppServer(appDir: string, modelsDir: string, port: number, host: string): Promise<Server> {
  const folder = path.resolve(appDir);
  const models = modelsHandler(modelsDir);
  const server = createServer((req, res) => {
    for (const [name, value] of Object.entries(ISOLATION_HEADERS)) res.setHeader(name, value);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    void models(req, res, async () => {
      const pathname = requestPath(req) ?? '/';
      const relative = pathname === '/' ? 'index.html' : pathname.slice(1);
      // For pages only: a worker script's own header would become the worker's policy, which the app never had.
      if (relative.endsWith('.html')) res.setHeader('Content-Security-Policy', APP_CSP);
      try {
        const root = await realpath(folder).catch(() => folder);
        if (!(await sendFile(res, root, relative, APP_TYPES))) answer(res, 404, `not found: ${pathname}`);
      } catch (error) {
        answer(res, 500, `could not read ${pathname}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
      }
    });
  });
  // A client that sends garbage or hangs up mid-request costs its socket, never the process.
  server.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
