//! The shared cache tier (issue 15): several real `parapet` instances on one real
//! `redis-server`, in front of one scripted origin. The origin's request count is the signal:
//! one fetch for many instances means the tier is shared. Every request names the same Host,
//! as a load balancer in front of the instances would pass it, so they share cache keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{
    admin_table, reserve_addr, server_and_listener, Metrics, Origin, Proxy, RawConnection,
    RawResponse, RedisServer, Relay, Script, POLL_STEP, READY_TIMEOUT,
};

const TOKEN: &str = "parapet-shared-cache-test-token-71c3";
/// The site every instance serves (the cache key carries it).
const HOST: &str = "shop.test";
/// Generous: the default is 50 ms, but a loaded test machine must not turn a slow answer into
/// a second origin fetch. The Redis-outage test keeps the defaults.
const TEST_TIMEOUTS: &str = "timeout = \"1s\"\n";

/// One `parapet` with a caching route to `origin` and, when given, a `[cache.shared]` table.
struct Instance {
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

impl Instance {
    async fn start(origin: &Origin, redis: Option<&RedisServer>, shared_extra: &str) -> Instance {
        Instance::start_with_url(origin, redis.map(RedisServer::url), shared_extra).await
    }

    /// An instance whose `[cache.shared] url` is `url` (say, through a relay), when given.
    /// `[cache] stale_if_error` is off, so the entries' lifetimes in Redis are the responses'
    /// own windows.
    async fn start_with_url(origin: &Origin, url: Option<String>, shared_extra: &str) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file: PathBuf = dir.path().join("admin.token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
        let shared = url.map_or(String::new(), |url| {
            format!("[cache.shared]\nurl = \"{url}\"\n{shared_extra}")
        });
        let toml = format!(
            "{}\n[upstream.app]\nconnect_timeout = \"500ms\"\nread_timeout = \"5s\"\n\n\
             [[upstream.app.server]]\naddress = \"{}\"\nmax_fails = 0\n\n\
             [[route]]\npath_prefix = \"/\"\nupstream = \"app\"\ncache = true\n\n{}\n\
             [cache]\nmax_size = \"16MiB\"\nmax_object_size = \"1MiB\"\nlock_timeout = \"5s\"\n\
             stale_if_error = \"0s\"\n{shared}\n",
            server_and_listener(reserve_addr()),
            origin.addr(),
            admin_table(reserve_addr(), Some(&token_file)),
        );
        Instance {
            proxy: Proxy::start(&toml).await,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    async fn get(&self, path: &str) -> RawResponse {
        get(self.addr(), path).await
    }

    async fn purge(&self, query: &str) -> (u16, String) {
        self.proxy
            .admin_post(&format!("/purge?{query}"), Some(TOKEN))
            .await
    }

    /// The status page's snapshot (`/status.json`, which wants the admin token).
    async fn status(&self) -> serde_json::Value {
        let url = self.proxy.admin_url("/status.json");
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let body = response.text().await.expect("status.json body");
        serde_json::from_str(&body).expect("status.json is JSON")
    }

    async fn metrics(&self) -> Metrics {
        self.proxy.metrics().await
    }

    /// Waits until this instance has written `count` responses to Redis (writes run after
    /// the response, on their own).
    async fn wait_stored(&self, count: u64) {
        let (metrics, held) = self
            .proxy
            .metrics_until(|m| m.value("parapet_cache_shared_stored_total", &[]) >= count as f64)
            .await;
        assert!(held, "not written to Redis:\n{}", metrics.text);
    }
}

async fn get(addr: SocketAddr, path: &str) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut connection = RawConnection::open(addr).await;
    connection.send(request.as_bytes()).await;
    connection.response().await
}

fn cache_status(response: &RawResponse) -> String {
    response.header("cache-status").unwrap_or("").to_string()
}

fn age(response: &RawResponse) -> u64 {
    response
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

fn stored_url(path: &str) -> String {
    format!("http://{HOST}:80{path}")
}

async fn redis_or_skip(extra: &[&str]) -> Option<RedisServer> {
    RedisServer::start(extra).await
}

#[tokio::test]
async fn a_fill_on_one_instance_is_a_hit_on_another_with_one_origin_fetch_issue_15() {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    // Already 10 s old at the origin: Age on the second instance must count from there.
    origin.script(
        "/item",
        Script::counted("item-")
            .cache_control("max-age=600, stale-while-revalidate=60")
            .header("Age", "10"),
    );
    let a = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let b = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;

    let first = a.get("/item").await;
    assert_eq!(first.status, 200);
    assert!(cache_status(&first).contains("fwd=uri-miss"), "{first:?}");
    a.wait_stored(1).await;

    let second = b.get("/item").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "item-1");
    let status = cache_status(&second);
    assert!(
        status.starts_with("parapet; hit; ttl=") && status.ends_with("; detail=shared"),
        "an L2 hit is a hit and names its tier: {second:?}"
    );
    assert!(
        age(&second) >= 10,
        "Age counts from the original store: {second:?}"
    );
    assert_eq!(origin.requests("/item"), 1);

    let third = b.get("/item").await;
    let status = cache_status(&third);
    assert!(
        status.starts_with("parapet; hit; ttl=") && !status.contains("shared"),
        "the second hit on B comes from its own L1: {third:?}"
    );
    let keys = redis.keys("parapet:e:*").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with(&format!("parapet:e:{} ", stored_url("/item"))),
        "{keys:?}"
    );
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut redis.connection().await)
        .await
        .expect("PTTL");
    // Freshness left (600 - 10 s) plus the stale window (60 s), give or take the test's time.
    assert!(
        (600_000..=650_000).contains(&ttl_ms),
        "TTL in Redis = freshness left + stale window, got {ttl_ms} ms"
    );
    assert_eq!(
        b.metrics()
            .await
            .value("parapet_cache_shared_lookups_total", &[("result", "hit")]),
        1.0
    );
}

