"""Operating the server: the deployment settings, the front door every request passes first (request ids, API
key, admission control, body limits, deadlines, access log, request metrics), graceful shutdown on SIGTERM, the
metrics, the one module that touches BentoML's internals, and the launcher that tests and load tools start servers
with. Everything else may import from here; nothing here imports the models, protocols or runtime.
"""
