//! The hand-over between two versions of a service on one port (`serve --reuse-port`, as
//! `cargo xtask dev` does it): under a storm of new connections, once the next version
//! listens the old one gets no new connection, and stopped it resets none, even where the
//! kernel does not move a closing listener's queue to another socket
//! (`net.ipv4.tcp_migrate_req = 0`, Linux's default). The test runs in a network namespace of its own, where that setting is 0
//! whatever the machine's is, so it needs root and `unshare`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serving::server::{bind, serve, ConnectionLimits, PortSharing};
use serving_testkit::{skip, wait_until};

/// Set in the copy of this test that runs inside its own network namespace.
const IN_NAMESPACE: &str = "SERVING_TEST_IN_NETNS";

/// How many times a new version takes over the port while the storm goes on.
const HAND_OVERS: usize = 12;
/// Threads sending requests, each one at a time on a new connection.
const CLIENTS: usize = 4;

/// One request on a connection of its own, closed with a reset once the whole answer is read
/// (no TIME_WAIT left behind); an error for anything but a complete 200.
fn get(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    if answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("answered {answer:?}")))
    }
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        shutdown_timeout: Duration::from_secs(10),
        ..ConnectionLimits::default()
    }
}

/// A version of the service listening on `addr` beside any other: stopped by its sender.
struct Version {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    /// The requests it has answered.
    answered: Arc<AtomicU64>,
}

fn start(runtime: &tokio::runtime::Runtime, addr: SocketAddr) -> (Version, SocketAddr) {
    let _inside = runtime.enter();
    let listener = bind(addr, PortSharing::Newest).unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move {
            count.fetch_add(1, Ordering::SeqCst);
            "ok"
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = runtime.spawn(serve(listener, app, limits(), async {
        let _ = stopped.await;
    }));
    (
        Version {
            stop,
            done,
            answered,
        },
        addr,
    )
}

#[test]
fn once_the_next_version_listens_the_old_one_gets_no_new_connection_and_stops_resetting_none() {
    if !cfg!(target_os = "linux") {
        skip("the hand-over's steering is Linux's SO_ATTACH_REUSEPORT_CBPF");
        return;
    }
    if std::env::var_os(IN_NAMESPACE).is_none() {
        run_in_a_network_namespace(
            "once_the_next_version_listens_the_old_one_gets_no_new_connection_and_stops_resetting_none",
        );
        return;
    }
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .unwrap_or_else(|_| "0".into());
    assert_eq!(
        migrate.trim(),
        "0",
        "a new network namespace starts with tcp_migrate_req = 0; without it this test proves nothing"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut serving, addr) = start(&runtime, "127.0.0.1:0".parse().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = get(addr) {
                        failures.lock().unwrap().push(e.to_string());
                    }
                }
            })
        })
        .collect();

    for _ in 0..HAND_OVERS {
        // A few hundred connections reach the running version before the next one comes.
        let before = sent.load(Ordering::SeqCst);
        wait_until("the storm to go on", Duration::from_secs(30), || {
            (sent.load(Ordering::SeqCst) > before + 300).then_some(())
        });
        let (next, _) = start(&runtime, addr);
        let old = std::mem::replace(&mut serving, next);
        // Once the next version listens the old one gets no new connection: it answers at
        // most the requests the clients had sent it already, one each.
        let answered = old.answered.load(Ordering::SeqCst);
        let before = sent.load(Ordering::SeqCst);
        wait_until("the storm to go on", Duration::from_secs(30), || {
            (sent.load(Ordering::SeqCst) > before + 300).then_some(())
        });
        let late = old.answered.load(Ordering::SeqCst) - answered;
        assert!(
            late <= CLIENTS as u64,
            "the old version answered {late} requests after the next one listened"
        );
        let _ = old.stop.send(());
        runtime.block_on(old.done).unwrap();
    }
    let before = sent.load(Ordering::SeqCst);
    wait_until("the storm to go on", Duration::from_secs(30), || {
        (sent.load(Ordering::SeqCst) > before + 300).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let _ = serving.stop.send(());
    runtime.block_on(serving.done).unwrap();

    let failures = failures.lock().unwrap();
    let sent = sent.load(Ordering::SeqCst);
    eprintln!(
        "{sent} requests over {HAND_OVERS} hand-overs, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed over {HAND_OVERS} hand-overs, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Runs this test binary's `test` again inside a new network namespace with its loopback up,
/// and fails if it fails there; skips where that cannot be done.
fn run_in_a_network_namespace(test: &str) {
    if !rustix::process::geteuid().is_root() {
        skip("needs root for a network namespace of its own (where tcp_migrate_req is 0)");
        return;
    }
    for tool in ["unshare", "ip"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        if !found {
            skip(&format!("`{tool}` is not installed (util-linux, iproute2)"));
            return;
        }
    }
    let output = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("in a network namespace of its own:\n{stdout}{stderr}");
    if !output.status.success() && stderr.contains("unshare failed") {
        skip(&format!(
            "cannot make a network namespace here: {}",
            stderr.trim()
        ));
        return;
    }
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the test did not run: {stdout}"
    );
}