#[tokio::test]
async fn an_instance_started_after_the_fill_hits_issue_15() {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    origin.script(
        "/late",
        Script::counted("late-").cache_control("max-age=600"),
    );
    let a = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let b = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    assert_eq!(a.get("/late").await.text(), "late-1");
    a.wait_stored(1).await;
    assert_eq!(b.get("/late").await.text(), "late-1");

    let c = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let response = c.get("/late").await;
    assert_eq!(response.text(), "late-1");
    assert!(
        cache_status(&response).ends_with("detail=shared"),
        "{response:?}"
    );
    assert_eq!(origin.requests("/late"), 1);
}

#[tokio::test]
async fn twenty_concurrent_misses_over_two_instances_make_one_origin_fetch_issue_15() {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    // Slow enough that every request arrives while the first fetch is under way.
    origin.script(
        "/hot",
        Script::counted("hot-")
            .cache_control("max-age=600")
            .delay(Duration::from_millis(500)),
    );
    let a = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let b = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let requests = (0..20).map(|n| {
        let addr = if n % 2 == 0 { a.addr() } else { b.addr() };
        tokio::spawn(async move { get(addr, "/hot").await })
    });
    let responses = futures_join(requests.collect()).await;
    for response in &responses {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.text(), "hot-1", "{response:?}");
    }
    assert_eq!(
        origin.requests("/hot"),
        1,
        "one origin fetch for 20 misses on two instances"
    );
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<RawResponse>>) -> Vec<RawResponse> {
    let mut responses = Vec::with_capacity(tasks.len());
    for task in tasks {
        responses.push(task.await.expect("request task"));
    }
    responses
}

