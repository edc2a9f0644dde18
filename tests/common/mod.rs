//! Shared plumbing of the end-to-end tests: real services started by `scripts/services.sh`,
//! unique topics and databases per test, the `costline` binary as a child process, and
//! ClickHouse queries over HTTP. A test that cannot get its services fails loudly; it never
//! skips.

#![allow(dead_code)] // Each test binary uses its own subset.

pub mod expected;
pub mod receiver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const KAFKA: &str = "127.0.0.1:19092";
pub const CLICKHOUSE: &str = "http://127.0.0.1:18123";
/// Partitions of every test topic (`costline produce --partitions`).
pub const TOPIC_PARTITIONS: i64 = 4;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Starts Kafka (Tansu) and ClickHouse on loopback, once per test process.
pub fn ensure_services() {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = STARTED.get_or_init(|| services(&["up"]));
    if let Err(message) = result {
        panic!("the real services this test needs could not be started:\n{message}");
    }
}

/// The loopback cluster's name and its servers' HTTP endpoints, shard by shard.
pub const CLUSTER: &str = "costline_cluster";
pub const CLUSTER_SERVERS: [&str; 4] =
    ["http://127.0.0.1:28121", "http://127.0.0.1:28122", "http://127.0.0.1:28123", "http://127.0.0.1:28124"];

/// Starts ZooKeeper and the four ClickHouse servers of the loopback cluster, once per test
/// process (and Kafka and the single server, which every setup also uses).
pub fn ensure_cluster() {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = STARTED.get_or_init(|| services(&["up", "cluster"]));
    if let Err(message) = result {
        panic!("the loopback ClickHouse cluster could not be started:\n{message}");
    }
}

/// Runs `scripts/services.sh` with `args`; its output when it fails.
pub fn services(args: &[&str]) -> Result<(), String> {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/services.sh"))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run scripts/services.sh: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/services.sh {} failed ({}):\n{}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `prefix_<time>_<pid>_<n>`: unique across runs and tests.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    format!("{prefix}_{secs}_{}_{n}", std::process::id())
}

