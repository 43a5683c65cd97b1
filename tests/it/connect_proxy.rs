//! Test equipment: a tiny HTTP proxy on 127.0.0.1:0 that opens CONNECT tunnels and remembers
//! each one's target, and refuses (but remembers) anything else, so a test can tell whether
//! the client's traffic went through it.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The longest request head the proxy reads.
const MAX_HEAD: usize = 8192;

pub struct ConnectProxy {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    tunnels: Vec<String>,
    refused: Vec<String>,
}

impl ConnectProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(accept(listener, Arc::clone(&seen)));
        Self { port, seen, task }
    }

    /// `http://127.0.0.1:PORT`, as HTTPS_PROXY takes it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `host:port` of every tunnel opened, in order.
    pub fn tunnels(&self) -> Vec<String> {
        self.seen.lock().expect("not poisoned").tunnels.clone()
    }

    /// The request line of every request that was not a CONNECT.
    pub fn refused(&self) -> Vec<String> {
        self.seen.lock().expect("not poisoned").refused.clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(tunnel(client, Arc::clone(&seen)));
    }
}

async fn tunnel(mut client: TcpStream, seen: Arc<Mutex<Seen>>) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let mut words = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        seen.lock()
            .expect("not poisoned")
            .refused
            .push(request_line);
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let target = target.to_owned();
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    seen.lock().expect("not poisoned").tunnels.push(target);
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads up to the blank line ending the request head, one byte at a time so that nothing the
/// client sends after it (the TLS handshake) is swallowed.
async fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return None;
        }
        head.push(client.read_u8().await.ok()?);
    }
    String::from_utf8(head).ok()
}
