//! Operations: liveness, readiness, metrics.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::problem::{ApiError, ErrorCode, Problem};
use crate::{ApiTags, HttpState};

/// The service's health.
#[derive(Debug, Object)]
#[oai(rename = "Health")]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The process is up.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The store and the secret source answer.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// `not_ready`: the detail names the dependency that does not answer.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

#[derive(ApiResponse)]
enum MetricsResponse {
    /// Prometheus text exposition format.
    #[oai(status = 200)]
    Ok(PlainText<String>),
}

/// The Operations API.
pub struct OperationsApi;

#[OpenApi(tag = "ApiTags::Operations")]
impl OperationsApi {
    /// Liveness
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health { status: "ok".to_owned() }))
    }

    /// Readiness
    ///
    /// 200 when the session store, the secret source and the user directory (when configured) answer,
    /// else 503 naming what does not.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&Arc<HttpState>>) -> ReadyResponse {
        let readiness = state.sessions.readiness().await;
        if readiness.is_ready() {
            return ReadyResponse::Ready(Json(Health { status: "ready".to_owned() }));
        }
        let mut failing = Vec::new();
        if let Err(error) = &readiness.store {
            tracing::warn!(%error, "readiness: session store");
            failing.push("session store unavailable");
        }
        if let Err(error) = &readiness.secrets {
            tracing::warn!(%error, "readiness: secret source");
            failing.push("secret source unavailable");
        }
        if let Err(error) = &readiness.directory {
            tracing::warn!(%error, "readiness: user directory");
            failing.push("user directory unavailable");
        }
        let problem = ApiError::new(ErrorCode::NotReady, failing.join("; ")).to_problem();
        ReadyResponse::NotReady(Json(problem), 1)
    }

    /// Metrics
    ///
    /// Prometheus text: sessions issued, verifications by outcome and reason, refreshes, revocations,
    /// live sessions, and the request latency histogram.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&Arc<HttpState>>) -> MetricsResponse {
        let text = state.metrics.as_ref().map(|render| render()).unwrap_or_default();
        MetricsResponse::Ok(PlainText(text))
    }
}
