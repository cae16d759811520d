"""A small hand-written behavioural test set for the sentiment model, in the spirit of CheckList (Ribeiro et al.,
2020): short texts whose label a person agrees on, grouped by the capability they probe. Written for this project
(none of it comes from the training corpus or from any sentiment lexicon); the pass rate per capability goes into
the model card and a regression test keeps it from falling below the shipped model's.
"""

from __future__ import annotations

CASES: dict[str, list[tuple[str, str]]] = {
    "negation": [
        ("The flight was not bad at all.", "positive"),
        ("I don't hate this new seat layout.", "positive"),
        ("The crew was not helpful and not polite.", "negative"),
        ("I can't say I enjoyed the delay.", "negative"),
        ("Never had a problem with this airline.", "positive"),
        ("The food was not good.", "negative"),
        ("Not happy with how my complaint was handled.", "negative"),
        ("No complaints, everything went smoothly.", "positive"),
    ],
    "intensifiers": [
        ("The service was absolutely amazing!", "positive"),
        ("This is the worst customer service I have ever experienced.", "negative"),
        ("Really really grateful for the quick rebooking.", "positive"),
        ("Extremely disappointed with the lost luggage.", "negative"),
        ("Super smooth boarding today, very impressed.", "positive"),
        ("Totally unacceptable waiting time at the gate.", "negative"),
        ("So incredibly rude at the check-in desk.", "negative"),
        ("Best flight I've had in years, thank you so much!", "positive"),
    ],
    "emoji_and_emoticons": [
        ("Landed early today 😊", "positive"),
        ("Three hours on the tarmac 😡", "negative"),
        ("Great crew :)", "positive"),
        ("Bag lost again :(", "negative"),
        ("Upgraded to business!!! 🎉🎉", "positive"),
        ("Cancelled. Again. 😤", "negative"),
        ("Thanks for the help ❤️", "positive"),
        ("Stuck at the airport overnight 😭", "negative"),
    ],
    "slang": [
        ("That crew was lit, 10/10 would fly again", "positive"),
        ("Customer service is trash, smh", "negative"),
        ("The new lounge slaps", "positive"),
        ("Delayed for the third time, ugh, so done with this", "negative"),
        ("Legit the comfiest seats ever", "positive"),
        ("This app is hot garbage", "negative"),
        ("Crew was on point today, big thanks", "positive"),
        ("wtf is this delay, nobody tells us anything", "negative"),
    ],
    "sarcasm_markers": [
        ("Oh great, another delay. Just what I needed.", "negative"),
        ("Thanks for losing my bag, really appreciate it. Not.", "negative"),
        ("Wow, four hours on hold, fantastic service /s", "negative"),
        ("Love how you cancel flights without telling anyone.", "negative"),
        ("Yeah, sure, 'on time'. Only two hours late.", "negative"),
        ("Brilliant, the wifi is down again.", "negative"),
    ],
    "typos": [
        ("the servise was excelent, thx", "positive"),
        ("wrost flight ever, neverr again", "negative"),
        ("relly nice crew on my flihgt today", "positive"),
        ("my bag got lsot and noone helped", "negative"),
        ("grate experiance, will fly agian", "positive"),
        ("terible delays and rood staff", "negative"),
    ],
}


def cases() -> list[tuple[str, str, str]]:
    """(capability, text, expected label) for every case."""
    return [(capability, text, label) for capability, items in CASES.items() for text, label in items]


def pass_rates(predicted: list[str]) -> dict[str, float]:
    """Share of cases passed per capability and overall, given the predicted labels in `cases()` order."""
    rows = cases()
    rates = {}
    for capability in CASES:
        picked = [predicted[i] == label for i, (cap, _, label) in enumerate(rows) if cap == capability]
        rates[capability] = round(sum(picked) / len(picked), 3)
    rates["overall"] = round(sum(p == label for p, (_, _, label) in zip(predicted, rows)) / len(rows), 3)
    return rates
