// @ts-check
/**
 * Publishes costline usage events from Node with kafkajs (plain JavaScript, type-checked from
 * its JSDoc with `tsc --checkJs`; runs as is on Node 20).
 *
 * One event per LLM provider call, keyed by its request id; kafkajs's default partitioner is
 * the Java client's murmur2, the one costline expects. A retry is the same request id with the
 * next `attempt`; a send whose outcome is unknown is sent again unchanged, and costline counts
 * the copy as a duplicate. Each delivered event is printed as one JSON line; the exit status is
 * 1 when a delivery failed after kafkajs's own retries.
 *
 *   npm install kafkajs@2.2.4
 *   KAFKA_BROKERS=127.0.0.1:9092 COSTLINE_TOPIC=costline.usage.v1 node examples/node/producer.js
 */
const crypto = require("node:crypto");
const { Kafka, Partitioners, logLevel } = require("kafkajs");

const topic = process.env.COSTLINE_TOPIC ?? "costline.usage.v1";
const kafka = new Kafka({
  clientId: "costline-example",
  brokers: (process.env.KAFKA_BROKERS ?? "127.0.0.1:9092").split(","),
  logLevel: logLevel.WARN,
});
// DefaultPartitioner is murmur2 as the Java client computes it; named to make that explicit.
const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });

/**
 * A simulated provider call: what its response (or error) reported.
 * @typedef {{model: string, inputTokens: number, outputTokens: number, cachedTokens: number,
 *            status: string, errorCode: string, latencyMs: number}} Call
 */

/**
 * @param {string} requestId
 * @param {number} attempt
 * @param {Call} call
 * @returns {string}
 */
function usageEvent(requestId, attempt, call) {
  // costline:event-begin (tests/examples.rs checks these keys against the JSON Schema)
  const event = {
    "externalRequestId": requestId,
    "attempt": attempt,
    "provider": "anthropic",
    "model": call.model,
    "endpointTag": "support.reply_draft",
    "promptVersion": "reply_v7",
    "userId": "tenant-7",
    "environment": "prod",
    "inputTokens": call.inputTokens,
    "cachedInputTokens": call.cachedTokens,
    "outputTokens": call.outputTokens,
    "latencyMs": call.latencyMs,
    "status": call.status,
    "errorCode": call.errorCode,
    "timestamp": Date.now(),
  };
  // costline:event-end
  return JSON.stringify(event);
}

/**
 * @param {string} model
 * @param {number} inputTokens
 * @param {number} outputTokens
 * @param {Partial<Call>} [extra]
 * @returns {Call}
 */
function call(model, inputTokens, outputTokens, extra = {}) {
  return { model, inputTokens, outputTokens, cachedTokens: 0, status: "success", errorCode: "", latencyMs: 2100, ...extra };
}

/**
 * Sends one event and waits for the broker's acknowledgement (kafkajs retries on its own; what
 * still fails is thrown).
 * @param {string} requestId
 * @param {string} payload
 */
async function publish(requestId, payload) {
  await producer.send({ topic, acks: -1, messages: [{ key: requestId, value: payload }] });
  console.log(payload);
}

async function main() {
  const run = crypto.randomUUID().slice(0, 12);
  /** @type {Record<string, Call[]>} */
  const requests = {
    [`node-${run}-draft`]: [call("claude-sonnet-4-5-20250929", 5200, 640, { cachedTokens: 4096 })],
    // Timed out once, then answered: two attempts of one request.
    [`node-${run}-retried`]: [
      call("claude-haiku-4-5-20251001", 900, 0, { status: "timeout", errorCode: "timeout" }),
      call("claude-haiku-4-5-20251001", 900, 210),
    ],
  };
  await producer.connect();
  try {
    /** @type {[string, string] | undefined} */
    let last;
    for (const [requestId, attempts] of Object.entries(requests)) {
      for (const [index, result] of attempts.entries()) {
        last = [requestId, usageEvent(requestId, index + 1, result)];
        await publish(...last);
      }
    }
    // A send whose acknowledgement never came (a timeout, a crash) is sent again as it was.
    if (last) await publish(...last);
  } finally {
    await producer.disconnect();
  }
}

main().catch((error) => {
  console.error(`not delivered: ${error}`);
  process.exit(1);
});
