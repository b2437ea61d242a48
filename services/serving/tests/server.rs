//! The connection limits, panics and wrong answers, on real sockets, with a service whose
//! model misbehaves on demand.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serving::http::{router, AppState, RequestLimits};
use serving::loaded::Loaded;
use serving::server::{serve, ConnectionLimits};
use serving::{FieldError, Manifest, PredictionMeta, Service};
use serving_testkit::net::{accept_backlog, unread_by_server};
use serving_testkit::wait_until;
use utoipa::ToSchema;

struct Mock;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Ask {
    /// 13 panics; 0 gives no answer; 2 gives two.
    n: u32,
}

#[derive(Serialize, ToSchema)]
struct Answer {
    n: u32,
}

impl Service for Mock {
    const MANIFEST: Manifest = Manifest::new("mock", "title = \"Mock API\"\nport = 1\n");
    const DESCRIPTION: &'static str = "A model that misbehaves on demand.";
    const FEATURES: &'static [&'static str] = &["n"];
    const DEFAULT_ROWS: usize = 1;
    const REGISTERED_MODEL: &'static str = "Mock-Model";
    const PROMOTION_GATES: &'static [serving::promotion::Gate] = &[];
    type Model = ();
    type Request = Ask;
    type Response = Answer;
    type Dashboard = serving::dashboard::NoDashboard;

    fn generate_data(_: usize, _: u64, _: &mut dyn Write) -> anyhow::Result<()> {
        Ok(())
    }
    fn train(_: &Path, _: u64) -> anyhow::Result<((), serde_json::Value)> {
        Ok(((), serde_json::json!({})))
    }
    fn check_model(_: &()) -> anyhow::Result<()> {
        Ok(())
    }
    fn validate(_: &Ask) -> Result<(), FieldError> {
        Ok(())
    }
    fn predict(_: &(), asks: &[Ask], _: &PredictionMeta) -> Vec<Answer> {
        match asks.first().map(|a| a.n) {
            Some(13) => panic!("unlucky"),
            Some(0) => Vec::new(),
            Some(2) => vec![Answer { n: 1 }, Answer { n: 2 }],
            _ => asks.iter().map(|a| Answer { n: a.n }).collect(),
        }
    }
    fn example_request() -> Ask {
        Ask { n: 1 }
    }
}

fn app() -> axum::Router {
    router(AppState::<Mock>::new(Some(Loaded::in_memory((), "test"))))
}

/// A server on an ephemeral port; dropping the sender stops it.
struct Running {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(app: axum::Router, limits: ConnectionLimits) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    Running {
        port,
        stop: Some(stop),
        done,
    }
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        max_connections: 4096,
        shutdown_timeout: Duration::from_secs(60),
    }
}

