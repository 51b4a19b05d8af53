//! The client against a local HTTP server: the JSON it posts, retries, drops and the shutdown
//! deadline; URLs, backoff and log excerpts.

use super::*;

use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use serde_json::json;

/// One request as the test server saw it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone)]
struct Server {
    received: Arc<Mutex<Vec<Received>>>,
    failures_left: Arc<AtomicUsize>,
    failure: AxumStatus,
}

impl Server {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn record(
    State(server): State<Server>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (AxumStatus, &'static str) {
    server.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        content_type: headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
    });
    let failing = server
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        (server.failure, "bad\n  alerts")
    } else {
        (AxumStatus::OK, "")
    }
}

/// A local HTTP server answering `failure` to the first `failures` requests, 200 after.
async fn serve(failures: usize, failure: AxumStatus) -> (String, Server) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = Server {
        received: Arc::default(),
        failures_left: Arc::new(AtomicUsize::new(failures)),
        failure,
    };
    let app = Router::new().fallback(record).with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), server)
}

/// A port on 127.0.0.1 that nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

fn quick(url: &str) -> AlertmanagerOptions {
    AlertmanagerOptions {
        timeout: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..AlertmanagerOptions::new(url)
    }
}

fn notification(name: &str) -> Notification {
    Notification {
        labels: BTreeMap::from([
            ("alertname".to_owned(), name.to_owned()),
            ("severity".to_owned(), "warning".to_owned()),
        ]),
        annotations: BTreeMap::from([("summary".to_owned(), format!("{name} fired"))]),
        starts_at: "2024-05-01T12:00:00Z".parse().unwrap(),
        ends_at: "2024-05-01T12:05:30.25Z".parse().unwrap(),
        generator_url: None,
    }
}

const FLUSH: Duration = Duration::from_secs(5);

#[tokio::test]
async fn posts_the_v2_json_shape() {
    let (url, server) = serve(0, AxumStatus::OK).await;
    let alertmanager = Alertmanager::spawn(quick(&url)).unwrap();
    let mut linked = notification("SynFlood");
    linked.generator_url = Some("http://observer.example/alerts".to_owned());
    alertmanager.send(vec![linked, notification("ResetStorm")]);
    let counts = alertmanager.flush(FLUSH).await;
    assert_eq!(
        counts,
        DeliveryCounts {
            sent: 2,
            failed_attempts: 0,
            dropped: 0
        }
    );
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/api/v2/alerts");
    assert_eq!(
        received[0].content_type.as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(
        body,
        json!([
            {
                "labels": {"alertname": "SynFlood", "severity": "warning"},
                "annotations": {"summary": "SynFlood fired"},
                "startsAt": "2024-05-01T12:00:00Z",
                "endsAt": "2024-05-01T12:05:30.25Z",
                "generatorURL": "http://observer.example/alerts"
            },
            {
                "labels": {"alertname": "ResetStorm", "severity": "warning"},
                "annotations": {"summary": "ResetStorm fired"},
                "startsAt": "2024-05-01T12:00:00Z",
                "endsAt": "2024-05-01T12:05:30.25Z"
            }
        ])
    );
}

#[tokio::test]
async fn retries_5xx_until_delivered() {
    let (url, server) = serve(2, AxumStatus::SERVICE_UNAVAILABLE).await;
    let alertmanager = Alertmanager::spawn(quick(&url)).unwrap();
    alertmanager.send(vec![notification("A"), notification("B")]);
    let counts = alertmanager.flush(FLUSH).await;
    assert_eq!(
        counts,
        DeliveryCounts {
            sent: 2,
            failed_attempts: 2,
            dropped: 0
        }
    );
    let received = server.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| r.body == received[0].body));
}