/// Waits past the next UTC midnight if it is less than `margin` away, so that a test whose
/// events must fall into the budget period (day or month) current while it runs does not
/// straddle two periods.
pub fn clear_of_midnight(margin: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let to_midnight = Duration::from_secs(86_400 - now.as_secs() % 86_400);
    if to_midnight < margin {
        eprintln!("waiting {to_midnight:?} to start after UTC midnight, not across it");
        std::thread::sleep(to_midnight + Duration::from_secs(1));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Everything a test's workers and producers share. Its database is dropped when a test ends
/// well, and kept for inspection when it fails.
#[derive(Debug)]
pub struct Setup {
    pub brokers: String,
    /// The ClickHouse server the workers and the test's queries go through.
    pub clickhouse_url: String,
    /// Set for a setup on the loopback cluster (`scripts/services.sh up cluster`).
    pub cluster: Option<String>,
    pub topic: String,
    pub database: String,
    pub group: String,
    pub flush_interval_ms: u64,
    /// A configuration file for `costline` (budgets, webhooks, rules), if any.
    pub config_file: Option<PathBuf>,
    /// Extra environment for `costline` processes.
    pub env: Vec<(String, String)>,
}

impl Setup {
    /// A scratch file of this test, named after its database: `<temp dir>/<database><suffix>`.
    pub fn scratch_file(&self, suffix: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{}{suffix}", self.database))
    }

    /// Runs `costline` with this configuration (budgets, webhooks, rules), written to a file.
    pub fn use_config(&mut self, toml: &str) {
        let path = self.scratch_file(".toml");
        std::fs::write(&path, toml).expect("writing the test's configuration file");
        self.config_file = Some(path);
    }

    /// A setup on the loopback cluster of 2 shards × 2 replicas (`scripts/services.sh up
    /// cluster`): workers and queries go through `server` (an index into [`CLUSTER_SERVERS`]).
    pub fn on_cluster(name: &str, server: usize) -> Setup {
        ensure_cluster();
        let mut setup = Setup::new(name);
        setup.clickhouse_url = CLUSTER_SERVERS[server].to_string();
        setup.cluster = Some(CLUSTER.to_string());
        let shards = format!(
            "[[\"{}\", \"{}\"], [\"{}\", \"{}\"]]",
            CLUSTER_SERVERS[0], CLUSTER_SERVERS[1], CLUSTER_SERVERS[2], CLUSTER_SERVERS[3]
        );
        setup.env.push(("COSTLINE_CLICKHOUSE__CLUSTER".into(), CLUSTER.into()));
        setup.env.push(("COSTLINE_CLICKHOUSE__SHARDS".into(), shards));
        setup
    }

    pub fn new(name: &str) -> Setup {
        ensure_services();
        Setup {
            brokers: KAFKA.to_string(),
            clickhouse_url: CLICKHOUSE.to_string(),
            cluster: None,
            topic: unique_name(&format!("test.{name}")),
            database: unique_name(&format!("test_{name}")),
            group: unique_name(&format!("group-{name}")),
            flush_interval_ms: 1000,
            config_file: None,
            env: Vec::new(),
        }
    }

    /// A `costline` command with this setup's configuration in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_costline"));
        command
            .args(args)
            .env("COSTLINE_KAFKA__BROKERS", &self.brokers)
            .env("COSTLINE_KAFKA__TOPIC", &self.topic)
            .env("COSTLINE_KAFKA__GROUP_ID", &self.group)
            .env("COSTLINE_KAFKA__DEAD_LETTER_TOPIC", format!("{}.dead-letter", self.topic))
            .env("COSTLINE_KAFKA__SESSION_TIMEOUT_MS", "6000")
            .env("COSTLINE_CLICKHOUSE__URL", &self.clickhouse_url)
            .env("COSTLINE_CLICKHOUSE__DATABASE", &self.database)
            .env("COSTLINE_PIPELINE__FLUSH_INTERVAL_MS", self.flush_interval_ms.to_string())
            .env("COSTLINE_LOG__LEVEL", std::env::var("COSTLINE_TEST_LOG_LEVEL").unwrap_or("info,rdkafka=warn".into()));
        if let Some(path) = &self.config_file {
            command.env("COSTLINE_CONFIG", path);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Publishes `count` generated records and records them in `record_file`.
    pub fn produce(&self, count: u64, seed: u64, start_ms: i64, record_file: &Path) {
        let output =
            self.produce_command(count, 0, seed, start_ms, record_file).output().expect("running costline produce");
        assert!(output.status.success(), "costline produce failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Starts publishing `count` records at `rate` per second in the background.
    pub fn spawn_producer(&self, count: u64, rate: u64, seed: u64, start_ms: i64, record_file: &Path) -> Child {
        self.produce_command(count, rate, seed, start_ms, record_file)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting costline produce")
    }

    /// [`Setup::spawn_producer`] to a topic the test made itself (e.g. on a mock cluster).
    pub fn spawn_producer_to_made_topic(
        &self,
        count: u64,
        rate: u64,
        seed: u64,
        start_ms: i64,
        record_file: &Path,
    ) -> Child {
        self.produce_command(count, rate, seed, start_ms, record_file)
            .arg("--no-create-topic")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting costline produce")
    }

    pub fn produce_command(&self, count: u64, rate: u64, seed: u64, start_ms: i64, record_file: &Path) -> Command {
        let (count, rate, seed, start_ms) =
            (count.to_string(), rate.to_string(), seed.to_string(), start_ms.to_string());
        let record = record_file.to_str().unwrap();
        self.command(&[
            "produce",
            "--count",
            &count,
            "--rate",
            &rate,
            "--seed",
            &seed,
            "--start-ms",
            &start_ms,
            "--partitions",
            &TOPIC_PARTITIONS.to_string(),
            "--record",
            record,
        ])
    }

    /// Starts a worker; its log goes to a file in the temporary directory.
    pub fn spawn_worker(&self, label: &str) -> Worker {
        self.spawn_worker_with(label, &[])
    }

    /// Starts a worker with extra environment of its own (e.g. another ClickHouse URL).
    pub fn spawn_worker_with(&self, label: &str, env: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!("{}-{label}.log", self.database));
        let log = std::fs::File::create(&log_path).expect("worker log file");
        let child = self
            .command(&["run"])
            .envs(env.iter().copied())
            .env("COSTLINE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting costline run");
        Worker { child, port, log_path }
    }

    /// Like [`Setup::query`], but `None` when the query fails (e.g. tables not created yet).
    pub fn try_query(&self, sql: &str) -> Option<String> {
        clickhouse_at(&self.clickhouse_url, Some(&self.database), sql).ok()
    }

    /// Runs a query in this setup's database and returns its TSV output.
    pub fn query(&self, sql: &str) -> String {
        match clickhouse_at(&self.clickhouse_url, Some(&self.database), sql) {
            Ok(body) => body,
            Err(_) if database_missing(&self.clickhouse_url, &self.database) => String::new(),
            Err(e) => panic!("{e}\n{sql}"),
        }
    }

    /// Records ClickHouse has accounted for (counted + duplicate + rejected), from `flushes`;
    /// 0 while the worker has not created the table yet.
    ///
    /// It reads `flushes` itself rather than asking `system.tables` first: on ClickHouse 18.16 a
    /// `system.tables` query fails (code 60) when a table of the listed database is dropped
    /// while it runs, which the worker's chain probe (`migrate::probe_chain_style`) does when it
    /// starts on a database that lacks objects, as every test's fresh database does.
    pub fn records_accounted(&self) -> u64 {
        let sql = "SELECT sum(counted + duplicates + rejected) FROM flushes";
        match clickhouse_at(&self.clickhouse_url, Some(&self.database), sql) {
            Ok(body) => body.trim().parse().unwrap_or_else(|e| panic!("`{sql}` gave {body:?}: {e}")),
            // UNKNOWN_TABLE, UNKNOWN_DATABASE: the worker has not migrated yet.
            Err(ClickHouseError::Query(body)) if body.starts_with("Code: 60,") || body.starts_with("Code: 81,") => 0,
            Err(e) => panic!("{e}\n{sql}"),
        }
    }

    /// Waits until ClickHouse accounts for at least `records` records written by `worker`.
    pub fn wait_started(&self, records: u64, worker: &Worker) {
        wait_until(
            Duration::from_secs(60),
            || (self.records_accounted() >= records).then_some(()),
            || format!("the worker never got going:\n{}", worker.log()),
        );
    }

    /// Waits until ClickHouse accounts for `total` records.
    pub fn wait_accounted(&self, total: u64, timeout: Duration) {
        let accounted = std::cell::Cell::new(0);
        wait_until(
            timeout,
            || {
                accounted.set(self.records_accounted());
                let now = accounted.get();
                assert!(now <= total, "ClickHouse accounts for {now} records, more than the {total} published");
                (now == total).then_some(())
            },
            || format!("only {} of {total} records accounted for", accounted.get()),
        );
    }
}

/// Polls `check` every 100 ms until it returns a value, which it returns; panics with
/// `failure()` once `timeout` has passed. The one way tests wait for something to happen.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>, failure: impl FnOnce() -> String) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("waited {timeout:?} in vain: {}", failure());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `sql` (TSV) answers `want`; the failure shows the `alerts` table.
pub fn wait_for_alerts(setup: &Setup, sql: &str, want: &str, timeout: Duration) {
    wait_until(
        timeout,
        || setup.try_query(sql).is_some_and(|got| got.trim() == want).then_some(()),
        || format!("{sql} never gave {want}; alerts:\n{}", setup.query("SELECT * FROM alerts FINAL FORMAT TSV")),
    );
}

/// Why a ClickHouse request failed.
#[derive(Debug)]
pub enum ClickHouseError {
    /// The server is not reachable or the answer could not be read.
    Unreachable(String),
    /// The server refused the query: its error text.
    Query(String),
}

impl std::fmt::Display for ClickHouseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClickHouseError::Unreachable(e) => write!(f, "ClickHouse unreachable: {e}"),
            ClickHouseError::Query(body) => write!(f, "ClickHouse refused the query: {body}"),
        }
    }
}

/// The tests' one ClickHouse client: runs `sql` (in `database`, if given) over HTTP and
/// returns the whole answer.
pub fn clickhouse(database: Option<&str>, sql: &str) -> Result<String, ClickHouseError> {
    clickhouse_at(CLICKHOUSE, database, sql)
}

/// [`clickhouse`] on the server at `server`.
pub fn clickhouse_at(server: &str, database: Option<&str>, sql: &str) -> Result<String, ClickHouseError> {
    let url = match database {
        Some(database) => format!("{server}/?database={database}"),
        None => format!("{server}/"),
    };
    let mut response = ureq::post(&url)
        .config()
        .http_status_as_error(false)
        .build()
        .send(sql)
        .map_err(|e| ClickHouseError::Unreachable(e.to_string()))?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .map_err(|e| ClickHouseError::Unreachable(e.to_string()))?;
    if status == 200 {
        Ok(body)
    } else {
        Err(ClickHouseError::Query(body))
    }
}

/// Runs `sql` in `database`; a database that does not exist yet reads as empty.
pub fn clickhouse_query(database: &str, sql: &str) -> String {
    match clickhouse(Some(database), sql) {
        Ok(body) => body,
        Err(_) if database_missing(CLICKHOUSE, database) => String::new(),
        Err(e) => panic!("{e}\n{sql}"),
    }
}

fn database_missing(server: &str, database: &str) -> bool {
    clickhouse_at(server, None, &format!("SELECT count() FROM system.databases WHERE name = '{database}'"))
        .is_ok_and(|s| s.trim() == "0")
}

impl Drop for Setup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        match &self.cluster {
            None => drop(clickhouse(None, &format!("DROP DATABASE IF EXISTS {}", self.database))),
            Some(cluster) => {
                for database in [self.database.clone(), format!("{}_local", self.database)] {
                    let sql = format!("DROP DATABASE IF EXISTS {database} ON CLUSTER {cluster}");
                    drop(clickhouse_at(&self.clickhouse_url, None, &sql));
                }
            }
        }
    }
}

