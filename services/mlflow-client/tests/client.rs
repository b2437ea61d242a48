//! The client against servers that answer as MLflow does, or fail as a network can: MLflow's
//! errors reach the caller unchanged, only a refused connection is retried, and requests carry
//! what MLflow expects.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlflow_client::{Client, ClientOptions, Error};
use serde_json::json;
use serving_testkit::net::{answering, free_port, read_request};
use serving_testkit::wait_until;

fn quick() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        retries: 3,
        first_backoff: Duration::from_millis(20),
    }
}

#[test]
fn mlflow_errors_reach_the_caller_as_they_are_with_the_call() {
    let (url, _) = answering(
        404,
        r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'x' not found"}"#,
    );
    let client = Client::new(&url, quick()).unwrap();
    let err = client.get_run("x").unwrap_err();
    assert_eq!(err.error_code(), Some("RESOURCE_DOES_NOT_EXIST"));
    let text = err.to_string();
    assert!(
        text.contains("GET /api/2.0/mlflow/runs/get at http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(
        text.contains("RESOURCE_DOES_NOT_EXIST: Run 'x' not found"),
        "{text}"
    );

    let (url, _) = answering(502, "<html>Bad Gateway</html>");
    let err = Client::new(&url, quick())
        .unwrap()
        .get_run("x")
        .unwrap_err();
    assert!(
        matches!(err, Error::Unexpected { status: 502, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("<html>Bad Gateway</html>"),
        "{err}"
    );
}

#[test]
fn a_missing_experiment_is_none_and_an_existing_model_is_fine() {
    let (url, _) = answering(
        404,
        r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Could not find experiment"}"#,
    );
    let client = Client::new(&url, quick()).unwrap();
    assert!(client
        .get_experiment_by_name("bankchurn")
        .unwrap()
        .is_none());

    let (url, _) = answering(
        400,
        r#"{"error_code": "RESOURCE_ALREADY_EXISTS", "message": "Registered Model (name=X) already exists."}"#,
    );
    let client = Client::new(&url, quick()).unwrap();
    client.create_registered_model("X").unwrap();
}

#[test]
fn a_server_error_is_not_retried() {
    let (url, connections) = answering(
        500,
        r#"{"error_code": "INTERNAL_ERROR", "message": "database is locked"}"#,
    );
    let client = Client::new(&url, quick()).unwrap();
    let err = client.create_run("1", "r", &[]).unwrap_err();
    assert_eq!(err.error_code(), Some("INTERNAL_ERROR"));
    assert_eq!(connections.load(Ordering::SeqCst), 1, "a 500 was retried");
}

#[test]
fn a_refused_connection_is_retried_then_reported() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let client = Client::new(&url, quick()).unwrap();
    let started = std::time::Instant::now();
    let err = client.health().unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(
        matches!(err, Error::Unreachable { attempts: 4, .. }),
        "{err:?}"
    );
    // Waited 20 + 40 + 80 ms between the four attempts.
    assert!(started.elapsed() >= Duration::from_millis(140));
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn a_server_that_comes_up_during_the_retries_is_reached() {
    let port = free_port();
    // The client's log, to see it retrying.
    let log = Arc::new(Mutex::new(Vec::new()));
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || LogWriter(writer.clone()))
        .finish();
    let server = std::thread::spawn(move || {
        // Up only once a connection was refused and the client said it would retry.
        wait_until("the client retrying", Duration::from_secs(10), || {
            String::from_utf8_lossy(&log.lock().unwrap())
                .contains("retrying")
                .then_some(())
        });
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        read_request(&mut stream).unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK")
            .unwrap();
    });
    let options = ClientOptions {
        first_backoff: Duration::from_millis(50),
        retries: 8,
        ..quick()
    };
    let client = Client::new(&format!("http://127.0.0.1:{port}"), options).unwrap();
    tracing::subscriber::with_default(subscriber, || client.health()).unwrap();
    server.join().unwrap();
}

/// Appends what the client logs to a shared buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_silent_server_times_out_once_without_a_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicU32::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream); // never answers
        }
    });
    let options = ClientOptions {
        timeout: Duration::from_millis(300),
        ..quick()
    };
    let client = Client::new(&url, options).unwrap();
    let started = std::time::Instant::now();
    let err = client.create_run("1", "r", &[]).unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The request may have been received: creating the run again could duplicate it.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn requests_carry_what_mlflow_expects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            requests.push(read_request(&mut stream).unwrap().text());
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
        }
        requests
    });
    let client = Client::new(&url, quick()).unwrap();
    client
        .upload_artifact(
            "mlflow-artifacts:/3/r1/artifacts",
            "model/model.json",
            b"{\"a\":1}",
        )
        .unwrap();
    client
        .set_registered_model_alias("BankChurn-Classifier", "champion", "2")
        .unwrap();
    let requests = seen.join().unwrap();
    assert!(
        requests[0].starts_with(
            "PUT /api/2.0/mlflow-artifacts/artifacts/3/r1/artifacts/model/model.json HTTP/1.1"
        ),
        "{}",
        requests[0]
    );
    assert!(requests[0].ends_with("{\"a\":1}"), "{}", requests[0]);
    assert!(requests[1].starts_with("POST /api/2.0/mlflow/registered-models/alias HTTP/1.1"));
    let body: serde_json::Value =
        serde_json::from_str(requests[1].split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"name": "BankChurn-Classifier", "alias": "champion", "version": "2"})
    );
}
