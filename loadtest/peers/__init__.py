"""The servers a user would pick instead of this one, each written as its own documentation shows, for the
benchmark (loadtest/benchmark.py): the 20-line FastAPI + onnxruntime app (minimal.py), Triton through PyTriton,
MLServer, LitServe, Ray Serve and plain BentoML. Every peer does the same work per request as this server
(work.py: the project's own preprocessing, the same ONNX files, the same answer) and runs in a virtual environment
of its own that `make bench-tools` creates under .bench/ (servers.py says how each is started and called).
"""
