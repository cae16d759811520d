"""The shipped sentiment model behind a real server, called over HTTP."""


import pytest

from loadtest.sentiment_eval import evaluate
from modelcore.card import ModelMetadata
from modelcore.sentiment_corpus import load_splits

pytestmark = pytest.mark.e2e
TARGET_MACRO_F1 = 0.79


def classify(client, texts):
    return client.post("/sentiment/classify", json={"texts": texts})


def test_served_macro_f1_on_the_held_out_test_split_meets_the_target(server_url):
    test = load_splits()[0]["test"]
    report = evaluate(server_url, test.texts, test.labels, concurrency=4, per_request=32)
    print(f"\nserved sentiment test split: {report}")
    assert report["errors"] == 0
    assert report["macro_f1"] >= TARGET_MACRO_F1


def test_response_has_the_documented_shape_in_input_order(client):
    texts = ["I absolutely love this airline, best crew ever!", "My flight was cancelled again. Terrible.", "Landed at 5pm."]
    body = classify(client, texts).json()
    assert set(body) == {"results", "model"} and body["model"]["name"] == "sentiment"
    labels = [result["label"] for result in body["results"]]
    assert labels[0] == "positive" and labels[1] == "negative"
    for result in body["results"]:
        assert set(result["probabilities"]) == {"negative", "neutral", "positive"}
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
        assert result["truncated"] is False


def test_long_text_is_truncated_and_says_so(client):
    (result,) = classify(client, ["delayed " * 500]).json()["results"]
    assert result["truncated"] is True


@pytest.mark.parametrize("text", ["✈️😡😡😡", "Très bien, merci à l'équipage", "Ã©tÃ© mojibake Ã¼", "飞机晚点了", "a"])
def test_any_unicode_text_is_classified(client, text):
    response = classify(client, [text])
    assert response.status_code == 200, response.text


def test_models_endpoint_lists_the_shipped_sentiment_model(client, shipped_dir):
    shipped = ModelMetadata.read(shipped_dir / "sentiment")
    (model,) = [m for m in client.get("/models").json()["models"] if m["name"] == "sentiment"]
    assert model["version"] == shipped.version
    assert model["labels"] == ["negative", "neutral", "positive"]


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no_texts", {"texts": []}),
        ("empty_text", {"texts": [""]}),
        ("whitespace_text", {"texts": ["   \n\t "]}),
        ("not_a_string", {"texts": [42]}),
        ("null_text", {"texts": [None]}),
        ("texts_not_a_list", {"texts": "just one string"}),
        ("wrong_field", {"text": ["hello"]}),
        ("too_many_texts", {"texts": ["hi"] * 257}),
        ("text_too_long", {"texts": ["x" * 5001]}),
    ],
)
def test_bad_json_bodies_get_400_naming_the_problem(client, case, body):
    response = client.post("/sentiment/classify", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("case", "content", "content_type"),
    [
        ("invalid_json", b'{"texts": ["unterminated', "application/json"),
        ("invalid_utf8", b'{"texts": ["\xff\xfe bad bytes"]}', "application/json"),
        ("deeply_nested", ("[" * 10000 + "]" * 10000).encode(), "application/json"),
        ("empty_body", b"", "application/json"),
    ],
)
def test_malformed_bodies_get_400(client, case, content, content_type):
    response = client.post("/sentiment/classify", content=content, headers={"content-type": content_type})
    assert response.status_code == 400, response.text


def test_server_still_answers_after_bad_bodies(client):
    client.post("/sentiment/classify", content=b"\xff" * 100, headers={"content-type": "application/json"})
    assert classify(client, ["still here?"]).status_code == 200


BEHAVIOUR_THRESHOLD = 0.77  # the shipped model passes 0.841 (37 of 44) of the hand-written cases; 34 of 44 still pass


def test_the_behavioural_test_set_passes_at_least_as_often_as_the_card_says(server_url):
    from loadtest.sentiment_eval import behaviour
    from modelcore.card import ModelMetadata
    from service.operations.launch import ROOT

    served = behaviour(server_url)["pass_rate"]
    card = ModelMetadata.read(ROOT / "artifacts" / "sentiment").metrics["behaviour"]["pass_rate"]
    print(served)
    assert served["overall"] >= BEHAVIOUR_THRESHOLD
    assert served["overall"] == pytest.approx(card["overall"], abs=0.03)
