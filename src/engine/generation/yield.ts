/**
 * Lets queued events run (a cancel message from the page, a timer) between steps of long work. ONNX
 * Runtime's WASM runs resolve as microtasks, so without this a generation would hold the worker's event
 * loop until it ended. A MessageChannel round trip costs microseconds; setTimeout(0) would cost 4 ms.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => {
    const { port1, port2 } = new MessageChannel();
    port1.onmessage = () => {
      port1.close();
      resolve();
    };
    port2.postMessage(null);
  });
}
