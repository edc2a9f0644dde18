//! Fencing: a worker cut from ClickHouse (only it: its connections go through a proxy that
//! drops them) for longer than `kafka.max_poll_interval_ms` while a second worker runs. The
//! cut worker keeps polling with its partitions paused, so the group does not hand them to
//! the other worker behind its back; when ClickHouse is reachable again it writes what it
//! holds, and the totals are exact. (A worker that blocked on ClickHouse was dropped from the
//! group, the other replayed its partitions, and its retried flush landed too.)

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_totals_exact, wait_producer, wait_settled, wait_until, Setup};

/// A TCP proxy to ClickHouse's HTTP port that can be cut: while cut, it closes every open
/// connection and every new one at once.
struct CuttableProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl CuttableProxy {
    fn start(upstream: &'static str) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (cut_flag, open_list) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut_flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                for stream in [&client, &server] {
                    if let Ok(clone) = stream.try_clone() {
                        open_list.lock().unwrap().push(clone);
                    }
                }
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        CuttableProxy { port, cut, open }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies bytes from `from` to `to` until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

#[test]
fn a_worker_cut_from_clickhouse_past_the_poll_interval_never_doubles_a_flush() {
    let mut setup = Setup::new("fencing");
    setup.flush_interval_ms = 500;
    setup.env.push(("COSTLINE_KAFKA__MAX_POLL_INTERVAL_MS".into(), "15000".into()));
    setup.env.push(("COSTLINE_CLICKHOUSE__INSERT_TIMEOUT_SECS".into(), "5".into()));
    let proxy = CuttableProxy::start("127.0.0.1:18123");
    let proxied = format!("http://127.0.0.1:{}", proxy.port);
    let record_file = setup.scratch_file(".jsonl");
    let producer = setup.spawn_producer(90_000, 1_500, 31, 1_790_000_000_000, &record_file);

    // The first member leads the group and is never the one that fails (tests/common: Tansu).
    let direct = setup.spawn_worker("direct");
    setup.wait_started(1_000, &direct);
    let cut = setup.spawn_worker_with("cut", &[("COSTLINE_CLICKHOUSE__URL", &proxied)]);
    wait_settled(&[&direct, &cut], "two workers");

    // Cut only once the proxied worker is writing its own partitions.
    let flushes_before = cut.metric("costline_flushes_total").unwrap_or(0.0);
    wait_until(
        Duration::from_secs(30),
        || (cut.metric("costline_flushes_total").unwrap_or(0.0) > flushes_before).then_some(()),
        || format!("the proxied worker never flushed:\n{}", cut.log()),
    );
    let consumed_at_cut = cut.metric("costline_records_consumed_total").unwrap_or(0.0);
    proxy.set_cut(true);
    let outage = Instant::now();
    let mut saw_not_ready = false;
    while outage.elapsed() < Duration::from_secs(40) {
        saw_not_ready |= cut.http_get("/readyz").0 == 503;
        std::thread::sleep(Duration::from_millis(500));
    }
    let consumed_in_cut = cut.metric("costline_records_consumed_total").unwrap_or(0.0) - consumed_at_cut;
    proxy.set_cut(false);
    assert!(saw_not_ready, "the cut worker never reported the outage:\n{}", cut.log());
    assert!(cut.metric("costline_sink_errors_total").unwrap_or(0.0) > 0.0, "the cut hit no insert");
    eprintln!("the cut worker consumed {consumed_in_cut} records during the cut");

    wait_producer(producer, Duration::from_secs(180));
    assert_totals_exact(&setup, &record_file);
    let rebalances = cut.metric("costline_consumer_group_rebalances").unwrap_or(0.0);
    eprintln!("rebalances seen by the cut worker: {rebalances}");
    assert_eq!(cut.stop(), 0);
    assert_eq!(direct.stop(), 0);
}
