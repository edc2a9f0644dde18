//! Producer-set record times cannot defeat dedup: a few records dated in 2100 among today's
//! traffic, then exact re-sends of earlier events, before and after a SIGKILL. Every re-send
//! is a duplicate (the dedup clock is bounded at the wall clock plus `max_clock_skew_secs`,
//! for sweeping and for the rebuild after the restart), and the future records are written
//! with the bounded time.

mod common;

use std::time::Duration;

use common::{append_to_record_file, assert_totals_exact, now_ms, publish, Setup};

const YEAR_2100_MS: i64 = 4_102_444_800_000;
const SKEW_SECS: i64 = 120;

/// Records of the record file, as (key, payload, Kafka time) of the valid ones.
fn valid_records(record_file: &std::path::Path) -> Vec<(String, Vec<u8>, i64)> {
    std::fs::read_to_string(record_file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["kind"] == "valid")
        .map(|record| {
            let payload = record["payload"].as_str().unwrap().as_bytes().to_vec();
            (record["key"].as_str().unwrap().to_string(), payload, record["ts"].as_i64().unwrap())
        })
        .collect()
}

/// Exact copies of every 33rd valid record (3 %), published now.
fn resend_some(setup: &Setup, record_file: &std::path::Path, skip: usize) -> usize {
    let copies: Vec<_> =
        valid_records(record_file).into_iter().skip(skip).step_by(33).map(|(k, p, _)| (k, p, now_ms())).collect();
    publish(setup, &copies);
    append_to_record_file(record_file, &copies, &vec!["duplicate"; copies.len()]);
    copies.len()
}

fn future_dated(tag: &str, count: usize) -> Vec<(String, Vec<u8>, i64)> {
    let event_ms = now_ms();
    (0..count)
        .map(|i| {
            let id = format!("future-{tag}-{i}");
            let payload = format!(
                r#"{{"externalRequestId":"{id}","provider":"openai","model":"gpt-4o","endpointTag":"clock.test","inputTokens":100,"outputTokens":10,"status":"success","timestamp":{event_ms}}}"#
            );
            (id, payload.into_bytes(), YEAR_2100_MS)
        })
        .collect()
}

#[test]
fn records_dated_in_the_future_make_no_re_send_count_twice_before_or_after_a_sigkill() {
    let mut setup = Setup::new("clock_skew");
    setup.env.push(("COSTLINE_PIPELINE__MAX_CLOCK_SKEW_SECS".into(), SKEW_SECS.to_string()));
    let record_file = setup.scratch_file(".jsonl");
    // Record times of today: the traffic's virtual clock starts two minutes ago.
    setup.produce(8_000, 71, now_ms() - 120_000, &record_file);
    let future = future_dated("a", 8);
    publish(&setup, &future);
    append_to_record_file(&record_file, &future, &vec!["valid"; future.len()]);
    let worker = setup.spawn_worker("first");
    setup.wait_accounted(8_008, Duration::from_secs(120));

    let resent = resend_some(&setup, &record_file, 0);
    assert_totals_exact(&setup, &record_file);

    // The rebuild after a crash must remember the same identities.
    let more_future = future_dated("b", 8);
    publish(&setup, &more_future);
    append_to_record_file(&record_file, &more_future, &vec!["valid"; more_future.len()]);
    setup.wait_accounted(8_016 + resent as u64, Duration::from_secs(60));
    worker.kill9();
    let resent_after_kill = resend_some(&setup, &record_file, 17);
    let worker = setup.spawn_worker("second");
    assert_totals_exact(&setup, &record_file);

    let newest: i64 = setup.query("SELECT toInt64(max(record_time)) FROM usage_events").trim().parse().unwrap();
    assert!(
        newest <= now_ms() / 1000 + SKEW_SECS,
        "record times are written bounded at the wall clock + skew, not in 2100 ({newest})"
    );
    let remembered = worker.metric("costline_dedup_entries").unwrap_or_default();
    let requests: f64 = setup.query("SELECT uniqExact(external_request_id) FROM usage_events").trim().parse().unwrap();
    assert!(remembered >= requests, "the rebuild remembers every request ({remembered} of {requests})");
    eprintln!("{resent} re-sent before the SIGKILL, {resent_after_kill} after");
    assert_eq!(worker.stop(), 0);
}
