"""How requests reach the models: the friendly REST endpoints (rest.py, generic over each model's declared
endpoints), the Open Inference Protocol v2 (v2.py), the OpenAPI document and the API page (openapi.py, docs.py),
the demo page and the diagnostics endpoints. Protocols parse and encode the wire; the models decode, predict and
encode their predictions (service/models/contract.py).
"""