/// A `costline run` child process.
pub struct Worker {
    pub child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

impl Worker {
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGTERM, then waits (bounded) for a clean exit and returns its status code.
    pub fn stop(mut self) -> i32 {
        self.signal("TERM");
        let log_path = self.log_path.clone();
        let status = wait_until(
            Duration::from_secs(60),
            || self.child.try_wait().unwrap(),
            || {
                format!(
                    "worker did not stop after SIGTERM; log: {}",
                    std::fs::read_to_string(log_path).unwrap_or_default()
                )
            },
        );
        status.code().unwrap_or(-1)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the worker's insert query ids begin in ClickHouse: `host-pid-` (its worker id).
    pub fn query_id_prefix(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        format!("{}-{}-", if host.is_empty() { "worker" } else { host }, self.pid())
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The value of an unlabelled metric in the worker's `/metrics`; `None` while its HTTP
    /// server does not answer or the metric is not there.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = self.http_get("/metrics");
        if status != 200 {
            return None;
        }
        body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Partitions the worker owns now (its `assigned_partitions` gauge).
    pub fn assigned_partitions(&self) -> Option<i64> {
        self.metric("costline_assigned_partitions").map(|n| n as i64)
    }

    /// Waits until the worker's HTTP server answers `/healthz`.
    pub fn wait_http_up(&self) {
        wait_until(
            Duration::from_secs(30),
            || (self.http_get("/healthz").0 == 200).then_some(()),
            || format!("worker HTTP never came up:\n{}", self.log()),
        );
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("http://127.0.0.1:{}{path}", self.port)).call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
            Err(ureq::Error::StatusCode(code)) => (code, String::new()),
            Err(e) => (0, e.to_string()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) for a background producer to finish successfully.
pub fn wait_producer(mut producer: Child, timeout: Duration) {
    let status = wait_until(timeout, || producer.try_wait().unwrap(), || "the producer did not finish".to_string());
    assert!(status.success(), "costline produce failed: {status}");
}

/// A small deterministic random source for test schedules; the seed is printed so a failing
/// schedule can be replayed with `COSTLINE_TEST_SEED`.
pub struct Schedule(u64);

impl Schedule {
    pub fn new() -> Schedule {
        let seed = std::env::var("COSTLINE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("schedule seed: COSTLINE_TEST_SEED={seed}");
        Schedule(seed)
    }

    /// Uniform in `low..high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(low + self.0 % (high - low))
    }
}

/// Compares every `usage_minute` row, the `usage_hour` and `usage_day` totals and the
/// `rejected_events` count with the independent computation from `record_file`, checks no
/// Kafka position was counted twice, and [`assert_events_sum_to_minutes`]. Returns the
/// computation, for further checks.
pub fn assert_totals_exact(setup: &Setup, record_file: &Path) -> expected::Expected {
    use expected::{parse_rollup_rows, Expected, ROLLUP_COLUMNS};
    let expected = Expected::from_record_file(record_file);
    setup.wait_accounted(expected.records, Duration::from_secs(300));
    let minutes = parse_rollup_rows(&setup.query(&format!("SELECT {ROLLUP_COLUMNS} FROM usage_minute FORMAT TSV")));
    assert_same_rows("usage_minute", expected.minutes.iter().map(|(dims, want)| (dims, want.clone())), &minutes);
    let total = expected.totals();
    for rollup in ["usage_hour", "usage_day"] {
        let sql = format!(
            "SELECT sum(requests), sum(attempts), sum(retries), sum(duplicates), sum(input_tokens), \
             sum(cached_input_tokens), sum(cache_write_tokens), sum(cache_write_1h_tokens), sum(output_tokens), \
             toString(sum(cost_usd)), sum(unpriced_attempts) FROM {rollup} FORMAT TSV"
        );
        let want = format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}.{:012}\t{}\n",
            total.requests,
            total.attempts,
            total.retries,
            total.duplicates,
            total.input_tokens,
            total.cached_input_tokens,
            total.cache_write_tokens,
            total.cache_write_1h_tokens,
            total.output_tokens,
            total.cost_pico / 1_000_000_000_000,
            total.cost_pico % 1_000_000_000_000,
            total.unpriced_attempts
        );
        assert_eq!(setup.query(&sql), want, "{rollup} totals");
    }
    let rejected: u64 = setup.query("SELECT count() FROM rejected_events").trim().parse().unwrap();
    assert_eq!(rejected, expected.rejected, "rejected_events");
    let counted: u64 = setup.query("SELECT count() FROM usage_events").trim().parse().unwrap();
    let positions: u64 =
        setup.query("SELECT uniqExact(kafka_partition, kafka_offset) FROM usage_events").trim().parse().unwrap();
    assert_eq!(counted, positions, "a Kafka position was counted twice");
    assert_eq!(counted, total.attempts, "usage_events rows");
    assert_events_sum_to_minutes(setup, &expected);
    expected
}

/// The counted attempts in `usage_events` (each with its own dimensions, status, tokens, cost and
/// pricing, written apart from the rollups) summed per minute and dimension set equal the
/// independent computation's minutes (less their duplicates).
pub fn assert_events_sum_to_minutes(setup: &Setup, expected: &expected::Expected) {
    use expected::{parse_rollup_rows, EVENT_ROLLUP_QUERY};
    let from_events = parse_rollup_rows(&setup.query(EVENT_ROLLUP_QUERY));
    let counted_minutes = expected
        .minutes
        .iter()
        .filter(|(_, want)| want.attempts > 0)
        .map(|(dims, want)| (dims, expected::Measures { duplicates: 0, ..want.clone() }));
    assert_same_rows("usage_events summed per minute", counted_minutes, &from_events);
}

/// `got` holds exactly the `want` rows (first mismatches shown), and no others.
pub fn assert_same_rows<'a>(
    what: &str,
    want: impl Iterator<Item = (&'a expected::Dims, expected::Measures)>,
    got: &std::collections::BTreeMap<expected::Dims, expected::Measures>,
) {
    let want: Vec<_> = want.collect();
    let mismatched: Vec<_> = want.iter().filter(|(dims, want)| got.get(*dims) != Some(want)).take(3).collect();
    assert!(
        mismatched.is_empty(),
        "{what} differ, e.g. {:?}",
        mismatched.iter().map(|(d, w)| (d, w, got.get(*d))).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), want.len(), "{what}: number of (minute, dimension set) rows");
}

/// Publishes `(key, payload, Kafka timestamp ms)` records to the setup's topic with the
/// partitioner the README prescribes (murmur2, as `costline produce` does) and returns each
/// one's (partition, offset).
pub fn publish(setup: &Setup, records: &[(String, Vec<u8>, i64)]) -> Vec<(i32, i64)> {
    publish_with(setup, &[], records)
}

/// [`publish`] with extra librdkafka producer properties (e.g. a partitioner, a larger
/// `message.max.bytes`).
pub fn publish_with(setup: &Setup, properties: &[(&str, &str)], records: &[(String, Vec<u8>, i64)]) -> Vec<(i32, i64)> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut config = rdkafka::config::ClientConfig::new();
    config.set("bootstrap.servers", &setup.brokers).set("partitioner", "murmur2_random");
    for (key, value) in properties {
        config.set(*key, *value);
    }
    let producer: FutureProducer = config.create().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut positions = Vec::with_capacity(records.len());
        for (key, payload, ts) in records {
            let record = FutureRecord::to(&setup.topic).key(key).payload(payload).timestamp(*ts);
            let delivery = producer.send(record, Duration::from_secs(10)).await.expect("publishing a record");
            positions.push((delivery.partition, delivery.offset));
        }
        positions
    })
}

