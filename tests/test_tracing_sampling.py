"""Head sampling of a body's own TracerProvider (``OTEL_TRACES_SAMPLER``
``parentbased_always_on`` or ``parentbased_traceidratio``), decided by the
middleware: what is not sampled makes no span and carries an unsampled
``traceparent`` on; what the caller sampled is recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry import context as otel_context
from tracing_cells import HopPlugin

from cbs.nats import plugin as nats_plugin
from cbs.tracing import otel
from cbs.tracing import plugin as tracing_plugin

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def sampler(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_ratio(ratio: str | None) -> None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
        if ratio is None:
            monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
        else:
            monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
            monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)

    return set_ratio


async def test_a_trace_that_is_not_sampled_makes_no_span_and_says_so_downstream(
    make_body: Any, sampler: Any, tmp_path: Path
) -> None:
    sampler("0")
    path = tmp_path / "spans.jsonl"
    body = make_body(tracing_plugin, HopPlugin(), config={"tracing_file": str(path)})
    await body.start()
    assert otel.head_sampling(body) == otel.HeadSampling(0.0)
    for _ in range(20):
        seen = await body.request("hop", "hop", {})
        # The second hop gets the new trace's context, flagged not sampled.
        assert seen["traceparent"].endswith("-00"), seen
    # Baggage goes along with it (the propagators write both headers then).
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        seen = await body.request("hop", "hop", {})
    finally:
        otel_context.detach(token)
    assert seen["traceparent"].endswith("-00") and seen.get("baggage") == "tenant=acme", seen
    # A caller that sampled its trace is followed (parent based).
    seen = await body.request("hop", "hop", {}, headers={"traceparent": SAMPLED})
    assert seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert seen["traceparent"].endswith("-01")
    await body.stop()
    recorded = spans(path)
    assert {s["context"]["trace_id"] for s in recorded} == {"0x0af7651916cd43dd8448eb211c80319c"}
    assert len(recorded) == 4  # client and server spans of hop and of peek


@pytest.mark.parametrize("ratio", [None, "1"])
async def test_every_new_trace_is_recorded_and_an_unsampled_caller_is_followed(
    make_body: Any, sampler: Any, tmp_path: Path, ratio: str | None
) -> None:
    sampler(ratio)
    path = tmp_path / "spans.jsonl"
    body = make_body(tracing_plugin, HopPlugin(), config={"tracing_file": str(path)})
    await body.start()
    assert otel.head_sampling(body) == otel.HeadSampling(1.0)
    await body.request("hop", "hop", {})
    seen = await body.request("hop", "hop", {}, headers={"traceparent": NOT_SAMPLED})
    assert seen["traceparent"] == NOT_SAMPLED  # carried on as it came, no span of its own
    await body.stop()
    recorded = spans(path)
    assert len(recorded) == 4
    assert len({s["context"]["trace_id"] for s in recorded}) == 1
    assert "0x0af7651916cd43dd8448eb211c80319c" not in {s["context"]["trace_id"] for s in recorded}


async def test_a_ratio_records_about_that_share_of_new_traces_over_nats(
    nats_server: Any, make_body: Any, sampler: Any, tmp_path: Path
) -> None:
    sampler("0.25")
    path = tmp_path / "spans.jsonl"
    body = make_body(
        nats_plugin,
        tracing_plugin,
        HopPlugin(),
        config={"tracing_file": str(path), "nats_url": nats_server.url},
    )
    await body.start()
    for _ in range(400):
        await body.request("hop", "hop", {})
    await body.stop()
    traces: dict[str, int] = {}
    for span in spans(path):
        trace_id = span["context"]["trace_id"]
        traces[trace_id] = traces.get(trace_id, 0) + 1
    # Each sampled trace is whole (4 spans); 400 draws at 0.25: 100 +- 40 (4.6 sigma).
    assert set(traces.values()) == {4}
    assert 60 <= len(traces) <= 140, len(traces)


@pytest.mark.parametrize(
    ("name", "arg", "expected"),
    [
        ("parentbased_traceidratio", "0.1", otel.HeadSampling(0.1)),
        ("parentbased_traceidratio", "2", otel.HeadSampling(1.0)),
        ("parentbased_traceidratio", "x", otel.HeadSampling(1.0)),
        ("parentbased_always_on", "", otel.HeadSampling(1.0)),
        ("traceidratio", "0.1", None),
        ("always_off", "", None),
    ],
)
def test_which_samplers_the_middleware_decides(
    monkeypatch: pytest.MonkeyPatch, name: str, arg: str, expected: Any
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    assert otel._sampling_from_env() == expected


def test_the_unsampled_traceparent_is_what_w3c_trace_context_writes() -> None:
    from opentelemetry import propagate, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from cbs.tracing.middleware import GETTER, SETTER, _unsampled, new_unsampled_traceparent

    ours = [new_unsampled_traceparent() for _ in range(200)]
    assert len(set(ours)) == 200
    for value in ours:
        ids = trace.get_current_span(
            TraceContextTextMapPropagator().extract({"traceparent": value}, getter=GETTER)
        ).get_span_context()
        assert ids.is_valid and ids.is_remote and not ids.trace_flags.sampled
        # OpenTelemetry writes the same bytes for that context.
        again: dict[str, str] = {}
        propagate.inject(again, _unsampled_with(ids), SETTER)
        assert again == {"traceparent": value}
    theirs: dict[str, str] = {}
    propagate.inject(theirs, _unsampled(propagate.extract({})), SETTER)
    assert [len(part) for part in theirs["traceparent"].split("-")] == [2, 32, 16, 2]
    assert theirs["traceparent"].endswith("-00")


def _unsampled_with(ids: Any) -> Any:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    local = SpanContext(ids.trace_id, ids.span_id, False, TraceFlags(TraceFlags.DEFAULT))
    return trace.set_span_in_context(NonRecordingSpan(local))


_HEX = "0123456789abcdefABCDEF"
_PARTS = st.tuples(
    st.sampled_from(["00", "01", "ff", "0g", "0"]),
    st.one_of(
        st.just("0" * 32),
        st.text(_HEX[:16], min_size=32, max_size=32),  # most: canonical
        st.text(_HEX[:16], min_size=32, max_size=32),
        st.text(_HEX, min_size=31, max_size=33),
    ),
    st.one_of(
        st.just("0" * 16),
        st.text(_HEX[:16], min_size=16, max_size=16),
        st.text(_HEX[:16], min_size=16, max_size=16),
        st.text(_HEX, min_size=15, max_size=17),
    ),
    st.sampled_from(["00", "01", "ff", "1", "zz"]),
    st.sampled_from(["", "-x", " ", "\t"]),
)


@settings(max_examples=400, deadline=None)
@given(
    parts=_PARTS,
    extra=st.dictionaries(st.sampled_from(["tracestate", "baggage", "x"]), st.just("a=b")),
)
def test_the_fast_extract_gives_what_the_propagators_give(
    parts: tuple[str, ...], extra: dict[str, str]
) -> None:
    from opentelemetry import propagate, trace

    from cbs.tracing.middleware import GETTER, extract_w3c

    version, trace_id, span_id, flags, tail = parts
    headers = {"traceparent": f"{version}-{trace_id}-{span_id}-{flags}{tail}", **extra}
    ours = extract_w3c(headers)
    theirs = trace.get_current_span(propagate.extract(headers, None, GETTER)).get_span_context()
    if ours is None:  # not decided here: the propagators are asked
        canonical = version == "00" and not tail and not {"tracestate", "baggage"} & set(extra)
        lower = all(len(p) == n and p == p.lower() for p, n in ((trace_id, 32), (span_id, 16)))
        assert not (canonical and lower and flags in ("00", "01", "ff") and theirs.is_valid)
        return
    assert trace.get_current_span(ours).get_span_context() == theirs and theirs.is_valid


def test_a_canonical_traceparent_is_decided_without_the_propagators() -> None:
    from opentelemetry import trace

    from cbs.tracing.middleware import extract_w3c

    found = extract_w3c({"traceparent": SAMPLED, "cbs-deadline": "1.0"})
    assert found is not None
    ids = trace.get_current_span(found).get_span_context()
    assert (ids.trace_id, ids.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    assert ids.is_remote and ids.trace_flags.sampled
    assert extract_w3c({"traceparent": SAMPLED, "tracestate": "a=b"}) is None
