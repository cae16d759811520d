"""Each registered model's smoke request, sent by a real client, with the check that its answer is right."""

from __future__ import annotations

import httpx

from loadtest.profiles import HttpAnswer, Profile, profile, profiles


def smoke_call(client: httpx.Client, model: Profile | str, headers: dict | None = None, **kwargs) -> httpx.Response:
    """Send the model's smoke request (`headers` are added, e.g. an API key)."""
    request = (profile(model) if isinstance(model, str) else model).smoke.request()
    return client.request(request.method, request.path, content=request.body,
                          headers={"content-type": request.content_type, **(headers or {})}, **kwargs)


def answered_correctly(model: Profile | str, response: httpx.Response) -> bool:
    return (profile(model) if isinstance(model, str) else model).smoke.check(HttpAnswer.of(response))


def every_endpoint_answers_correctly(client: httpx.Client, **kwargs) -> bool:
    """Every registered model's smoke request gets its right answer."""
    return all(answered_correctly(model, smoke_call(client, model, **kwargs)) for model in profiles())