/// Appends records published by a test itself to a `--record` file, in the same form, so that
/// [`assert_totals_exact`] accounts for them: `kind` is `valid`, `duplicate` or `invalid`.
pub fn append_to_record_file(record_file: &Path, records: &[(String, Vec<u8>, i64)], kinds: &[&str]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(record_file).expect("opening the record file");
    for ((key, payload, ts), kind) in records.iter().zip(kinds) {
        let payload = std::str::from_utf8(payload).ok();
        let line = serde_json::json!({"key": key, "ts": ts, "kind": kind, "payload": payload});
        writeln!(file, "{line}").expect("writing the record file");
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

/// Waits (bounded) until `workers` together own every partition of the test topic and each
/// owns at least one: the group has finished rebalancing. Tests that change a group more than
/// once wait for this between changes: Tansu 0.6 keeps a departed leader as the leader of the
/// next generation when the leader leaves while the group is forming, or dies, and then no
/// member gets an assignment again (Apache Kafka elects a new leader). The first member is
/// the leader, so tests start one worker alone and never crash it.
pub fn wait_settled(workers: &[&Worker], stage: &str) {
    let started = Instant::now();
    let owned = std::cell::RefCell::new(Vec::new());
    wait_until(
        Duration::from_secs(90),
        || {
            let now: Vec<Option<i64>> = workers.iter().map(|w| w.assigned_partitions()).collect();
            let settled =
                now.iter().all(|n| n.is_some_and(|n| n > 0)) && now.iter().flatten().sum::<i64>() == TOPIC_PARTITIONS;
            *owned.borrow_mut() = now;
            settled.then_some(())
        },
        || {
            let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
            format!(
                "{stage}: the group did not settle (partitions owned: {:?}); logs:\n{}",
                owned.borrow(),
                logs.join("\n")
            )
        },
    );
    eprintln!("{stage}: settled, partitions owned {:?}, {} s", owned.borrow(), started.elapsed().as_secs());
}

/// Where `scripts/example_tools.sh` installed (pinned) the client libraries of the producer
/// examples for `language` (`python` or `node`); a test that cannot get them fails saying so.
pub fn example_tools(language: &str) -> PathBuf {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/example_tools.sh"))
        .arg(language)
        .output()
        .expect("running scripts/example_tools.sh");
    assert!(
        output.status.success(),
        "cannot install the {language} libraries of the examples (scripts/example_tools.sh {language}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Runs `command` to its end and returns its output; kills it and panics when it is still
/// running after `timeout` (an example or a tool that hangs must not hang the test).
pub fn output_within(command: &mut Command, timeout: Duration) -> std::process::Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = child.id();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match outcome.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {command:?}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("{command:?} still ran after {timeout:?}: killed");
        }
    }
}
