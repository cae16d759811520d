"""service.runtime.batching.MicroBatcher: concurrent requests share batches and each gets its own rows back."""

import asyncio
import threading

import numpy as np

from service.runtime.batching import MicroBatcher


class RecordingModel:
    """A stand-in inference function for the batcher's own tests: doubles its input, records batch sizes."""

    def __init__(self, delay: float = 0.0):
        self.batch_sizes: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, payloads: list[np.ndarray]) -> list[np.ndarray]:
        self.gate.wait()
        self.batch_sizes.append(sum(len(payload) for payload in payloads))
        return [payload * 2 for payload in payloads]


async def predict(batcher: MicroBatcher, rows: np.ndarray):
    return await batcher.predict(rows, rows=len(rows))


def run(coroutine):
    return asyncio.run(coroutine)


async def one_held_then(queued: int, batcher: MicroBatcher, model: RecordingModel, shape: tuple[int, ...]) -> None:
    """One request whose batch the model holds, `queued` more arriving behind it, then the model let go."""
    model.gate.clear()
    first = asyncio.ensure_future(predict(batcher, np.zeros(shape)))
    await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(predict(batcher, np.ones(shape))) for _ in range(queued)]
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(first, *rest)


def test_each_request_gets_its_own_rows_back_in_order():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=5, name="t")
        requests = [np.full((n, 3), i, dtype=np.float32) for i, n in enumerate([1, 4, 2, 1, 3])]
        outputs = await asyncio.gather(*(predict(batcher, r) for r in requests))
        batcher.close()
        return requests, outputs

    requests, outputs = run(scenario())
    for request, output in zip(requests, outputs):
        assert np.array_equal(output, request * 2)
    assert sum(model.batch_sizes) == 11


def test_concurrent_requests_are_batched_up_to_the_limit():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0, name="t")
        await one_held_then(20, batcher, model, shape=(1, 2))
        batcher.close()

    run(scenario())
    assert model.batch_sizes == [1, 8, 8, 4]


def test_a_request_larger_than_the_batch_limit_runs_alone():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=1, name="t")
        output = await predict(batcher, np.ones((10, 1)))
        batcher.close()
        return output

    assert run(scenario()).shape == (10, 1)
    assert model.batch_sizes == [10]


def test_a_model_failure_reaches_every_request_of_the_batch():
    def broken(payloads):
        raise RuntimeError("model fault")

    async def scenario():
        batcher = MicroBatcher(broken, max_batch_size=8, max_wait_ms=5, name="t")
        results = await asyncio.gather(*(predict(batcher, np.ones((1, 1))) for _ in range(3)), return_exceptions=True)
        batcher.close()
        return results

    results = run(scenario())
    assert all(isinstance(result, RuntimeError) for result in results)


def test_a_cancelled_request_does_not_disturb_the_others():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=20, name="t")
        gone = asyncio.ensure_future(predict(batcher, np.ones((1, 1))))
        kept = asyncio.ensure_future(predict(batcher, np.full((1, 1), 3.0)))
        await asyncio.sleep(0)
        gone.cancel()
        output = await kept
        batcher.close()
        return output

    assert run(scenario()).tolist() == [[6.0]]
    assert model.batch_sizes == [1]


def predict_one_alone(model: RecordingModel, max_batch_size: int, max_wait_ms: int) -> np.ndarray:
    """One request on an otherwise idle batcher (30 s is a hang guard, far beyond any expected wait)."""

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, name="t")
        output = await asyncio.wait_for(predict(batcher, np.ones((1, 1))), timeout=30)
        batcher.close()
        return output

    return run(scenario())


def test_a_full_batch_runs_at_once_without_waiting_out_the_batch_wait():
    """With a one-minute wait and room for one item, a lone request fills the batch: it must not wait a minute."""
    assert predict_one_alone(RecordingModel(), max_batch_size=1, max_wait_ms=60_000).tolist() == [[2.0]]


def test_with_no_batch_wait_a_lone_request_runs_alone():
    model = RecordingModel()
    assert predict_one_alone(model, max_batch_size=64, max_wait_ms=0).tolist() == [[2.0]]
    assert model.batch_sizes == [1]


def test_collate_pads_token_sequences_of_different_lengths():
    from service.runtime.session import collate

    short = {"ids": np.array([[5, 6]]), "mask": np.array([[1, 1]])}
    long = {"ids": np.array([[7, 8, 9], [1, 2, 3]]), "mask": np.ones((2, 3), dtype=int)}
    merged = collate([short, long])
    assert merged["ids"].tolist() == [[5, 6, 0], [7, 8, 9], [1, 2, 3]]
    assert merged["mask"].tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 1]]


def test_collate_concatenates_fixed_shape_inputs():
    from service.runtime.session import collate

    merged = collate([{"pixels": np.zeros((1, 1, 4, 4))}, {"pixels": np.ones((2, 1, 4, 4))}])
    assert merged["pixels"].shape == (3, 1, 4, 4) and merged["pixels"][1:].min() == 1


def test_a_small_batch_runs_on_the_event_loop_and_a_large_one_on_the_inference_thread():
    threads = []

    def record_thread(payloads):
        threads.append(threading.current_thread().name)
        return [payload * 2 for payload in payloads]

    async def scenario():
        batcher = MicroBatcher(record_thread, max_batch_size=64, max_wait_ms=0, name="t", inline_budget_s=0.004)
        batcher.note_run(values=1, seconds=0.001)  # 1 ms per input value: up to 4 values fit the budget
        small = await batcher.predict(np.ones((2, 1)), rows=2, values=2)
        large = await batcher.predict(np.ones((8, 1)), rows=8, values=8)
        batcher.close()
        return small, large

    small, large = run(scenario())
    assert small.tolist() == [[2.0]] * 2 and large.tolist() == [[2.0]] * 8
    assert threads[0] == threading.main_thread().name and threads[1].startswith("t-inference")


def test_before_any_time_is_measured_batches_run_on_the_inference_thread():
    async def scenario():
        batcher = MicroBatcher(RecordingModel(), max_batch_size=64, max_wait_ms=0, name="t", inline_budget_s=1.0)
        inline_at_first = batcher.runs_inline(1)
        await predict(batcher, np.ones((1, 1)))
        batcher.close()
        return inline_at_first, batcher.runs_inline(1)

    assert run(scenario()) == (False, True)


def test_requests_arriving_while_a_batch_runs_form_the_next_batch_without_waiting():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=0, name="t")
        await one_held_then(5, batcher, model, shape=(1, 2))
        batcher.close()

    run(scenario())
    assert model.batch_sizes == [1, 5]


def test_a_graph_with_a_fixed_batch_axis_runs_each_request_alone():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=0, name="t", batchable=False)
        model.gate.clear()
        calls = [asyncio.ensure_future(batcher.predict(np.ones((2, 1)), rows=1)) for _ in range(3)]
        await asyncio.sleep(0.01)
        model.gate.set()
        await asyncio.gather(*calls)
        batcher.close()

    run(scenario())
    assert model.batch_sizes == [2, 2, 2]


def test_a_batch_stops_growing_once_its_expected_time_reaches_the_cap():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=0, name="t", max_batch_s=0.05)
        batcher.note_run(values=1, seconds=0.02)  # 20 ms per value: two requests of one value fit 50 ms, three do not
        batcher.note_run = lambda values, seconds: None  # keep that estimate whatever the stand-in model takes
        await one_held_then(5, batcher, model, shape=(1, 1))
        batcher.close()

    run(scenario())
    assert model.batch_sizes == [1, 2, 2, 1]
