"""The model server, in four layers; dependencies point one way: protocols -> models -> runtime -> modelcore.

- `models/`: the model contract (contract.py) and one class per model implementing it (digits, sentiment,
  denoise, and imported ONNX graphs); the registry of built-in models. Decode, predict, encode; no HTTP.
- `protocols/`: how requests reach the models: the friendly REST endpoints (rest.py), the Open Inference
  Protocol (v2.py), the OpenAPI document and API page, the demo page, the diagnostics endpoints.
- `runtime/`: what runs them: onnxruntime sessions (session.py), the adaptive batcher (batching.py), the
  repository of served models of a worker (repository.py).
- `operations/`: what keeps it running: settings, the front door every request passes (request ids, API key,
  admission control, deadlines, access log, metrics), graceful shutdown, the one module that touches BentoML's
  internals, and the launcher the tests and load tools start servers with.

`app.py` wires them into the BentoML service (`bentoml serve service.app:ModelServer`); `store.py` is the model
store command (`python -m service.store ...`).
"""
