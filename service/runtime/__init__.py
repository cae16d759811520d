"""What runs the models: an onnxruntime session per model file with its adaptive batcher (session.py,
batching.py), and the repository of the models one worker serves, each loaded in isolation (repository.py). Knows
ONNX files and tensors, not HTTP and not what any model means.
"""
