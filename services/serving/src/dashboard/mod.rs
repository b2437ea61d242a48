//! A service's dashboard: web pages about the model it serves and the data that model was
//! trained on, served by the service itself on a second port (`serve --dashboard-port`).
//!
//! A service opts in through [`Service::Dashboard`] (the trait is [`Dashboard`], defined with
//! [`Service`] in [`crate::service`] and re-exported here):
//! - `train` asks it for [`Dashboard::version_files`] (e.g. the training rows) and stores them
//!   in the new model version beside `model.json` and `metrics.json`, in the same atomic
//!   step, so the model, its metrics and the dashboard's data change together;
//! - when a model is loaded (at start and on SIGHUP) the library calls [`Dashboard::load`]
//!   and swaps model and dashboard in as one, so the pages always show the model the API
//!   serves; a dashboard that cannot be prepared leaves its pages and `/health` at 503 saying
//!   why, while the API keeps serving;
//! - its pages are [`Dashboard::routes`], handlers over [`Pages`] (the served model and its
//!   dashboard, and predictions as the API makes them); the library adds `/health`, the
//!   stylesheet, the request limits and panic catching of the API, and HTML error pages.
//!
//! Pages are server-rendered HTML ([maud]) with SVG charts drawn here ([`chart`]); nothing is
//! fetched from elsewhere and no script runs.

pub mod chart;
pub mod format;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::api::{now, ErrorBody, ModelInfo, API_VERSION};
use crate::error::ApiError;
use crate::http::{bounds, refuse_large_head, AppState, DASHBOARD_ENDPOINT};
use crate::loaded::Loaded;
use crate::provenance;

use crate::service::Service;

pub use crate::service::{Dashboard, DashboardView, NoDashboard, PageSource, Pages};

const STYLESHEET_PATH: &str = "/assets/dashboard.css";
const STYLESHEET: &str = include_str!("dashboard.css");
/// Scripts, styles and images only from this server; forms only to it; no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's router around the service's state: its pages, `/health`, the stylesheet,
/// the API's request limits and panic catching, and HTML error pages.
pub fn router<S: Service>(state: Arc<AppState<S>>) -> Router {
    let pages: Pages<S> = state.clone();
    let own = Router::new()
        .route("/health", get(health::<S>))
        .route("/_stcore/health", get(streamlit_health::<S>))
        .route(STYLESHEET_PATH, get(stylesheet))
        .with_state(state.clone());
    let routes = S::Dashboard::routes()
        .with_state(pages)
        .merge(own)
        .fallback(not_found::<S>);
    let in_flight = Arc::new(Semaphore::new(state.limits().dashboard_in_flight.max(1)));
    let stack = tower::ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(
            (state.clone(), in_flight),
            frame::<S>,
        ))
        .layer(bounds(state.limits(), html_error::<S>));
    routes.layer(stack)
}

/// The outermost step of every request to the dashboard: counted and timed (all under one
/// endpoint label), its head bounded, the pages in flight bounded, and an error without a
/// page of its own (axum's empty 405, say) given one.
async fn frame<S: Service>(
    State((state, in_flight)): State<(Arc<AppState<S>>, Arc<Semaphore>)>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let answer = async {
        let limit = state.limits().header_bytes;
        if let Some(refused) = refuse_large_head(limit, &request, html_error::<S>) {
            return refused;
        }
        if request.uri().path() == "/health" {
            return as_page::<S>(next.run(request).await);
        }
        // A crowd waits briefly or is told to come back, rather than queueing without end.
        let Ok(_drawing) = in_flight.try_acquire() else {
            return busy::<S>(state.limits().dashboard_in_flight);
        };
        // Drawn on the runtime's blocking threads (one, where `serve` runs it), so the
        // thread that accepts and reads requests is free to count and refuse them meanwhile.
        let handle = tokio::runtime::Handle::current();
        match tokio::task::spawn_blocking(move || handle.block_on(next.run(request))).await {
            Ok(drawn) => as_page::<S>(drawn),
            Err(e) => {
                tracing::error!(error = %e, "drawing a dashboard page failed");
                html_error::<S>(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::new(
                        "internal_error",
                        "the dashboard failed on this page; it is logged",
                    ),
                )
            }
        }
    };
    state
        .metrics()
        .observe(&method, DASHBOARD_ENDPOINT, answer)
        .await
}

/// The 503 page of a request past the pages in flight, with `Retry-After`.
fn busy<S: Service>(in_flight: usize) -> Response {
    let mut page = error_page::<S>(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        &format!("{in_flight} pages are being drawn, the most at once; try again in a moment"),
    );
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    page
}

/// The served model and its dashboard, or why there is none (a 503 page as a response), so
/// a page handler starts with `let view = dashboard::view(&pages)?;`.
pub fn view<S: Service>(pages: &Pages<S>) -> Result<DashboardView<S>, Unavailable<S>> {
    pages.view().map_err(|reason| Unavailable {
        reason,
        service: std::marker::PhantomData,
    })
}

