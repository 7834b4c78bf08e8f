/** The engine worker's name, which tells it from ONNX Runtime's thread workers (they run the same script). */
export const ENGINE_WORKER_NAME = 'tiller-engine';
