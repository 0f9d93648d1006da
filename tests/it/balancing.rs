//! Balancing: how requests spread over an upstream's servers for each `balance` mode.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::{
    client, failures, get, load, reserve_addr, server_and_listener, Backend, Proxy,
};

/// A proxy in front of `backends` with the given weights and upstream keys (e.g. `balance`).
async fn start_weighted(upstream_keys: &str, backends: &[(&Backend, u32)]) -> Proxy {
    let listen = reserve_addr();
    let mut toml = format!(
        "{}\n[upstream.app]\nconnect_timeout = \"500ms\"\nread_timeout = \"5s\"\n{upstream_keys}\n",
        server_and_listener(listen)
    );
    for (backend, weight) in backends {
        toml.push_str(&format!(
            "\n[[upstream.app.server]]\naddress = \"{}\"\nweight = {weight}\n",
            backend.addr()
        ));
    }
    toml.push_str("\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n");
    Proxy::start(&toml).await
}

async fn three_backends() -> (Backend, Backend, Backend) {
    (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    )
}

/// Percentage of `total` that `count` is.
fn share(count: usize, total: usize) -> f64 {
    100.0 * count as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_splits_80_sequential_requests_exactly_30_30_20() {
    let (a, b, c) = three_backends().await;
    let proxy = start_weighted("balance = \"round_robin\"", &[(&a, 3), (&b, 3), (&c, 2)]).await;
    let client = client();
    for _ in 0..80 {
        assert_eq!(get(&client, &proxy.url("/rr")).await.0, 200);
    }
    assert_eq!(
        (a.requests(), b.requests(), c.requests()),
        (30, 30, 20),
        "requests per server (a, b, c) with weights 3, 3, 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_with_equal_latency_splits_by_weight_3_3_2() {
    let a = Backend::builder("a")
        .delay(Duration::from_millis(3))
        .start()
        .await;
    let b = Backend::builder("b")
        .delay(Duration::from_millis(3))
        .start()
        .await;
    let c = Backend::builder("c")
        .delay(Duration::from_millis(3))
        .start()
        .await;
    let proxy = start_weighted("balance = \"least_conn\"", &[(&a, 3), (&b, 3), (&c, 2)]).await;
    let total = 640;
    let results = load(&client(), &proxy.url("/lc"), total, 8).await;
    assert!(
        failures(&results).is_empty(),
        "failed: {:?}",
        failures(&results)
    );
    let counts = [a.requests(), b.requests(), c.requests()];
    assert_eq!(counts.iter().sum::<usize>(), total);
    for (count, expected) in counts.iter().zip([37.5, 37.5, 25.0]) {
        let got = share(*count, total);
        assert!(
            (got - expected).abs() <= 7.0,
            "shares {counts:?} of {total}: {got:.1}% where {expected}% ± 7 was expected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_is_the_default_and_sends_markedly_fewer_requests_to_a_slow_server() {
    let fast1 = Backend::start("fast1").await;
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(150));
    let fast2 = Backend::start("fast2").await;
    // No `balance` key: least_conn is the default.
    let proxy = start_weighted("", &[(&fast1, 1), (&slow, 1), (&fast2, 1)]).await;
    let results = load(&client(), &proxy.url("/slow"), 300, 8).await;
    assert!(
        failures(&results).is_empty(),
        "failed: {:?}",
        failures(&results)
    );
    let fastest_low = fast1.requests().min(fast2.requests());
    assert!(
        slow.requests() * 2 < fastest_low,
        "slow got {}, fast ones {} and {}",
        slow.requests(),
        fast1.requests(),
        fast2.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_header_sends_each_key_to_one_server_and_keys_to_several() {
    let (a, b, c) = three_backends().await;
    let proxy = start_weighted(
        "balance = \"hash\"\nhash_key = \"header:x-user\"",
        &[(&a, 1), (&b, 1), (&c, 1)],
    )
    .await;
    let client = client();
    let mut server_of: HashMap<String, HashSet<String>> = HashMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let user = format!("user-{user}");
            let response = client
                .get(proxy.url(&format!("/hash/{round}")))
                .header("x-user", &user)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200);
            let body = response.text().await.expect("body");
            server_of.entry(user).or_default().insert(body);
        }
    }
    for (user, servers) in &server_of {
        assert_eq!(servers.len(), 1, "{user} went to {servers:?}");
    }
    let used: HashSet<_> = server_of.values().flatten().collect();
    assert!(used.len() > 1, "30 keys all went to {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_the_uri_sends_each_path_to_one_server() {
    let (a, b, c) = three_backends().await;
    let proxy = start_weighted(
        "balance = \"hash\"\nhash_key = \"uri\"",
        &[(&a, 1), (&b, 1), (&c, 1)],
    )
    .await;
    let client = client();
    let mut server_of: HashMap<String, HashSet<String>> = HashMap::new();
    for _ in 0..3 {
        for item in 0..30 {
            let path = format!("/item/{item}?v=1");
            let (status, body) = get(&client, &proxy.url(&path)).await;
            assert_eq!(status, 200);
            server_of.entry(path).or_default().insert(body);
        }
    }
    for (path, servers) in &server_of {
        assert_eq!(servers.len(), 1, "{path} went to {servers:?}");
    }
    let used: HashSet<_> = server_of.values().flatten().collect();
    assert!(used.len() > 1, "30 paths all went to {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_balance_reaches_every_server() {
    let (a, b, c) = three_backends().await;
    let proxy = start_weighted("balance = \"random\"", &[(&a, 1), (&b, 1), (&c, 1)]).await;
    let client = client();
    for _ in 0..90 {
        assert_eq!(get(&client, &proxy.url("/random")).await.0, 200);
    }
    let counts = (a.requests(), b.requests(), c.requests());
    assert!(
        counts.0 > 0 && counts.1 > 0 && counts.2 > 0,
        "requests per server: {counts:?}"
    );
    assert_eq!(counts.0 + counts.1 + counts.2, 90);
}
