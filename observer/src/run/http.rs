//! The HTTP endpoints: /metrics for Prometheus, /alerts for people and alert links.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
    serve::ListenerExt as _,
};
use tokio::net::TcpListener;

use crate::export::{Exporter, text_format};
use crate::pipeline::Shared;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr`, saying what to do when it cannot.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another observer, or another exporter, already listens there: stop it, or set \
             metrics.listen in the config file)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {addr} for /metrics: {e}{hint}")
    })
}

/// Serves until the runtime stops.
pub fn serve(listener: TcpListener, shared: Shared, exporter: Arc<Exporter>) {
    let metrics_state = shared.clone();
    let router = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let (shared, exporter) = (metrics_state.clone(), exporter.clone());
                async move { metrics(&shared, &exporter, &headers) }
            }),
        )
        .route(
            "/alerts",
            get(move || {
                let shared = shared.clone();
                async move { alerts(&shared) }
            }),
        )
        .route("/", get(index));
    tokio::spawn(async move {
        // No Nagle: a response leaves in several writes, and a scraper's delayed ACK would
        // hold the last one back 40 ms.
        let listener = listener.tap_io(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("TCP_NODELAY on a metrics connection: {e}");
            }
        });
        if let Err(e) = axum::serve(listener, router).await {
            log::error!("the metrics server stopped: {e}");
        }
    });
}

/// CLOSE_WAIT sockets and half-open suspects a metrics snapshot lists: the oldest of each
/// gives its age gauge.
pub const METRICS_LISTED: usize = 1;

fn metrics(shared: &Shared, exporter: &Exporter, headers: &HeaderMap) -> Response {
    let om = exporter.openmetrics(shared.snapshot(METRICS_LISTED));
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if wants_openmetrics {
        (OPENMETRICS, om)
    } else {
        (PROMETHEUS_TEXT, text_format::from_openmetrics(&om))
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn alerts(shared: &Shared) -> Response {
    let active = shared.lock().active_alerts.clone();
    match serde_json::to_string_pretty(&active) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn index() -> &'static str {
    "observer: TCP connection states observed with eBPF\n\n\
     /metrics  Prometheus metrics (OpenMetrics when asked for, else the Prometheus text format)\n\
     /alerts   alerts of the built-in and configured rules now pending or firing (JSON)\n"
}
