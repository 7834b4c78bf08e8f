import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script of the test command, without types
import { freePort } from '../../scripts/free-port.mjs';

describe('the port npm test gives the browser tests', () => {
  it('is the wanted one when free, and another free one when something listens there', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const other: number = await freePort(port);
      expect(other).not.toBe(port);
      // The port it hands out can be listened on.
      const check = createServer();
      await new Promise<void>((resolve, reject) => check.once('error', reject).listen(other, '127.0.0.1', resolve));
      await new Promise((resolve) => check.close(resolve));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
    expect(await freePort(port)).toBe(port);
  });
});
