"""The request-path latency histogram against prometheus_client's own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from switch.metrics import LATENCY_BUCKETS_S, LoopHistogram, Metrics

NAME = "atm_switch_test_duration_seconds"


def _exposition(observations: list[tuple[str, float]], *, loop: bool) -> list[str]:
    registry = CollectorRegistry(auto_describe=True)
    histogram: LoopHistogram | Histogram
    if loop:
        histogram = LoopHistogram(NAME, "Stages.", "stage", LATENCY_BUCKETS_S)
        registry.register(histogram)
    else:
        histogram = Histogram(NAME, "Stages.", ["stage"], buckets=LATENCY_BUCKETS_S,
                              registry=registry)
    for stage, seconds in observations:
        histogram.labels(stage=stage).observe(seconds)
    # prometheus_client also writes a _created sample per child; the rest must match.
    return sorted(line for line in generate_latest(registry).decode().splitlines()
                  if "_created" not in line)


stages = st.sampled_from(["decode", "card", "pin", "ledger", "total"])
seconds = st.one_of(st.sampled_from(LATENCY_BUCKETS_S),   # exactly on a bound: that bucket
                    st.floats(min_value=0.0, max_value=10.0, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(stages, seconds), max_size=40))
def test_the_loop_histogram_exposes_what_prometheus_client_would(
        observations: list[tuple[str, float]]) -> None:
    assert _exposition(observations, loop=True) == _exposition(observations, loop=False)


def test_a_value_on_a_bound_counts_in_that_bucket_and_the_ones_above() -> None:
    histogram = LoopHistogram(NAME, "Stages.", "stage", (0.01, 0.1))
    cell = histogram.labels(stage="pin")
    for value in (0.01, 0.1, 0.5):
        cell.observe(value)
    (family,) = histogram.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[(NAME + "_bucket", "0.01")] == 1
    assert samples[(NAME + "_bucket", "0.1")] == 2
    assert samples[(NAME + "_bucket", "+Inf")] == 3
    assert samples[(NAME + "_count", None)] == 3
    assert abs(samples[(NAME + "_sum", None)] - 0.61) < 1e-9


def test_the_switch_metrics_use_the_loop_histogram_in_one_process() -> None:
    metrics = Metrics()
    metrics.latency.labels(stage="ledger").observe(0.004)
    assert metrics.registry.get_sample_value(
        "atm_switch_authorization_duration_seconds_count", {"stage": "ledger"}) == 1
    assert metrics.registry.get_sample_value(
        "atm_switch_authorization_duration_seconds_bucket",
        {"stage": "ledger", "le": "0.005"}) == 1
