"""The served models: each one class implementing the model contract (contract.py).

`registry.BUILT_IN` lists the built-in models, one line each; `imported.ImportedModel` serves users' own ONNX
graphs. A model module declares its inputs and outputs, its friendly endpoints and its own settings, and
decodes, predicts and encodes; it never sees HTTP, and nothing here names load-test or test code.
"""