#[tokio::test]
async fn a_purge_on_one_instance_is_gone_everywhere_within_a_second_issue_15() {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    for path in ["/img/a.png", "/img/b.png", "/css/site.css", "/page"] {
        origin.script(path, Script::counted("v").cache_control("max-age=600"));
    }
    let a = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let b = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    for path in ["/img/a.png", "/img/b.png", "/css/site.css", "/page"] {
        a.get(path).await;
    }
    a.wait_stored(4).await;
    for path in ["/img/a.png", "/img/b.png", "/css/site.css", "/page"] {
        assert_eq!(
            b.get(path).await.text(),
            "v1",
            "B holds {path} in its L1 now"
        );
    }

    let purges = [
        format!("prefix={}", stored_url("/img/")),
        format!("glob={}", stored_url("/css/*.css")),
        format!("url={}", stored_url("/page")),
    ];
    for query in &purges {
        let (status, body) = a.purge(query).await;
        assert_eq!(status, 200, "{body}");
    }
    // The issue's bound is 1 s; pub/sub delivery on one machine takes milliseconds.
    assert!(
        purged_everywhere(&redis, &b, 3, Duration::from_secs(1)).await,
        "the purges did not reach Redis and instance B within the 1 s the issue allows"
    );
    for path in ["/img/a.png", "/img/b.png", "/css/site.css", "/page"] {
        let response = b.get(path).await;
        assert_eq!(
            response.text(),
            "v2",
            "{path} purged on B too: {response:?}"
        );
    }
}

/// Polls for at most `within` until Redis holds no entry and `other` has received `purges`
/// purges over pub/sub.
async fn purged_everywhere(
    redis: &RedisServer,
    other: &Instance,
    purges: u64,
    within: Duration,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        let received = other
            .metrics()
            .await
            .value("parapet_cache_shared_purges_received_total", &[]);
        if redis.keys("parapet:e:*").await.is_empty() && received >= purges as f64 {
            return true;
        }
        tokio::time::sleep(POLL_STEP).await;
    }
    false
}

