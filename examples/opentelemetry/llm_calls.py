"""Sends LLM calls to costline as OpenTelemetry spans: the OpenTelemetry SDK and its OTLP/HTTP
exporter, no costline-specific client.

An instrumentation that follows the GenAI semantic conventions (OpenLLMetry, OpenLIT, the
official OpenTelemetry ones) already sets the `gen_ai.*` attributes; the app adds the
`costline.*` ones that say which product feature made the call, and the resource says the
environment. Each span with token usage becomes one usage event (docs/contract.md §6).

    pip install opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
    COSTLINE_OTLP_ENDPOINT=http://127.0.0.1:9464/v1/traces COSTLINE_HTTP_TOKEN=... \
        python3 examples/opentelemetry/llm_calls.py
"""

import os
import uuid

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

token = os.environ.get("COSTLINE_HTTP_TOKEN")
exporter = OTLPSpanExporter(
    endpoint=os.environ.get("COSTLINE_OTLP_ENDPOINT", "http://127.0.0.1:9464/v1/traces"),
    headers={"authorization": f"Bearer {token}"} if token else None,
    compression=Compression.Gzip,
)
provider = TracerProvider(resource=Resource.create({
    "service.name": "checkout",
    "deployment.environment.name": "prod",
}))
provider.add_span_processor(BatchSpanProcessor(exporter))
tracer = provider.get_tracer("checkout.ai_summary")


class RateLimited(Exception):
    pass


def chat(request_id, attempt, model, usage=None, error=None):
    """One provider call as a GenAI client span; `usage` is what the response reported."""
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT,
                                      record_exception=False, set_status_on_exception=False) as span:
        span.set_attributes({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "costline.request_id": request_id,
            "costline.attempt": attempt,
            "costline.endpoint_tag": "checkout.ai_summary",
            "costline.prompt_version": "summary_v3",
            "enduser.id": "tenant-42",
        })
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes({
            "gen_ai.response.model": f"{model}-2024-08-06",
            "gen_ai.usage.input_tokens": usage[0],
            "gen_ai.usage.output_tokens": usage[1],
            "gen_ai.usage.cache_read.input_tokens": usage[2],
        })


with tracer.start_as_current_span("POST /checkout/summary"):  # not an LLM call: ignored
    request_id = f"otel-{uuid.uuid4().hex[:12]}"
    chat(request_id, 1, "gpt-4o", usage=(1800, 0, 0), error="rate_limited")
    chat(request_id, 2, "gpt-4o", usage=(1800, 240, 1024))
provider.shutdown()  # exports what is left
