//! The fleet view: server-rendered HTML pages under `/ui/`, for people.
//!
//! | route | what |
//! |---|---|
//! | `GET /ui/` (`?verdict=&q=&page=`) | counts by verdict and status, then every host, untrusted first |
//! | `GET /ui/hosts/{name}` | one host: verdict and reasons, flavors, the last verified quote's PCR values by bank, registration facts (EK certificate issuer, AK Name, TPM), a timeline |
//! | `GET /ui/flavors` | each flavor and how many hosts match it now |
//! | `GET /ui/events` | server-sent events from the change feed (the script reloads the page body); each stream ends when the server begins a graceful shutdown ([`crate::Closing`]) |
//! | `GET /ui/assets/ui.css`, `/ui/assets/ui.js` | the embedded style sheet and script |
//!
//! Same TLS and accounts as the API: `reader` (or `admin`) is enough, nothing here writes.
//! Every value is escaped by the template engine (maud): host names, reasons and flavor labels
//! come from machines that may be compromised. Every answer carries a strict
//! Content-Security-Policy; there is no inline script or style, and the pages are complete
//! without JavaScript (the script only refreshes them when a verdict changes).
//!
//! Lists (the fleet and flavors pages) come from the host list kept in memory
//! ([`crate::hostlist`]), caught up with the store before each page; the host page reads its
//! host, reports and facts ([`crate::store::Store::host_facts`]) directly.

mod pages;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::StreamExt as _;
use nodetrust_proto::trust::FeedItem;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiQuery};
use crate::state::AppState;

pub use pages::{fleet_page, FleetQuery, PAGE_SIZE};

/// The Content-Security-Policy of every `/ui/` answer.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                       form-action 'self'; frame-ancestors 'none'";

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// Most event streams open at once (each follows the change feed); more get 503.
const MAX_EVENT_STREAMS: usize = 64;
/// Reports drawn on a host's timeline.
const TIMELINE_REPORTS: i64 = 500;

static EVENT_STREAMS: AtomicUsize = AtomicUsize::new(0);

const READERS: &[Role] = &[Role::Admin, Role::Reader];

/// The `/ui` routes (merged into [`crate::app`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(fleet))
        .route("/ui/hosts/{name}", get(host))
        .route("/ui/flavors", get(flavors))
        .route("/ui/events", get(events))
        .route("/ui/assets/ui.css", get(css))
        .route("/ui/assets/ui.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
}

/// Adds the CSP and its companions to every `/ui/` answer (401 and errors included).
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn html(body: maud::Markup) -> Response {
    Html(body.into_string()).into_response()
}

async fn fleet(
    State(state): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Response, ApiError> {
    who.require(READERS)?;
    if q.q.as_ref().is_some_and(|s| s.len() > 253) {
        return Err(ApiError::bad_request(
            "too_long",
            "the name filter q is at most 253 characters",
        ));
    }
    let now = state.now_ms();
    let hosts = state.host_list.current(&state.store, now).await?;
    let labels = state.labeller_policy.get();
    Ok(html(fleet_page(&hosts, now, &q, labels)))
}

async fn host(
    State(state): State<AppState>,
    who: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    who.require(READERS)?;
    let now = state.now_ms();
    let Some(h) = state.store.host(&name).await? else {
        return Ok((StatusCode::NOT_FOUND, html(pages::not_found(&name))).into_response());
    };
    let reports = state.store.reports(Some(&h.name), TIMELINE_REPORTS).await?;
    let flavors = state.flavors.all().await?;
    // Deleted since it was read: shown without facts rather than as missing.
    let facts = state.store.host_facts(&h.name).await?.unwrap_or_default();
    Ok(html(pages::host_page(&pages::HostFacts {
        host: &h,
        now_ms: now,
        reports: &reports,
        flavors: &flavors,
        facts: &facts,
    })))
}

async fn flavors(State(state): State<AppState>, who: Caller) -> Result<Response, ApiError> {
    who.require(READERS)?;
    let flavors = state.flavors.all().await?;
    let now = state.now_ms();
    let hosts = state.host_list.current(&state.store, now).await?;
    Ok(html(pages::flavors_page(&flavors, &hosts, now)))
}

/// Decrements the open-stream count when an event stream ends.
struct StreamSlot;

impl Drop for StreamSlot {
    fn drop(&mut self) {
        EVENT_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn events(
    State(state): State<AppState>,
    who: Caller,
    closing: Option<Extension<crate::Closing>>,
) -> Result<Response, ApiError> {
    who.require(READERS)?;
    if EVENT_STREAMS.fetch_add(1, Ordering::SeqCst) >= MAX_EVENT_STREAMS {
        EVENT_STREAMS.fetch_sub(1, Ordering::SeqCst);
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live views open: the pages still work, reload them by hand\n",
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        return Ok(resp);
    }
    let slot = StreamSlot;
    let head = state.store.changes_head().await?;
    let feed = state.store.subscribe_from(head).await?;
    let stream = futures_util::stream::unfold((feed, slot), |(mut feed, slot)| async move {
        let event = match feed.next().await {
            Ok(FeedItem::Change(ev)) => Event::default().event("change").data(
                serde_json::json!({
                    "host": ev.host,
                    "trust": ev.trust.map(|t| t.as_str()),
                })
                .to_string(),
            ),
            Ok(FeedItem::Resync { .. }) => Event::default().event("resync").data("{}"),
            Err(e) => {
                // The script reconnects; the pages stay correct without the stream.
                tracing::warn!(error = %e, "fleet view event stream: change feed failed");
                return None;
            }
        };
        Some((Ok::<_, std::convert::Infallible>(event), (feed, slot)))
    });
    // A server shutting down ends the stream (the script reconnects to another replica or
    // to the restarted server) rather than holding the shutdown until its time limit.
    let stream = stream.take_until(async move {
        match closing {
            Some(Extension(c)) => c.closed().await,
            None => std::future::pending().await,
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}