/// Why the dashboard cannot draw its pages; answers as a 503 page saying so.
pub struct Unavailable<S> {
    pub reason: String,
    service: std::marker::PhantomData<fn() -> S>,
}

impl<S: Service> IntoResponse for Unavailable<S> {
    fn into_response(self) -> Response {
        error_page::<S>(
            StatusCode::SERVICE_UNAVAILABLE,
            "Nothing to show yet",
            &self.reason,
        )
    }
}

/// Predicts exactly as `POST /predict` does with `body` (the same JSON parsing, validation,
/// model call and prediction counting), with the model of `view`: the request as parsed, and
/// the answer.
pub fn predict<S: Service>(
    pages: &Pages<S>,
    view: &DashboardView<S>,
    body: &[u8],
) -> Result<(S::Request, S::Response), ApiError> {
    let item: S::Request = crate::json::parse(body)?;
    let response = pages.predict(&view.model, &item)?;
    Ok((item, response))
}

/// The decoded `name=value` pairs of a URI's query, in order (a name may repeat).
pub fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A whole page: the navigation, `main` under its heading, and a footer naming the model.
pub fn page<S: Service>(
    path: &str,
    heading: &str,
    model: Option<&Loaded<S::Model>>,
    main: Markup,
) -> Markup {
    let title = S::Dashboard::TITLE;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (heading) " · " (title) }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    p.site { (title) }
                    nav aria-label="Pages" {
                        ul {
                            @for (href, label) in S::Dashboard::PAGES {
                                li {
                                    a href=(href) aria-current=[(*href == path).then_some("page")] { (label) }
                                }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (heading) }
                    (main)
                }
                footer {
                    @if let Some(model) = model {
                        p {
                            "Model version " code { (model.version) }
                            @if let (Some(name), Some(version)) = (&model.info.registry_model, &model.info.registry_version) {
                                " · MLflow " (name) " version " (version)
                                @if let Some(alias) = &model.info.registry_alias { " (" (alias) ")" }
                            }
                            @if let Some(data) = model.metrics["data_file"].as_str().filter(|d| !d.is_empty()) {
                                " · trained on " code { (data) }
                                @if let Some(seed) = model.metrics[provenance::METRICS_KEY]["seed"].as_u64() {
                                    ", synthetic rows made by " code { "generate-data" } " (seed " (seed) "), not the public dataset"
                                }
                            }
                            " · " (S::MANIFEST.name) " " (API_VERSION)
                        }
                    }
                }
            }
        }
    }
}

/// A chart with its heading, its caption (the key numbers in words) and the table of the
/// numbers behind it, which a keyboard or screen reader user opens like any disclosure.
pub fn figure(id: &str, heading: &str, chart: Markup, caption: Markup, table: Markup) -> Markup {
    html! {
        figure id=(id) aria-labelledby={(id) "-heading"} {
            h2 id={(id) "-heading"} { (heading) }
            (chart)
            figcaption { (caption) }
            details {
                summary { "Table of the numbers" }
                div.table-wrap tabindex="0" role="region" aria-label={"Numbers of: " (heading)} { (table) }
            }
        }
    }
}

/// One key figure: its label, the value as written and, for tests and tools, the exact
/// number in `data-value` under the name `key`.
pub fn key_figure(key: &str, label: &str, text: &str, value: f64, note: Option<&str>) -> Markup {
    html! {
        div {
            dt { (label) }
            dd data-key=(key) data-value=(value) {
                (text)
                @if let Some(note) = note { small { (note) } }
            }
        }
    }
}

/// What a form field takes.
pub enum InputKind<'a> {
    Number {
        min: f64,
        max: f64,
        step: f64,
    },
    /// Free text; `list` names a `<datalist>` of suggestions.
    Text {
        list: Option<&'a str>,
    },
    Select(&'a [&'a str]),
}

/// A labelled form field, its hint, and its error beside it. The input's id is its name, so
/// an error summary can link to it.
pub struct Field<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub kind: InputKind<'a>,
    pub value: &'a str,
    pub hint: Option<&'a str>,
    pub error: Option<&'a str>,
    pub required: bool,
}