#[tokio::test]
async fn retries_429() {
    let (url, server) = serve(1, AxumStatus::TOO_MANY_REQUESTS).await;
    let alertmanager = Alertmanager::spawn(quick(&url)).unwrap();
    alertmanager.send(vec![notification("A")]);
    let counts = alertmanager.flush(FLUSH).await;
    assert_eq!((counts.sent, counts.failed_attempts), (1, 1));
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn does_not_retry_a_rejected_payload() {
    let (url, server) = serve(1, AxumStatus::BAD_REQUEST).await;
    let alertmanager = Alertmanager::spawn(quick(&url)).unwrap();
    alertmanager.send(vec![
        notification("A"),
        notification("B"),
        notification("C"),
    ]);
    let counts = alertmanager.flush(FLUSH).await;
    assert_eq!(
        counts,
        DeliveryCounts {
            sent: 0,
            failed_attempts: 1,
            dropped: 3
        }
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn gives_up_on_an_unreachable_alertmanager() {
    let url = closed_port().await;
    let alertmanager = Alertmanager::spawn(AlertmanagerOptions {
        max_attempts: 2,
        ..quick(&url)
    })
    .unwrap();
    let start = Instant::now();
    alertmanager.send(vec![notification("A"), notification("B")]);
    assert!(start.elapsed() < Duration::from_millis(100));
    // The worker has not run yet: send only queued.
    assert_eq!(alertmanager.counts(), DeliveryCounts::default());
    let counts = alertmanager.flush(FLUSH).await;
    assert_eq!(
        counts,
        DeliveryCounts {
            sent: 0,
            failed_attempts: 2,
            dropped: 2
        }
    );
}

#[tokio::test]
async fn drops_and_counts_when_the_queue_is_full() {
    let (url, server) = serve(0, AxumStatus::OK).await;
    let alertmanager = Alertmanager::spawn(AlertmanagerOptions {
        queue: 1,
        ..quick(&url)
    })
    .unwrap();
    // On a current_thread runtime the worker cannot take anything off the queue until
    // this task yields, so the second and third batches find it full.
    alertmanager.send(vec![notification("A")]);
    alertmanager.send(vec![notification("B"), notification("C")]);
    alertmanager.send(vec![
        notification("D"),
        notification("E"),
        notification("F"),
    ]);
    assert_eq!(alertmanager.counts().dropped, 5);
    let counts = alertmanager.flush(FLUSH).await;
    assert_eq!(
        counts,
        DeliveryCounts {
            sent: 1,
            failed_attempts: 0,
            dropped: 5
        }
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn ignores_empty_batches() {
    let (url, server) = serve(0, AxumStatus::OK).await;
    let alertmanager = Alertmanager::spawn(quick(&url)).unwrap();
    alertmanager.send(Vec::new());
    assert_eq!(alertmanager.flush(FLUSH).await, DeliveryCounts::default());
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn keeps_a_path_prefix() {
    let (url, server) = serve(0, AxumStatus::OK).await;
    for base in [format!("{url}/am/"), format!("{url}/am")] {
        let alertmanager = Alertmanager::spawn(quick(&base)).unwrap();
        alertmanager.send(vec![notification("A")]);
        assert_eq!(alertmanager.flush(FLUSH).await.sent, 1);
    }
    let paths: Vec<_> = server.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/am/api/v2/alerts", "/am/api/v2/alerts"]);
}

#[tokio::test]
async fn flush_gives_up_at_its_deadline() {
    // Accepts connections (the kernel does) but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let alertmanager = Alertmanager::spawn(AlertmanagerOptions {
        timeout: Duration::from_secs(30),
        ..quick(&url)
    })
    .unwrap();
    alertmanager.send(vec![notification("A"), notification("B")]);
    let start = Instant::now();
    let counts = alertmanager.flush(Duration::from_millis(100)).await;
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        counts,
        DeliveryCounts {
            sent: 0,
            failed_attempts: 0,
            dropped: 2
        }
    );
}

#[test]
fn rejects_urls_that_are_not_http() {
    let error = Alertmanager::spawn(AlertmanagerOptions::new("ftp://am.example:9093"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"ftp\""), "{error}");
    assert!(error.contains("http://am.example:9093"), "{error}");

    // Parses, with "localhost" as the scheme.
    let error = Alertmanager::spawn(AlertmanagerOptions::new("localhost:9093"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("http://localhost:9093"), "{error}");

    let error = Alertmanager::spawn(AlertmanagerOptions::new("127.0.0.1:9093"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("http://127.0.0.1:9093"), "{error}");
}

#[test]
fn needs_a_runtime() {
    let error = Alertmanager::spawn(AlertmanagerOptions::new("http://127.0.0.1:9093"));
    assert!(matches!(error, Err(AlertmanagerError::NoRuntime)));
}

#[test]
fn endpoints() {
    for (base, expected) in [
        (
            "http://127.0.0.1:9093",
            "http://127.0.0.1:9093/api/v2/alerts",
        ),
        (
            "http://127.0.0.1:9093/",
            "http://127.0.0.1:9093/api/v2/alerts",
        ),
        ("https://host/am", "https://host/am/api/v2/alerts"),
        ("https://host/am/", "https://host/am/api/v2/alerts"),
        (" http://host:9093 ", "http://host:9093/api/v2/alerts"),
        ("http://host/api/v2/alerts/", "http://host/api/v2/alerts"),
        (
            "http://host/myapi/v2/alerts",
            "http://host/myapi/v2/alerts/api/v2/alerts",
        ),
    ] {
        assert_eq!(endpoint(base).unwrap().as_str(), expected, "{base}");
    }
}

#[test]
fn logs_hide_passwords() {
    let url = endpoint("http://user:secret@host:9093").unwrap();
    assert_eq!(shown(&url), "http://user:***@host:9093/api/v2/alerts");
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let delays: Vec<_> = (1..=6)
        .map(|retry| backoff(Duration::from_millis(500), Duration::from_secs(5), retry))
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
    assert_eq!(
        backoff(Duration::from_secs(1), Duration::from_secs(30), 100),
        Duration::from_secs(30)
    );
}

#[test]
fn excerpts_are_short_and_on_one_line() {
    assert_eq!(excerpt(b"bad\n  alerts\n", false), "bad alerts");
    assert_eq!(excerpt(b"", true), "");
    let long = excerpt(&[b'x'; 300], false);
    assert_eq!(long, format!("{} …", "x".repeat(BODY_EXCERPT)));
}
