//! `docker-compose.yml` is valid: `docker-compose config` (Debian's docker-compose 1.29,
//! which needs no Docker engine for this) accepts it with and without the `load` profile, and
//! the resolved configuration has every service of the production-like stack. The files the
//! compose file mounts from `deploy/` exist (Compose does not check that), and the Grafana
//! dashboard is valid JSON.
//!
//! The cluster overlay, `docker-compose.cluster.yml`, is checked the same way on top of it.
//!
//! `docker-compose` must be on PATH: `scripts/test.sh` installs it. Without it this test fails;
//! it is never skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Services the resolved configuration must define.
const SERVICES: &[&str] = &["kafka", "clickhouse", "worker-1", "worker-2", "prometheus", "grafana"];

/// Files and folders docker-compose.yml mounts into containers.
const MOUNTED: &[&str] = &[
    "deploy/costline.toml",
    "deploy/prometheus/prometheus.yml",
    "deploy/grafana/provisioning/datasources/datasources.yml",
    "deploy/grafana/provisioning/dashboards/dashboards.yml",
    "deploy/grafana/dashboards/costline.json",
];

fn repo_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).canonicalize().expect("repository root")
}

/// Runs `docker-compose -f <repo>/docker-compose.yml [--profile P] <args>`; panics if the binary
/// is missing or the command fails, with its stderr.
fn docker_compose(profile: Option<&str>, args: &[&str]) -> Output {
    docker_compose_files(&["docker-compose.yml"], profile, args)
}

/// [`docker_compose`] with the compose files `files` (of the repository), in order.
fn docker_compose_files(files: &[&str], profile: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new("docker-compose");
    for file in files {
        command.arg("-f").arg(repo_root().join(file));
    }
    if let Some(profile) = profile {
        command.args(["--profile", profile]);
    }
    command.args(args);
    let shown = format!("{command:?}");
    let output = match command.output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "`docker-compose` is not on PATH; scripts/test.sh installs it (Debian package \
             docker-compose; `docker-compose config` needs no Docker engine): {err}"
        ),
        Err(err) => panic!("could not run {shown}: {err}"),
    };
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// The names under the top-level `services:` key of `docker-compose config` output (YAML with
/// two-space indentation, as both docker-compose 1.29 and Docker Compose v2 print it).
fn service_names(config: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_services = false;
    for line in config.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_services = line.trim_end() == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        let Some(rest) = line.strip_prefix("  ") else { continue };
        if rest.starts_with(' ') || rest.starts_with('-') {
            continue;
        }
        if let Some(name) = rest.trim_end().strip_suffix(':') {
            names.push(name.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
    }
    names
}

#[test]
fn compose_file_is_valid() {
    // Syntax and schema, as docker-compose 1.29 checks them; then with the load generator.
    docker_compose(None, &["config", "-q"]);
    docker_compose(Some("load"), &["config", "-q"]);

    let output = docker_compose(None, &["config"]);
    let config = String::from_utf8(output.stdout).expect("docker-compose config prints UTF-8");
    let services = service_names(&config);
    for wanted in SERVICES {
        assert!(
            services.iter().any(|name| name == wanted),
            "service {wanted} missing from `docker-compose config` (services found: {services:?})"
        );
    }

    let root = repo_root();
    for path in MOUNTED {
        assert!(root.join(path).is_file(), "{path} is mounted by docker-compose.yml but does not exist");
    }
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/dashboards/costline.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("deploy/grafana/dashboards/costline.json is not valid JSON");
    assert_eq!(dashboard["uid"], "costline", "dashboard uid");
}

/// The cluster overlay (`docker-compose.cluster.yml`) on top of the stack: Keeper and four
/// ClickHouse servers, the files they mount, and costline told about the cluster.
#[test]
fn cluster_overlay_is_valid() {
    let files = ["docker-compose.yml", "docker-compose.cluster.yml"];
    let output = docker_compose_files(&files, None, &["config"]);
    let config = String::from_utf8(output.stdout).expect("docker-compose config prints UTF-8");
    let services = service_names(&config);
    for wanted in SERVICES.iter().chain(&["keeper", "clickhouse-s1r2", "clickhouse-s2r1", "clickhouse-s2r2"]) {
        assert!(services.iter().any(|name| name == wanted), "service {wanted} missing: {services:?}");
    }
    assert_eq!(config.matches("COSTLINE_CLICKHOUSE__CLUSTER: costline_cluster").count(), 3, "{config}");
    assert_eq!(config.matches("config.d/cluster.xml").count(), 4, "every server mounts the cluster");
    let root = repo_root();
    for server in ["s1r1", "s1r2", "s2r1", "s2r2"] {
        let macros =
            std::fs::read_to_string(root.join(format!("deploy/clickhouse-cluster/macros-{server}.xml"))).unwrap();
        let (shard, replica) = (&server[1..2], &server[2..]);
        assert!(macros.contains(&format!("<shard>{shard}</shard><replica>{replica}</replica>")), "{server}: {macros}");
    }
    for file in ["cluster.xml", "keeper.xml"] {
        assert!(root.join("deploy/clickhouse-cluster").join(file).is_file(), "{file} is mounted but missing");
    }
}
