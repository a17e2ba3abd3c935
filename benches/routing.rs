//! Routing decision time (`cargo bench --bench routing`): extension 100 dials a national
//! number that has an ENUM NAPTR (served by the embedded DNS server on loopback) pointing at a
//! SIP URI with a literal address, with a PSTN trunk behind it.
//!
//! Prints:
//! - the decision time with a warm cache (targets: < 50 µs), p50/p99/mean over many decisions;
//! - the first (cold) decision, which asks the DNS server;
//! - the decision time with a dead DNS server (a socket that never answers), against the
//!   budget (target: budget + 10 ms).
//!
//! Env: ROUTING_ITERS (default 20000), ROUTING_BUDGET_MS (default 500).

use std::net::UdpSocket;
use std::time::Duration;

use pasarela::config::Config;
use pasarela::routing::router::{Decision, Router};
use pasarela::routing::{setup, Zone, ZoneRecord, ZoneServer};
use pasarela::store::ExtensionRow;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(nameserver: std::net::SocketAddr, budget_ms: u64) -> Config {
    let text = format!(
        r#"
[numbering]
country_code = "49"
area_code = "30"

[enum]
suffixes = ["e164.bench"]
nameservers = ["{nameserver}"]
budget_ms = {budget_ms}

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:5090"
"#
    );
    Config::from_toml_str(&text, std::path::Path::new("bench.toml")).expect("bench config")
}

fn extensions() -> Vec<ExtensionRow> {
    let (ha1_md5, ha1_sha256) = pasarela::store::digest_ha1("100", "office.test", "bench-secret");
    vec![ExtensionRow {
        number: "100".into(),
        ha1_md5,
        ha1_sha256,
        name: None,
        did: None,
        enabled: true,
        permissions: None,
        legacy_digest: false,
        allow: Vec::new(),
    }]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn timed(router: &Router, number: &str) -> (Duration, Decision) {
    let t = std::time::Instant::now();
    let route = router.route(Some("100"), number).await;
    (t.elapsed(), route.decision)
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Attempts(a) => a
            .iter()
            .map(|a| format!("{} {}", a.label(), a.uri))
            .collect::<Vec<_>>()
            .join(" | "),
        other => format!("{other:?}"),
    }
}

fn main() {
    let iters = env("ROUTING_ITERS", 20_000) as usize;
    let budget_ms = env("ROUTING_BUDGET_MS", 500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let zone = Zone {
            origin: "e164.bench".into(),
            ttl: 3600,
            negative_ttl: 3600,
            records: vec![ZoneRecord::Naptr {
                name: "4.3.2.1.5.5.5.0.3.9.4".into(),
                order: 100,
                preference: 10,
                flags: "u".into(),
                services: "E2U+sip".into(),
                regexp: r"!^\+49(.*)$!sip:\1@127.0.0.1:5080!".into(),
                replacement: ".".into(),
            }],
        };
        let dns = ZoneServer::start("127.0.0.1:0".parse().expect("addr"), vec![zone])
            .await
            .expect("DNS server");
        let live_config = config(dns.local_addr(), budget_ms);
        let router =
            setup::build_router(live_config.routing(), &extensions(), None).expect("router");

        let (cold, decision) = timed(&router, "0305551234").await;
        println!("routing: decision  {}", describe(&decision));
        println!(
            "routing: cold (asks DNS)      {:>10.1} µs",
            cold.as_secs_f64() * 1e6
        );
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            times.push(timed(&router, "0305551234").await.0);
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / iters as u32;
        println!(
            "routing: warm cache p50 {:>8.1} µs  p99 {:>8.1} µs  mean {:>8.1} µs  ({iters} decisions; target < 50 µs)",
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            mean.as_secs_f64() * 1e6,
        );
        let (miss_cold, _) = timed(&router, "0305559999").await;
        let (miss_warm, decision) = timed(&router, "0305559999").await;
        println!(
            "routing: ENUM miss           cold {:>8.1} µs  cached {:>8.1} µs  -> {}",
            miss_cold.as_secs_f64() * 1e6,
            miss_warm.as_secs_f64() * 1e6,
            describe(&decision)
        );
        dns.shutdown().await;

        let silent = UdpSocket::bind("127.0.0.1:0").expect("silent socket");
        let dead_config = config(silent.local_addr().expect("addr"), budget_ms);
        let dead = setup::build_router(dead_config.routing(), &extensions(), None).expect("router");
        let mut worst = Duration::ZERO;
        for i in 0..5 {
            let (t, decision) = timed(&dead, &format!("030555000{i}")).await;
            worst = worst.max(t);
            if i == 0 {
                println!("routing: dead DNS decision  {}", describe(&decision));
            }
        }
        println!(
            "routing: dead DNS worst of 5 {:>8.1} ms  (budget {budget_ms} ms; target budget + 10 ms)",
            worst.as_secs_f64() * 1e3
        );
    });
}
