//! h2c: prior-knowledge HTTP/2 in clear text on a listener with `protocols = ["http1", "h2c"]`,
//! next to HTTP/1.1 on the same port.

use crate::harness::{
    client, h2c_client, reserve_addr, single_upstream_config, Backend, Proxy, RawConnection,
};

async fn start_one() -> (Proxy, Backend) {
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&single_upstream_config(
        reserve_addr(),
        "",
        &[backend.addr()],
        "",
    ))
    .await;
    (proxy, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_get_is_served_over_http2() {
    let (proxy, backend) = start_one().await;
    let response = h2c_client()
        .get(proxy.url("/h2?x=1"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response.headers().get("x-backend").map(|v| v.as_bytes()),
        Some(&b"app"[..])
    );
    assert_eq!(response.text().await.expect("body"), "app");
    let received = backend.last_received();
    assert_eq!(
        (received.method.as_str(), received.target.as_str()),
        ("GET", "/h2?x=1")
    );
    assert_eq!(
        received.header("host"),
        Some(proxy.addr().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_post_body_reaches_the_backend() {
    let (proxy, backend) = start_one().await;
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let response = h2c_client()
        .post(proxy.url("/h2-upload"))
        .body(body.clone())
        .send()
        .await
        .expect("h2c request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response
            .headers()
            .get("x-request-body-len")
            .map(|v| v.as_bytes()),
        Some(&b"50000"[..])
    );
    let received = backend.last_received();
    assert_eq!(received.method, "POST");
    assert!(received.body == body, "the body changed on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_carry_via_2_parapet_and_forwarding_headers() {
    let (proxy, backend) = start_one().await;
    let response = h2c_client()
        .get(proxy.url("/h2-headers"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(response.status(), 200);
    let received = backend.last_received();
    let via = received.list("via");
    assert!(
        via.iter().any(|v| v.contains("2 parapet")),
        "Via to the backend: {via:?}"
    );
    assert!(
        !via.iter().any(|v| v.contains("1.1 parapet")),
        "an h2 client is not HTTP/1.1: {via:?}"
    );
    assert_eq!(received.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(received.header_values("x-forwarded-proto"), ["http"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_multiplexes_concurrent_requests_on_one_connection() {
    let (proxy, backend) = start_one().await;
    let client = h2c_client();
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let (client, url) = (client.clone(), proxy.url(&format!("/mux/{i}")));
            tokio::spawn(async move {
                let response = client.get(url).send().await.expect("h2c request");
                let version = response.version();
                (
                    response.status(),
                    version,
                    response.text().await.expect("body"),
                )
            })
        })
        .collect();
    for request in requests {
        let (status, version, body) = request.await.expect("task");
        assert_eq!(
            (status.as_u16(), version, body.as_str()),
            (200, reqwest::Version::HTTP_2, "app")
        );
    }
    assert_eq!(backend.requests(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_still_work_on_an_h2c_listener() {
    let (proxy, _backend) = start_one().await;
    let h1 = client()
        .get(proxy.url("/h1"))
        .send()
        .await
        .expect("h1 request");
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.text().await.expect("body"), "app");
    let h2 = h2c_client()
        .get(proxy.url("/h2"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.text().await.expect("body"), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_http10_request_on_an_h2c_listener_is_answered() {
    let (proxy, _backend) = start_one().await;
    // 18 bytes: shorter than the 24-byte HTTP/2 preface an h2c listener looks for.
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let mut connection = RawConnection::open(proxy.addr()).await;
    connection.send(request).await;
    let response = connection.response().await;
    assert_eq!((response.status, response.text()), (200, "app".to_string()));
}
