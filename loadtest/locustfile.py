"""Locust users for every registered model and a mixed scenario, with real payloads; a wrong answer is a failure.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:3000 --headless -u 16 -r 16 -t 30s DigitsUser
    python -m loadtest.stepload --user MixedUser          # step-load with CSV, HTML and plots (make loadtest)

One user class per registered model (its load profile, loadtest/profiles/<model>.py), named after it (`DigitsUser`,
`SentimentUser`, `DenoiseUser`, ...), sending its first workload: real MNIST test digits as PNGs, real
held-out tweets, noisy crops of the denoiser's test photographs. `MixedUser` sends them all, weighted by each
model's `mixed_weight`. Bodies are encoded before the run starts (locust's init event), so the load generator spends
its CPU on sending, not encoding, and the first step is not spent building them.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, events

from loadtest.profiles import HttpAnswer, Profile, Workload, profiles


class ModelServerUser(FastHttpUser):
    """Sends as fast as answers come back (a closed loop per user); each task checks its answer."""

    abstract = True
    wait_time = between(0, 0)
    workloads: tuple[Workload, ...] = ()  # what its tasks send: their bodies are built before the run

    def send(self, workload: Workload) -> None:
        body, content_type, *extra = random.choice(workload.payload())
        headers = {"Content-Type": content_type, **(extra[0] if extra else {})}
        with self.client.post(workload.path, data=body, headers=headers, catch_response=True) as response:
            answer = HttpAnswer(response.status_code, response.headers, response.content or b"")
            wrong = workload.check(answer)
            if wrong:
                response.failure(wrong)


def single_model_user(model: Profile) -> type:
    workload = model.workloads[0]

    def send_one(self) -> None:
        self.send(workload)

    send_one.__name__ = model.name
    return type(model.user_class, (ModelServerUser,), {"__module__": __name__, "__doc__": f"{model.name}: {workload.name} requests to "
                                                       f"{workload.path}", "tasks": [send_one],
                                                       "workloads": (workload,)})


SINGLE_MODEL_USERS = {model.name: single_model_user(model) for model in profiles()}
globals().update({user.__name__: user for user in SINGLE_MODEL_USERS.values()})


class MixedUser(ModelServerUser):
    """Every model's first workload, weighted by its mixed_weight (digits 6 : sentiment 3 : denoise 1)."""

    tasks = {SINGLE_MODEL_USERS[model.name].tasks[0]: model.mixed_weight for model in profiles()}
    workloads = tuple(model.workloads[0] for model in profiles())


@events.init.add_listener
def build_bodies(environment, **_) -> None:
    """Every body the run's users will send, built (and cached) before the load shape's clock starts: built on a
    user's first request instead, the denoiser's crops held the event loop for seconds on a busy machine and the
    first step measured no request at all."""
    for user_class in environment.user_classes:
        for workload in getattr(user_class, "workloads", ()):
            workload.payload()