impl maud::Render for Field<'_> {
    fn render(&self) -> Markup {
        let hint_id = format!("{}-hint", self.name);
        let error_id = format!("{}-error", self.name);
        let described: Vec<&str> = [
            self.hint.map(|_| hint_id.as_str()),
            self.error.map(|_| error_id.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let described = (!described.is_empty()).then(|| described.join(" "));
        let invalid = self.error.map(|_| "true");
        html! {
            div.field {
                label for=(self.name) {
                    (self.label)
                    @if self.required { " (required)" }
                }
                @match &self.kind {
                    InputKind::Number { min, max, step } => {
                        input id=(self.name) name=(self.name) type="number" inputmode="decimal"
                            min=(min) max=(max) step=(step) value=(self.value)
                            required[self.required] aria-describedby=[described.as_deref()] aria-invalid=[invalid];
                    }
                    InputKind::Text { list } => {
                        input id=(self.name) name=(self.name) type="text" list=[*list] value=(self.value)
                            autocomplete="off" spellcheck="false"
                            required[self.required] aria-describedby=[described.as_deref()] aria-invalid=[invalid];
                    }
                    InputKind::Select(options) => {
                        select id=(self.name) name=(self.name)
                            aria-describedby=[described.as_deref()] aria-invalid=[invalid] {
                            @for option in options.iter() {
                                option value=(option) selected[*option == self.value] { (option) }
                            }
                        }
                    }
                }
                @if let Some(error) = self.error {
                    span.field-error id=(error_id) { "Error: " (error) }
                }
                @if let Some(hint) = self.hint {
                    span.hint id=(hint_id) { (hint) }
                }
            }
        }
    }
}

/// The list of what is wrong in a form, each linking to its field; `None` when nothing is.
pub fn error_summary(heading: &str, errors: &[(String, String, String)]) -> Option<Markup> {
    (!errors.is_empty()).then(|| {
        html! {
            div.notice.error role="alert" {
                p { strong { (heading) } }
                ul {
                    @for (name, label, message) in errors {
                        li { a href={"#" (name)} { (label) ": " (message) } }
                    }
                }
            }
        }
    })
}

/// An HTML answer with the dashboard's headers: never cached (the model can change), no
/// content from elsewhere.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A page that says what went wrong, with the navigation to go on from there.
pub fn error_page<S: Service>(status: StatusCode, heading: &str, message: &str) -> Response {
    let main = html! {
        div.notice role="alert" {
            p { (message) }
        }
        p { a href="/" { "Back to the overview" } }
    };
    respond(status, page::<S>("", heading, None, main))
}

fn error_heading(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::METHOD_NOT_ALLOWED => "Not a page to send to",
        StatusCode::REQUEST_TIMEOUT => "Too slow",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "Address too long",
        StatusCode::SERVICE_UNAVAILABLE => "Nothing to show yet",
        s if s.is_server_error() => "Something went wrong",
        _ => "Cannot show this",
    }
}

/// Errors the router raises (a panic, a timeout, headers too large) as pages.
fn html_error<S: Service>(status: StatusCode, body: ErrorBody) -> Response {
    error_page::<S>(status, error_heading(status), &body.message)
}

fn as_page<S: Service>(response: Response) -> Response {
    // An error without a page of its own (axum's empty 405, say) gets one; JSON stays JSON.
    let status = response.status();
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"text/html") || v.as_bytes().starts_with(b"application/json")
        });
    if (status.is_client_error() || status.is_server_error()) && !typed {
        let mut page = error_page::<S>(
            status,
            error_heading(status),
            status.canonical_reason().unwrap_or("error"),
        );
        for name in [header::ALLOW, header::RETRY_AFTER, header::CONNECTION] {
            if let Some(value) = response.headers().get(&name) {
                page.headers_mut().insert(name, value.clone());
            }
        }
        return page;
    }
    response
}

async fn not_found<S: Service>(uri: Uri) -> Response {
    let shown: String = uri.path().chars().take(80).collect();
    error_page::<S>(
        StatusCode::NOT_FOUND,
        "Page not found",
        &format!("There is no page at {shown}."),
    )
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        Body::from(STYLESHEET),
    )
        .into_response()
}

/// `/health` of the dashboard's port: 200 only when the pages can be drawn.
#[derive(Debug, Serialize)]
struct DashboardHealth {
    /// `healthy` or `unhealthy`.
    status: &'static str,
    version: &'static str,
    service: &'static str,
    dashboard: &'static str,
    model_loaded: bool,
    #[serde(flatten)]
    model: ModelInfo,
    /// Why the pages cannot be drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    timestamp: String,
}

/// Streamlit's own health path, which the old dashboard's probes and scripts ask: `ok` when
/// the pages can be drawn, as Streamlit answers; the reason otherwise.
async fn streamlit_health<S: Service>(State(state): State<Arc<AppState<S>>>) -> Response {
    match state.model.dashboard() {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn health<S: Service>(State(state): State<Arc<AppState<S>>>) -> Response {
    let model = state.model.get();
    let (status, reason) = match state.model.dashboard() {
        Ok(_) => (StatusCode::OK, None),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, Some(reason)),
    };
    let body = DashboardHealth {
        status: if status == StatusCode::OK {
            "healthy"
        } else {
            "unhealthy"
        },
        version: API_VERSION,
        service: S::MANIFEST.name,
        dashboard: S::Dashboard::TITLE,
        model_loaded: model.is_some(),
        model: model.map(|m| m.info.clone()).unwrap_or_default(),
        reason,
        timestamp: now(),
    };
    (status, Json(body)).into_response()
}
