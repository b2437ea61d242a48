//! Sockets for tests: free ports, a raw HTTP/1.1 peer (one request read off a socket, a server
//! that gives every request the same answer), and what the kernel says of a connection, so a
//! test can wait for a server to have read or accepted something instead of sleeping.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A TCP port on loopback that nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("a local address")
        .port()
}

/// One HTTP/1.1 request as it arrived.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The request line and headers, through the blank line.
    pub head: String,
    /// The body, as long as its `Content-Length` says.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The request line, e.g. `POST /api/2.0/mlflow/runs/create HTTP/1.1`.
    pub fn line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// Head and body as text.
    pub fn text(&self) -> String {
        format!("{}{}", self.head, String::from_utf8_lossy(&self.body))
    }
}

/// Reads one request off `stream`: its head and its `Content-Length` body. `None` when the
/// peer closes or fails before the head is complete or the body arrives.
pub fn read_request(stream: &mut TcpStream) -> Option<RawRequest> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some(RawRequest { head, body })
}

/// A server on a loopback port that reads each request and answers every one with `status`
/// and the JSON `body`, closing the connection; its URL and the count of connections so far.
pub fn answering(status: u16, body: &'static str) -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let url = format!("http://{}", listener.local_addr().expect("a local address"));
    let connections = Arc::new(AtomicU32::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = read_request(&mut stream);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, connections)
}

/// One IPv4 TCP socket of this network namespace, from `/proc/net/tcp`.
struct Socket {
    local_port: u16,
    remote_port: u16,
    listening: bool,
    /// For a listening socket, connections waiting to be accepted; otherwise bytes received
    /// that the owner has not read yet.
    receive_queue: u32,
}

fn sockets() -> Vec<Socket> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let port = |address: &str| {
        let hex = address.rsplit(':').next()?;
        u16::from_str_radix(hex, 16).ok()
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, receive) = fields.get(4)?.split_once(':')?;
            Some(Socket {
                local_port: port(fields.get(1)?)?,
                remote_port: port(fields.get(2)?)?,
                listening: *fields.get(3)? == "0A",
                receive_queue: u32::from_str_radix(receive, 16).ok()?,
            })
        })
        .collect()
}

/// Connections waiting in the accept queue of the server listening on loopback `port`.
pub fn accept_backlog(port: u16) -> Option<u32> {
    sockets()
        .into_iter()
        .find(|s| s.listening && s.local_port == port)
        .map(|s| s.receive_queue)
}

/// Bytes `client` sent to the server on `server_port` that the server has not read yet;
/// `None` until the server's end of the connection exists.
pub fn unread_by_server(server_port: u16, client: &TcpStream) -> Option<u32> {
    let client_port = client.local_addr().ok()?.port();
    sockets()
        .into_iter()
        .find(|s| !s.listening && s.local_port == server_port && s.remote_port == client_port)
        .map(|s| s.receive_queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_tells_what_a_server_has_accepted_and_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(accept_backlog(port), Some(1));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(accept_backlog(port), Some(0));
        crate::wait_until(
            "the bytes in the server's queue",
            std::time::Duration::from_secs(5),
            || (unread_by_server(port, &client)? > 0).then_some(()),
        );
        let request = read_request(&mut server).unwrap();
        assert_eq!(request.line(), "GET / HTTP/1.1");
        assert_eq!(unread_by_server(port, &client), Some(0));
    }
}
