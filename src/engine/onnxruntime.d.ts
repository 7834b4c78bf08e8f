// Types for the "#onnxruntime" import (package.json "imports"): both builds share onnxruntime-common's API.
export * from 'onnxruntime-common';
