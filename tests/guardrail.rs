//! The guardrail check end to end: two workers count a corpus under budgets of different
//! scopes (tenant, endpoint prefix, model, test traffic; warn and block). For calls covered
//! by every mix of them and by none, both workers' `GET /v1/budgets/check` give the covering
//! budgets, their spend and state, and the verdict an independent computation from the events
//! gives. Then one more call's cost pushes a blocking budget over 100 %, and both workers
//! refuse within one evaluation interval of ClickHouse holding it.

mod common;

use std::time::{Duration, Instant};

use common::expected::{month_start_secs, Dims, Expected};
use common::{now_ms, publish, wait_settled, wait_until, Setup, Worker};
use serde_json::Value;

const EVALUATE_INTERVAL_MS: u64 = 1000;
/// The time one read of every budget's spend may take on top of the interval.
const READ_ALLOWANCE_MS: u64 = 500;

/// A budget of the test: its id, scope filter, limit (pico-USD) and whether it blocks.
struct TestBudget {
    id: &'static str,
    covers: Box<dyn Fn(&Dims) -> bool>,
    limit: i128,
    block: bool,
    toml: String,
}

fn usd(pico: i128) -> String {
    format!("{}.{:012}", pico / 1_000_000_000_000, pico % 1_000_000_000_000)
}

fn spend(expected: &Expected, month_start: i64, covers: &dyn Fn(&Dims) -> bool) -> i128 {
    expected
        .minutes
        .iter()
        .filter(|(d, _)| i64::from(d.window_start) >= month_start && covers(d))
        .map(|(_, m)| m.cost_pico)
        .sum()
}

/// The dominant value of one dimension among prod, real traffic, by spend.
fn top(expected: &Expected, field: impl Fn(&Dims) -> String, skip: &[String]) -> String {
    let mut by_value = std::collections::BTreeMap::<String, i128>::new();
    for (d, m) in &expected.minutes {
        if d.environment == "prod" && d.data_mode == "real" {
            *by_value.entry(field(d)).or_default() += m.cost_pico;
        }
    }
    by_value.into_iter().filter(|(v, _)| !skip.contains(v)).max_by_key(|(_, c)| *c).map(|(v, _)| v).unwrap()
}