#[tokio::test]
async fn with_redis_stopped_every_request_is_served_and_sharing_resumes_within_5s_issue_15() {
    let Some(mut redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    origin.fallback(Script::counted("o").cache_control("max-age=600"));
    // The defaults (50 ms timeout, breaker after 5 failures, 1 s cooldown) are under test.
    let a = Instance::start(&origin, Some(&redis), "").await;
    let b = Instance::start(&origin, Some(&redis), "").await;
    redis.stop().await;

    for n in 0..20 {
        let instance = if n % 2 == 0 { &a } else { &b };
        let response = instance.get(&format!("/down/{}", n / 4)).await;
        assert_eq!(
            response.status, 200,
            "request {n} with Redis down: {response:?}"
        );
    }
    let (status, _) = a.proxy.admin_get("/readyz").await;
    assert_eq!(status, 200, "/readyz does not depend on Redis");
    let snapshot = a.status().await;
    assert_eq!(snapshot["cache"]["shared"]["breaker"], "open", "{snapshot}");

    redis.restart().await;
    let back = Instant::now();
    let mut round = 0;
    let resumed = loop {
        round += 1;
        let path = format!("/up/{round}");
        a.get(&path).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if b.get(&path).await.text() == a.get(&path).await.text() && origin.requests(&path) == 1 {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < READY_TIMEOUT,
            "sharing did not resume within {READY_TIMEOUT:?} of Redis coming back"
        );
    };
    eprintln!("sharing resumed {resumed:?} after Redis came back");
    // The issue asks for 5 s. Expected: up to 1 s to the next probe, which may fail on the
    // old connection (it is remade meanwhile), one more 1 s cooldown, a probe that succeeds.
    assert!(
        resumed <= Duration::from_secs(5),
        "sharing resumed only {resumed:?} after Redis came back; the issue allows 5 s"
    );
    let snapshot = b.status().await;
    assert_eq!(
        snapshot["cache"]["shared"]["breaker"], "closed",
        "{snapshot}"
    );
    assert_eq!(
        snapshot["cache"]["shared"]["subscribed"], true,
        "{snapshot}"
    );
}

#[tokio::test]
async fn an_entry_that_expires_in_redis_is_a_miss_issue_15() {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    // A 2 s lifetime already 1 s used: Redis keeps it about 1 s.
    origin.script(
        "/short",
        Script::counted("s")
            .cache_control("max-age=2")
            .header("Age", "1"),
    );
    let a = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    a.get("/short").await;
    a.wait_stored(1).await;
    let deadline = Instant::now() + READY_TIMEOUT;
    while !redis.keys("parapet:e:*").await.is_empty() {
        assert!(Instant::now() < deadline, "Redis never expired the entry");
        tokio::time::sleep(POLL_STEP).await;
    }
    let b = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let response = b.get("/short").await;
    assert!(
        cache_status(&response).contains("fwd=uri-miss"),
        "{response:?}"
    );
    assert_eq!(response.text(), "s2");
    assert_eq!(origin.requests("/short"), 2);
}

#[tokio::test]
async fn large_bodies_are_chunked_and_bodies_past_max_object_size_stay_local_issue_15() {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    let big: Vec<u8> = (0..100_000u32).map(|n| b'a' + (n % 26) as u8).collect();
    origin.script(
        "/big",
        Script::fixed(big.clone()).cache_control("max-age=600"),
    );
    origin.script(
        "/huge",
        Script::fixed(vec![b'x'; 300_000]).cache_control("max-age=600"),
    );
    let limits = format!("{TEST_TIMEOUTS}chunk_size = \"16KiB\"\nmax_object_size = \"200KiB\"\n");
    let a = Instance::start(&origin, Some(&redis), &limits).await;
    let b = Instance::start(&origin, Some(&redis), &limits).await;
    a.get("/big").await;
    a.wait_stored(1).await;
    assert_eq!(
        redis.keys("parapet:c:*").await.len(),
        7,
        "100 000 bytes in 16 KiB chunks"
    );
    let response = b.get("/big").await;
    assert_eq!(response.body, big);
    assert!(
        cache_status(&response).ends_with("detail=shared"),
        "{response:?}"
    );

    a.get("/huge").await;
    a.proxy
        .metrics_until(|m| m.value("parapet_cache_shared_too_large_total", &[]) >= 1.0)
        .await;
    let response = b.get("/huge").await;
    assert_eq!(response.body.len(), 300_000);
    assert!(
        cache_status(&response).contains("fwd=uri-miss"),
        "{response:?}"
    );
    assert_eq!(origin.requests("/big"), 1);
    assert_eq!(origin.requests("/huge"), 2);
}

#[tokio::test]
async fn redis_with_maxmemory_and_lru_keeps_serving_issue_15() {
    let Some(redis) =
        redis_or_skip(&["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"]).await
    else {
        return;
    };
    let origin = Origin::start().await;
    origin.fallback(Script::fixed(vec![b'z'; 60_000]).cache_control("max-age=600"));
    let a = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    let b = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    for n in 0..60 {
        assert_eq!(a.get(&format!("/lru/{n}")).await.status, 200);
    }
    a.wait_stored(60).await;
    for n in 0..60 {
        let response = b.get(&format!("/lru/{n}")).await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.body.len(),
            60_000,
            "evicted or not, B serves it whole"
        );
    }
    let lookups = b.metrics().await;
    let hits = lookups.value("parapet_cache_shared_lookups_total", &[("result", "hit")]);
    assert!(
        (1.0..60.0).contains(&hits),
        "Redis evicted some entries and kept others: {hits} hits"
    );
}

