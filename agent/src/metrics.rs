//! Opt-in Prometheus endpoint (`--metrics 127.0.0.1:9464`): event, verdict and loss
//! counters, and `/healthz`. Loopback unless told otherwise.
//!
//! A scraper is a network peer: it gets a thread and runtime of its own (nothing it
//! does can stall the ring reader), at most [`MAX_CONNECTIONS`] connections at a
//! time (more are closed at once and counted), and [`CONNECTION_DEADLINE`] per
//! connection, whatever it sends or fails to read.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Semaphore;

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
    /// Scraper connections closed on accept (over [`MAX_CONNECTIONS`]).
    pub refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sendsight");
        let events = Family::<TypeLabel, Counter>::default();
        let verdicts = Family::<VerdictLabel, Counter>::default();
        let lost = Family::<SourceLabel, Counter>::default();
        let sockets = Gauge::default();
        let refused = Counter::default();
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
        registry.register(
            "metrics_connections_refused",
            "Scraper connections closed on accept: more than the endpoint serves at once",
            refused.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            events,
            verdicts,
            lost,
            sockets,
            refused,
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

/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection is closed after this long, finished or not (a scrape takes ms).
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

/// Binds (so a bad address is an error at start-up), then serves on a thread of
/// its own until the process exits.
pub fn spawn(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sendsight-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => serve(l, metrics).await,
                    Err(e) => eprintln!("sendsight: error: metrics endpoint: {e}"),
                }
            })
        })?;
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("sendsight: warning: metrics endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refused.inc();
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            drop(slot);
        });
    }
}
