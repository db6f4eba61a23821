//! Opt-in Prometheus endpoint (`--metrics 127.0.0.1:9464`): event, verdict and loss
//! counters, and `/healthz`. Served from the agent's own runtime; loopback unless
//! told otherwise.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub events: Family<TypeLabel, Counter>,
    pub verdicts: Family<VerdictLabel, Counter>,
    pub lost: Family<SourceLabel, Counter>,
    pub sockets: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sendsight");
        let events = Family::<TypeLabel, Counter>::default();
        let verdicts = Family::<VerdictLabel, Counter>::default();
        let lost = Family::<SourceLabel, Counter>::default();
        let sockets = Gauge::default();
        registry.register(
            "events",
            "Events delivered by the kernel, by type",
            events.clone(),
        );
        registry.register("verdicts", "Verdicts emitted, by verdict", verdicts.clone());
        registry.register(
            "lost",
            "Events or lines lost, by source (kernel program, decoder, sink, rate limit)",
            lost.clone(),
        );
        registry.register(
            "sockets_tracked",
            "Sockets the engine tracks now",
            sockets.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            events,
            verdicts,
            lost,
            sockets,
        }
    }
}

impl Metrics {
    pub fn event(&self, kind: &str) {
        self.events
            .get_or_create(&TypeLabel {
                r#type: kind.into(),
            })
            .inc();
    }

    pub fn verdict(&self, v: &str) {
        self.verdicts
            .get_or_create(&VerdictLabel { verdict: v.into() })
            .inc();
    }

    pub fn lost(&self, source: &str, n: u64) {
        self.lost
            .get_or_create(&SourceLabel {
                source: source.into(),
            })
            .inc_by(n);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry.lock().expect("registry lock"));
        out
    }
}

/// Binds first (so a bad address is an error at start-up), then serves forever.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<impl Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route(
            "/metrics",
            get({
                let m = metrics.clone();
                move || {
                    let m = m.clone();
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.render(),
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("sendsight: error: metrics endpoint stopped: {e}");
        }
    })
}