/// Sends raw bytes and reads the answer until the server closes or 10 s pass.
fn exchange(port: u16, request: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn json_body(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_and_a_wrong_answer_count_are_json_500s_and_the_service_goes_on() {
    let server = start(app(), limits()).await;
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        for n in [13, 0, 2] {
            let answer = exchange(port, &post(&format!("{{\"n\": {n}}}")));
            assert!(answer.starts_with("HTTP/1.1 500"), "n={n}: {answer}");
            assert_eq!(json_body(&answer)["error"], "internal_error", "{answer}");
        }
        let batch = "{\"items\": [{\"n\": 5}]}";
        let answer = exchange(
            port,
            format!("POST /predict_batch HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{batch}", batch.len()).as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = exchange(port, &post("{\"n\": 7}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_under_a_slowloris_of_a_thousand_connections() {
    let server = start(app(), limits()).await;
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..1000)
            .map(|_| {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
                    .unwrap();
                c
            })
            .collect();
        let asked = Instant::now();
        let answer = exchange(
            port,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        println!(
            "/health under 1000 slowloris connections: {:?}",
            asked.elapsed()
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(held);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_the_cap_answers_503() {
    let server = start(
        app(),
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            max_connections: 4,
            shutdown_timeout: Duration::from_secs(60),
        },
    )
    .await;
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        // A head that never completes, and a connection that never speaks: both closed.
        let slow = exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n");
        assert!(!slow.contains("200 OK"), "{slow}");
        assert_eq!(exchange(port, b""), "");
        // A kept-alive connection is closed once idle, after its answer.
        let kept = exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(kept.starts_with("HTTP/1.1 200"), "{kept}");

        // Four connections hold the four permits; a fifth is refused. An earlier connection's
        // task gives its permit back a moment after its socket closes, so on a busy machine one
        // of the four may be the one refused and the fifth served: then the four go and come
        // again. A server without the cap never refuses, and this waits in vain.
        let refused = wait_until(
            "a fifth connection refused while four are held",
            Duration::from_secs(20),
            || {
                let held: Vec<TcpStream> = (0..4)
                    .map(|_| {
                        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        c.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
                        c
                    })
                    .collect();
                // The server has accepted all four.
                wait_until(
                    "the four connections accepted",
                    Duration::from_secs(10),
                    || (accept_backlog(port)? == 0).then_some(()),
                );
                let fifth = exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
                drop(held);
                fifth.starts_with("HTTP/1.1 503").then_some(fifth)
            },
        );
        assert_eq!(json_body(&refused)["error"], "overloaded");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_a_json_408() {
    let state = AppState::<Mock>::from_dir(
        std::env::temp_dir().join("no-model-here"),
        RequestLimits {
            body_timeout: Duration::from_millis(300),
            ..RequestLimits::default()
        },
        false,
    );
    let server = start(router(state), limits()).await;
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        let answer = exchange(
            port,
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"n\":",
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert_eq!(json_body(&answer)["error"], "timeout");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_within_the_deadline_despite_a_half_sent_request() {
    let mut server = start(
        app(),
        ConnectionLimits {
            shutdown_timeout: Duration::from_millis(300),
            ..limits()
        },
    )
    .await;
    let port = server.port;
    let half = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
            .unwrap();
        c
    })
    .await
    .unwrap();
    // In flight: the server has read what was sent of the request.
    let half = tokio::task::spawn_blocking(move || {
        wait_until(
            "the server reading the half-sent request",
            Duration::from_secs(10),
            || (unread_by_server(port, &half)? == 0).then_some(()),
        );
        half
    })
    .await
    .unwrap();
    drop(server.stop.take());
    // A hang guard, not a timing assertion: with a 60 s header timeout only the deadline
    // can end it this soon.
    tokio::time::timeout(Duration::from_secs(20), &mut server.done)
        .await
        .expect("serve returned after shutdown")
        .unwrap();
    drop(half);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_arriving_in_pieces_share_a_budget_and_past_it_get_a_503_with_retry_after() {
    let state = AppState::<Mock>::from_dir(
        std::env::temp_dir().join("no-model-here"),
        RequestLimits {
            buffered_body_bytes: 4096,
            ..RequestLimits::default()
        },
        false,
    );
    let server = start(router(state), limits()).await;
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        let body = format!("{{\"n\": 1{}}}", " ".repeat(100));
        let open = || {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                c,
                "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            c
        };
        // Each piece read by the server before the next is sent: a body in pieces.
        let send = |c: &mut TcpStream, piece: &str| {
            c.write_all(piece.as_bytes()).unwrap();
            wait_until("the server reading a piece", Duration::from_secs(10), || {
                (unread_by_server(port, c)? == 0).then_some(())
            });
        };
        let answer = |c: &mut TcpStream| {
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        };
        let rest = |c: &mut TcpStream| {
            c.write_all(&body.as_bytes()[2..]).unwrap();
            answer(c)
        };
        // Two bodies in pieces: the first to buffer takes the whole budget (4 KiB).
        let mut clients = [open(), open()];
        for c in &mut clients {
            send(c, &body[..1]);
            send(c, &body[1..2]);
        }
        // The other is answered at once, before its body is complete.
        let refused = wait_until("one client refused", Duration::from_secs(10), || {
            clients.iter().position(|c| {
                c.set_nonblocking(true).unwrap();
                let ready = c.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
                c.set_nonblocking(false).unwrap();
                ready
            })
        });
        let shed = answer(&mut clients[refused]);
        assert!(shed.starts_with("HTTP/1.1 503"), "{shed}");
        assert!(shed.to_lowercase().contains("\r\nretry-after: 1\r\n"), "{shed}");
        assert_eq!(json_body(&shed)["error"], "overloaded", "{shed}");
        // The one within the budget is read to its end (and then told there is no model).
        let kept = rest(&mut clients[1 - refused]);
        assert_eq!(json_body(&kept)["error"], "model_not_loaded", "{kept}");
        // Its share is given back: the next body in pieces fits again.
        let mut next = open();
        send(&mut next, &body[..1]);
        send(&mut next, &body[1..2]);
        let answered = rest(&mut next);
        assert_eq!(json_body(&answered)["error"], "model_not_loaded", "{answered}");
    })
    .await
    .unwrap();
}