fn check(worker: &Worker, call: &Dims) -> Value {
    let url = format!("http://127.0.0.1:{}/v1/budgets/check", worker.port);
    let body = ureq::get(&url)
        .query("tenant", &call.tenant)
        .query("endpoint_tag", &call.endpoint_tag)
        .query("prompt_version", &call.prompt_version)
        .query("provider", &call.provider)
        .query("model", &call.model)
        .query("environment", &call.environment)
        .query("data_mode", &call.data_mode)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// What the check must answer for `call`: the covering budgets' (id, spend, state) and allow.
fn expected_verdict(budgets: &[TestBudget], expected: &Expected, month_start: i64, call: &Dims) -> Value {
    let mut allow = true;
    let mut covering = Vec::new();
    for b in budgets.iter().filter(|b| (b.covers)(call)) {
        let spent = spend(expected, month_start, &*b.covers);
        let state = if spent >= b.limit {
            "exceeded"
        } else if spent * 100 >= b.limit * 80 {
            "warning"
        } else {
            "ok"
        };
        allow &= !(b.block && state == "exceeded");
        covering.push(serde_json::json!([b.id, usd(spent), state]));
    }
    serde_json::json!({"allow": allow, "budgets": covering})
}

fn answered_verdict(answer: &Value) -> Value {
    let covering: Vec<Value> = answer["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| serde_json::json!([b["id"], b["spend_usd"], b["state"]]))
        .collect();
    serde_json::json!({"allow": answer["allow"], "budgets": covering})
}

#[test]
fn verdicts_equal_an_independent_computation_and_a_crossing_blocks_within_one_interval() {
    common::clear_of_midnight(Duration::from_secs(900));
    let mut setup = Setup::new("guardrail");
    setup.flush_interval_ms = 300;
    let start_ms = now_ms() - 60_000;
    let record_file = setup.scratch_file(".jsonl");
    setup.produce(20_000, 23, start_ms, &record_file);
    let expected = Expected::from_record_file(&record_file);
    let month_start = month_start_secs(now_ms() / 1000);

    let tenant = top(&expected, |d| d.tenant.clone(), &[]);
    let second_tenant = top(&expected, |d| d.tenant.clone(), std::slice::from_ref(&tenant));
    let endpoint = top(&expected, |d| d.endpoint_tag.clone(), &[]);
    let prefix = format!("{}.", endpoint.split('.').next().unwrap());
    let model = top(&expected, |d| format!("{}/{}", d.provider, d.model), &[]);
    let (provider, model) = model.split_once('/').map(|(p, m)| (p.to_string(), m.to_string())).unwrap();
    let other_endpoint = top(&expected, |d| d.endpoint_tag.clone(), std::slice::from_ref(&endpoint));
    let other_endpoint = if other_endpoint.starts_with(&prefix) { "search.none".to_string() } else { other_endpoint };

    let prod_real = |d: &Dims| d.environment == "prod" && d.data_mode == "real";
    let mut budgets = Vec::new();
    let mut add = |id: &'static str,
                   covers: Box<dyn Fn(&Dims) -> bool>,
                   scope: &str,
                   limit_of: &dyn Fn(i128) -> i128,
                   block: bool| {
        let limit = limit_of(spend(&expected, month_start, &*covers)).max(1_000_000);
        let on_exceeded = if block { "block" } else { "warn" };
        let toml = format!(
            "[[budgets]]\nid = \"{id}\"\nperiod = \"month\"\nlimit_usd = \"{}\"\non_exceeded = \"{on_exceeded}\"\nscope = {{ {scope} }}\n",
            usd(limit)
        );
        budgets.push(TestBudget { id, covers, limit, block, toml });
    };
    let t = tenant.clone();
    add(
        "tenant-block",
        Box::new(move |d| prod_real(d) && d.tenant == t),
        &format!("tenant = \"{tenant}\""),
        &|s| s * 2 / 3,
        true,
    );
    let p = prefix.clone();
    add(
        "prefix-warn",
        Box::new(move |d| prod_real(d) && d.endpoint_tag.starts_with(&p)),
        &format!("endpoint_tag = \"{prefix}*\""),
        &|s| s / 2,
        false,
    );
    let (pp, mm) = (provider.clone(), model.clone());
    add(
        "model-block",
        Box::new(move |d| prod_real(d) && d.provider == pp && d.model == mm),
        &format!("provider = \"{provider}\", model = \"{model}\""),
        &|s| s * 10 / 9,
        true,
    );
    add(
        "test-traffic",
        Box::new(|d| d.data_mode == "test"),
        "data_mode = \"test\", environment = \"*\"",
        &|s| s / 3,
        true,
    );
    // One dollar above its tenant's spend: the call published below crosses it.
    let t2 = second_tenant.clone();
    add(
        "flip-block",
        Box::new(move |d| prod_real(d) && d.tenant == t2),
        &format!("tenant = \"{second_tenant}\""),
        &|s| s + 1_000_000_000_000,
        true,
    );
    let config = format!("[alerts]\nevaluate_interval_ms = {EVALUATE_INTERVAL_MS}\n\n{}", {
        let tomls: Vec<&str> = budgets.iter().map(|b| b.toml.as_str()).collect();
        tomls.join("\n")
    });
    setup.use_config(&config);

    let first = setup.spawn_worker("w1");
    wait_settled(&[&first], "one worker");
    let second = setup.spawn_worker("w2");
    wait_settled(&[&first, &second], "two workers");
    setup.wait_accounted(expected.records, Duration::from_secs(120));

    let mut calls = Vec::new();
    for tenant in [&tenant, &second_tenant, &"t_nobody".to_string()] {
        for endpoint in [&endpoint, &other_endpoint] {
            for (provider, model) in [(&provider, &model), (&"acme-ai".to_string(), &"other-model".to_string())] {
                for (environment, data_mode) in [("prod", "real"), ("staging", "real"), ("prod", "test")] {
                    calls.push(Dims {
                        window_start: 0,
                        tenant: tenant.clone(),
                        endpoint_tag: endpoint.clone(),
                        prompt_version: "v1".into(),
                        provider: provider.clone(),
                        model: model.clone(),
                        environment: environment.into(),
                        data_mode: data_mode.into(),
                    });
                }
            }
        }
    }
    let wanted: Vec<Value> = calls.iter().map(|c| expected_verdict(&budgets, &expected, month_start, c)).collect();
    assert!(wanted.iter().any(|v| v["allow"] == false) && wanted.iter().any(|v| v["allow"] == true));
    assert!(wanted.iter().any(|v| v["budgets"].as_array().unwrap().is_empty()), "some call is covered by no budget");
    for worker in [&first, &second] {
        // The statuses in memory catch up with the last flush within an interval.
        wait_until(
            Duration::from_secs(20),
            || calls.iter().zip(&wanted).all(|(c, w)| answered_verdict(&check(worker, c)) == *w).then_some(()),
            || {
                let (call, want) =
                    calls.iter().zip(&wanted).find(|(c, w)| answered_verdict(&check(worker, c)) != **w).unwrap();
                format!("worker on port {}: for {call:?}\nwanted {want}\nanswered {}", worker.port, check(worker, call))
            },
        );
    }
    let refused =
        calls.iter().find(|c| c.tenant == tenant && c.environment == "prod" && c.data_mode == "real").unwrap();
    let answer = check(&first, refused);
    assert!(answer["resets_at"].as_str().unwrap().starts_with(&next_month_prefix(month_start)), "{answer}");
    assert_eq!(first.http_get("/v1/budgets/check?tenant=a&endpoint=x").0, 400, "an unknown parameter is refused");
    assert_eq!(first.http_get("/v1/budgets/check?data_mode=prod").0, 400);

    // One call of two dollars for the second tenant crosses its blocking budget.
    let flip =
        calls.iter().find(|c| c.tenant == second_tenant && c.environment == "prod" && c.data_mode == "real").unwrap();
    assert_eq!(check(&first, flip)["allow"], true);
    let event = serde_json::json!({
        "externalRequestId": "guardrail-crossing", "provider": "openai", "model": "gpt-4o-mini",
        "endpointTag": "checkout.crossing", "userId": second_tenant, "inputTokens": 10, "outputTokens": 10,
        "status": "success", "costUsd": 2, "timestamp": now_ms(),
    });
    publish(&setup, &[("guardrail-crossing".into(), event.to_string().into_bytes(), now_ms())]);
    let spend_sql = format!(
        "SELECT sum(cost_usd) >= toDecimal128('{}', 12) FROM usage_minute WHERE tenant = '{second_tenant}' AND environment = 'prod' \
         AND data_mode = 'real' AND window_start >= toDateTime({month_start})",
        usd(budgets[4].limit)
    );
    let crossed = wait_until(
        Duration::from_secs(30),
        || (setup.query(&spend_sql).trim() == "1").then(Instant::now),
        || "the crossing call never reached ClickHouse".into(),
    );
    let workers = [&first, &second];
    let mut refused_after = [None; 2];
    wait_until(
        Duration::from_secs(10),
        || {
            for (i, worker) in workers.iter().enumerate() {
                if refused_after[i].is_none() && check(worker, flip)["allow"] == false {
                    refused_after[i] = Some(crossed.elapsed());
                }
            }
            refused_after.iter().all(Option::is_some).then_some(())
        },
        || format!("a worker still allows the call: {}, {}", check(&first, flip), check(&second, flip)),
    );
    for after in refused_after.into_iter().flatten() {
        assert!(
            after <= Duration::from_millis(EVALUATE_INTERVAL_MS + READ_ALLOWANCE_MS),
            "a worker refused {after:?} after ClickHouse held the crossing"
        );
    }
    assert_eq!(first.stop(), 0);
    assert_eq!(second.stop(), 0);
}

/// `YYYY-MM` of the month after the one starting at `month_start`.
fn next_month_prefix(month_start: i64) -> String {
    let (y, m, _) = common::expected::civil_from_days(month_start / 86_400 + 31);
    format!("{y:04}-{m:02}")
}
