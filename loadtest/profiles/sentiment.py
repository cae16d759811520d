"""Sentiment's load profile: a clearly positive sentence as the smoke request, real held-out tweets as the load."""

from __future__ import annotations

import json

from loadtest import payloads
from loadtest.profiles import HttpAnswer, HttpRequest, Profile, Smoke, Workload


def smoke_request() -> HttpRequest:
    return HttpRequest("/sentiment/classify", json.dumps({"texts": ["I absolutely love this, best day ever!"]}).encode(),
                       "application/json")


def reads_positive(answer: HttpAnswer) -> bool:
    return answer.status == 200 and json.loads(answer.body)["results"][0]["label"] == "positive"


def labelled(answer: HttpAnswer) -> str | None:
    """None when every result carries a label and three probabilities, else what is wrong."""
    return answer.results_wrong(lambda result: len(result.get("probabilities", {})) == 3 and "label" in result)


PROFILE = Profile(
    name="sentiment",
    smoke=Smoke(smoke_request, reads_positive),
    workloads=(
        Workload("tweet", "/sentiment/classify", payloads.tweet_bodies, labelled, noop_path="/diagnostics/noop-texts"),
        Workload("tweets-32", "/sentiment/classify", payloads.tweet_bodies_32, labelled, items=32),
    ),
    mixed_weight=3,
    compute_feeds=payloads.sentiment_feeds,
)