/// Origin fetches for three instances each asked for the same 30 objects, without and with
/// the shared tier, and the L2 hit latency from the lookup histogram (printed for the note).
#[tokio::test]
async fn three_instances_fetch_each_object_once_with_the_shared_tier_and_thrice_without_issue_15() {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    const OBJECTS: usize = 30;
    let mut fetches = Vec::new();
    let mut latency = None;
    for redis in [None, Some(&redis)] {
        let origin = Origin::start().await;
        origin.fallback(Script::fixed(vec![b'o'; 4096]).cache_control("max-age=600"));
        let mut instances = Vec::new();
        for _ in 0..3 {
            instances.push(Instance::start(&origin, redis, TEST_TIMEOUTS).await);
        }
        for (n, instance) in instances.iter().enumerate() {
            for object in 0..OBJECTS {
                assert_eq!(instance.get(&format!("/obj/{object}")).await.status, 200);
            }
            if redis.is_some() && n == 0 {
                instance.wait_stored(OBJECTS as u64).await;
            }
        }
        fetches.push(origin.total_requests());
        if redis.is_some() {
            latency = Some(lookup_quantiles(&instances[2].metrics().await));
        }
    }
    eprintln!(
        "origin fetches, 3 instances x {OBJECTS} objects: without shared tier {}, with {}; L2 lookup latency {:?}",
        fetches[0], fetches[1], latency
    );
    assert_eq!(fetches, [3 * OBJECTS, OBJECTS]);
}

/// p50 and p99 upper bucket bounds (seconds) of the lookup operation's duration histogram.
fn lookup_quantiles(metrics: &Metrics) -> (f64, f64) {
    let mut buckets: Vec<(f64, f64)> = metrics
        .matching(
            "parapet_cache_shared_operation_duration_seconds_bucket",
            &[("operation", "lookup")],
        )
        .map(|sample| {
            let bound = sample
                .label("le")
                .and_then(|le| le.parse().ok())
                .unwrap_or(f64::INFINITY);
            (bound, sample.value)
        })
        .collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, count)| *count >= q * total)
            .map_or(f64::INFINITY, |b| b.0)
    };
    (quantile(0.5), quantile(0.99))
}

const REDIS_PASSWORD: &str = "correct horse battery staple";

/// The `[cache.shared]` lines for a TLS `redis` with the password in a file of `dir`.
fn tls_settings(redis: &RedisServer, dir: &std::path::Path, password: &str) -> String {
    let password_file = dir.join("redis.password");
    std::fs::write(&password_file, format!("{password}\n")).expect("write the password file");
    format!(
        "{TEST_TIMEOUTS}password_file = \"{}\"\nca_file = \"{}\"\n",
        password_file.display(),
        redis.ca_file().display()
    )
}

#[tokio::test]
async fn over_rediss_with_a_password_a_fill_on_one_instance_is_a_hit_on_another_issue_15() {
    let Some(redis) = RedisServer::start_tls(REDIS_PASSWORD).await else {
        return;
    };
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = tls_settings(&redis, dir.path(), REDIS_PASSWORD);
    let origin = Origin::start().await;
    origin.script(
        "/secure",
        Script::counted("secure-").cache_control("max-age=600"),
    );
    let a = Instance::start(&origin, Some(&redis), &settings).await;
    let b = Instance::start(&origin, Some(&redis), &settings).await;

    assert_eq!(a.get("/secure").await.text(), "secure-1");
    a.wait_stored(1).await;
    let response = b.get("/secure").await;
    assert_eq!(response.text(), "secure-1");
    assert!(
        cache_status(&response).ends_with("detail=shared"),
        "an L2 hit over TLS: {response:?}"
    );
    assert_eq!(origin.requests("/secure"), 1);
    // The server has no plain port: the entry can only have arrived over TLS with the password.
    assert_eq!(redis.keys("parapet:e:*").await.len(), 1);
    let snapshot = b.status().await;
    assert_eq!(
        snapshot["cache"]["shared"]["url"],
        redis.url(),
        "{snapshot}"
    );
    assert_eq!(
        snapshot["cache"]["shared"]["subscribed"], true,
        "the purge subscription runs over TLS too: {snapshot}"
    );
}

