"""Publishes costline usage events from Python with confluent-kafka (librdkafka).

One event per LLM provider call, keyed by its request id and partitioned with murmur2; a retry
is the same request id with the next `attempt`; a send whose outcome is unknown is sent again
unchanged, and costline counts the copy as a duplicate. Each delivered event is printed as one
JSON line; the exit status is 1 when any delivery failed.

    pip install confluent-kafka==2.16.0
    KAFKA_BROKERS=127.0.0.1:9092 COSTLINE_TOPIC=costline.usage.v1 python3 examples/python/producer.py
"""

import json
import os
import sys
import time
import uuid

from confluent_kafka import KafkaException, Producer

TOPIC = os.environ.get("COSTLINE_TOPIC", "costline.usage.v1")

producer = Producer({
    "bootstrap.servers": os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092"),
    # The Java client's partitioner: librdkafka's default (CRC32) would put a request id in
    # another partition than other producers do, and costline would count it twice.
    "partitioner": "murmur2_random",
    "acks": "all",
    "message.timeout.ms": 30000,
})
failures = []


def usage_event(request_id, attempt, call):
    # costline:event-begin (tests/examples.rs checks these keys against the JSON Schema)
    event = {
        "externalRequestId": request_id,
        "attempt": attempt,
        "provider": "openai",
        "model": call["model"],
        "endpointTag": "checkout.ai_summary",
        "promptVersion": "summary_v3",
        "userId": "tenant-42",
        "environment": "prod",
        "inputTokens": call["input_tokens"],
        "cachedInputTokens": call["cached_tokens"],
        "outputTokens": call["output_tokens"],
        "latencyMs": call["latency_ms"],
        "status": call["status"],
        "errorCode": call["error_code"],
        "timestamp": int(time.time() * 1000),
    }
    # costline:event-end
    return json.dumps(event)


def on_delivery(error, message):
    if error is not None:
        failures.append(error)
        print(f"not delivered: {error}", file=sys.stderr)
    else:
        print(message.value().decode())


def publish(request_id, payload):
    while True:
        try:
            producer.produce(TOPIC, key=request_id, value=payload, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let deliveries drain, then try again
            producer.poll(0.5)


def call(model, input_tokens, output_tokens, status="success", cached_tokens=0, error_code=""):
    """A simulated provider call: what its response (or error) reported."""
    return {"model": model, "input_tokens": input_tokens, "output_tokens": output_tokens, "status": status,
            "cached_tokens": cached_tokens, "error_code": error_code, "latency_ms": 850}


run = uuid.uuid4().hex[:12]
requests = {
    f"py-{run}-summary": [call("gpt-4o-mini", 1200, 150)],
    # Rate-limited once, then answered from the prompt cache: two attempts of one request.
    f"py-{run}-retried": [call("gpt-4o", 3000, 0, status="rate_limited", error_code="429"),
                         call("gpt-4o", 3000, 420, cached_tokens=2048)],
}
last = None
for request_id, attempts in requests.items():
    for attempt, result in enumerate(attempts, start=1):
        last = (request_id, usage_event(request_id, attempt, result))
        publish(*last)
# A send whose delivery report never came (a timeout, a crash) is sent again as it was.
publish(*last)

try:
    remaining = producer.flush(30)
except KafkaException as error:
    sys.exit(f"flush failed: {error}")
if remaining or failures:
    sys.exit(f"{len(failures)} deliveries failed, {remaining} not confirmed")
