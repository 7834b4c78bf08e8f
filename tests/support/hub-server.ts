/**
 * A stand-in for the Hugging Face Hub: serves model folders at `/{owner}/{name}/resolve/{revision}/{path}`,
 * counts requests, and injects faults per file so that download failures can be tested offline.
 */
import { readFile } from 'node:fs/promises';
import { STATUS_CODES, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export type Fault =
  /** Declares the full content-length, sends this many bytes, then drops the connection. */
  | { kind: 'truncate'; afterBytes: number }
  /** Waits before answering, or (with afterBytes) after sending that many bytes of the body. */
  | { kind: 'delay'; ms: number; afterBytes?: number }
  | { kind: 'status'; status: number }
  /** A 200 answer with an HTML page, as login walls, SPA fallbacks and proxies send. */
  | { kind: 'html' };

export interface HubServerOptions {
  /** Folder of model folders: repo "owner/name" is served from `${root}/${name}`. */
  root: string;
  /** Repos served from elsewhere, e.g. { 'tiller-test/stories260K-hf': '/work/shared/models/stories260K-hf' }. */
  repos?: Record<string, string>;
}

export interface HubServer {
  baseUrl: string;
  /** Every request's URL path, in arrival order. */
  requests: string[];
  /** Fault for a file path inside any repo (e.g. "onnx/model.onnx"); undefined clears it. */
  setFault(file: string, fault: Fault | undefined): void;
  close(): Promise<void>;
}

const HTML_PAGE = '<!DOCTYPE html>\n<html><head><title>Error</title></head><body><h1>Something went wrong</h1></body></html>\n';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function contentType(file: string): string {
  return file.endsWith('.json') ? 'application/json; charset=utf-8' : file.endsWith('.jinja') ? 'text/plain; charset=utf-8' : 'application/octet-stream';
}

export async function startHubServer({ root, repos = {} }: HubServerOptions): Promise<HubServer> {
  const requests: string[] = [];
  const faults = new Map<string, Fault>();

  const locate = (urlPath: string): { file: string; fullPath: string } | undefined => {
    const match = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(urlPath);
    if (!match) return undefined;
    const [, owner, name, , filePath] = match.map(decodeURIComponent);
    const folder = path.resolve(repos[`${owner}/${name}`] ?? path.join(root, name));
    const fullPath = path.resolve(folder, filePath);
    return fullPath.startsWith(folder + path.sep) ? { file: filePath, fullPath } : undefined;
  };

  const send = async (res: ServerResponse, body: Uint8Array, fault: Fault | undefined) => {
    if (fault?.kind === 'delay' && fault.afterBytes === undefined) {
      await sleep(fault.ms);
      if (res.destroyed) return;
    }
    res.writeHead(200, { 'content-length': body.length });
    if (fault?.kind === 'truncate') {
      res.write(body.subarray(0, fault.afterBytes), () => res.destroy());
      return;
    }
    if (fault?.kind === 'delay' && fault.afterBytes !== undefined) {
      res.write(body.subarray(0, fault.afterBytes));
      await sleep(fault.ms);
      if (res.destroyed) return;
      res.end(body.subarray(fault.afterBytes));
      return;
    }
    res.end(body);
  };

  const server = createServer(async (req, res) => {
    // The app is cross-origin isolated (COEP require-corp): its worker may read these answers only when
    // they allow it, as the real Hub's do.
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', 'Content-Length');
    res.setHeader('Cross-Origin-Resource-Policy', 'cross-origin');
    const urlPath = new URL(req.url ?? '/', 'http://localhost').pathname;
    // A HEAD (the page's cache asking whether a file changed) is logged as such: it downloads nothing.
    requests.push(req.method === 'HEAD' ? `HEAD ${urlPath}` : urlPath);
    const target = locate(urlPath);
    const fault = target && faults.get(target.file);
    if (!target || fault?.kind === 'status') {
      const status = fault?.kind === 'status' ? fault.status : 404;
      res.writeHead(status, { 'content-type': 'text/plain' }).end(STATUS_CODES[status] ?? 'Error');
      return;
    }
    if (fault?.kind === 'html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(HTML_PAGE);
      return;
    }
    let body: Uint8Array;
    try {
      body = await readFile(target.fullPath);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(STATUS_CODES[404]);
      return;
    }
    res.setHeader('content-type', contentType(target.file));
    await send(res, body, fault);
  });

  // Node's 5 s keep-alive default races a client reusing a socket idle for about that long (a first WASM load
  // takes about that long), which fetch reports as "fetch failed": keep sockets open for the whole test.
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    setFault: (file, fault) => (fault ? faults.set(file, fault) : faults.delete(file)),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        // Keep-alive sockets and stalled (delayed) answers would otherwise hold close() open.
        server.closeAllConnections();
      }),
  };
}