#[tokio::test]
async fn with_a_wrong_redis_password_requests_come_from_the_origin_and_the_failure_is_counted_issue_15(
) {
    let Some(redis) = RedisServer::start_tls(REDIS_PASSWORD).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = tls_settings(&redis, dir.path(), "not the password");
    let origin = Origin::start().await;
    origin.fallback(Script::counted("o").cache_control("max-age=600"));
    let instance = Instance::start(&origin, Some(&redis), &settings).await;

    for n in 0..3 {
        let response = instance.get(&format!("/denied/{n}")).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert!(
            cache_status(&response).contains("fwd=uri-miss"),
            "{response:?}"
        );
    }
    assert_eq!(origin.total_requests(), 3);
    let (metrics, counted) = instance
        .proxy
        .metrics_until(|m| {
            m.value(
                "parapet_cache_shared_operations_total",
                &[("operation", "lookup"), ("result", "error")],
            ) >= 1.0
                && m.value(
                    "parapet_cache_shared_lookups_total",
                    &[("result", "unavailable")],
                ) >= 1.0
        })
        .await;
    assert!(
        counted,
        "the refused AUTH is counted as failed lookups:\n{}",
        metrics.text
    );
    assert_eq!(
        metrics.value("parapet_cache_shared_stored_total", &[]),
        0.0,
        "{}",
        metrics.text
    );
    assert!(redis.keys("*").await.is_empty(), "nothing reached Redis");
    assert_eq!(
        instance.status().await["cache"]["shared"]["subscribed"],
        false
    );
}

#[tokio::test]
async fn a_purge_made_while_an_instance_cannot_reach_redis_reaches_redis_and_the_others_once_it_can_issue_15(
) {
    let Some(redis) = redis_or_skip(&[]).await else {
        return;
    };
    let origin = Origin::start().await;
    origin.script(
        "/news",
        Script::counted("news-").cache_control("max-age=600"),
    );
    // A reaches Redis through a relay the test cuts; B reaches it directly all along.
    let relay = Relay::start(redis.addr());
    let a = Instance::start_with_url(
        &origin,
        Some(format!("redis://{}/0", relay.addr())),
        TEST_TIMEOUTS,
    )
    .await;
    let b = Instance::start(&origin, Some(&redis), TEST_TIMEOUTS).await;
    assert_eq!(a.get("/news").await.text(), "news-1");
    a.wait_stored(1).await;
    assert_eq!(
        b.get("/news").await.text(),
        "news-1",
        "B holds it in its L1 now"
    );

    relay.cut().await;
    let (status, body) = a.purge(&format!("url={}", stored_url("/news"))).await;
    assert_eq!(status, 200, "{body}");
    let (metrics, kept) = a
        .proxy
        .metrics_until(|m| m.value("parapet_cache_shared_purges_pending", &[]) == 1.0)
        .await;
    assert!(kept, "the purge waits for Redis:\n{}", metrics.text);
    assert_eq!(
        metrics.value("parapet_cache_shared_purges_deferred_total", &[]),
        1.0
    );
    assert!(
        a.proxy
            .wait_for_log_lines(&["purge applied to this instance only", "/news"], 1)
            .await,
        "the deferred purge is logged with what to do:\n{}",
        a.proxy.logs()
    );
    assert_eq!(a.status().await["cache"]["shared"]["purges_pending"], 1);
    // What the limit means while A is cut off: Redis and B still have the entry.
    assert_eq!(redis.keys("parapet:e:*").await.len(), 1);
    assert_eq!(b.get("/news").await.text(), "news-1");

    relay.mend().await;
    let mended = Instant::now();
    assert!(
        purged_everywhere(&redis, &b, 1, READY_TIMEOUT).await,
        "the kept purge did not reach Redis and B within {READY_TIMEOUT:?} of the relay mending \
         (retried every 1 s; generous for a loaded machine)\n{}",
        a.proxy.logs()
    );
    eprintln!(
        "a kept purge reached Redis and B {:?} after the relay mended",
        mended.elapsed()
    );
    assert_eq!(b.get("/news").await.text(), "news-2", "purged on B too");
    let (metrics, drained) = a
        .proxy
        .metrics_until(|m| m.value("parapet_cache_shared_purges_pending", &[]) == 0.0)
        .await;
    assert!(drained, "{}", metrics.text);
}
