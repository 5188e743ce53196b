//! Tests only: a plain HTTP/1.1 server on 127.0.0.1 standing in for an API server, each
//! request answered by a handler of (method, target with query, body) → (status, JSON),
//! and a kube client of it. Fakes of what the API server holds build on it.

use std::net::SocketAddr;

use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads one request from `conn`: (method, target with query, body); `None` when the peer
/// closed before it was whole.
async fn request(conn: &mut tokio::net::TcpStream) -> Option<(String, String, String)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).to_string();
    let mut line = head.split_whitespace();
    let method = line.next()?.to_owned();
    let target = line.next()?.to_owned();
    Some((method, target, body))
}

/// Serves `answer` on a free port of 127.0.0.1 until the test ends; its address.
pub async fn serve<F>(answer: F) -> SocketAddr
where
    F: Fn(&str, &str, &str) -> (u16, String) + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Some((method, target, body)) = request(&mut conn).await else {
                    return;
                };
                let (code, text) = answer(&method, &target, &body);
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    text.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(text.as_bytes()).await;
            });
        }
    });
    addr
}

/// A kube client of the server at `addr`.
pub fn client(addr: SocketAddr) -> Client {
    Client::try_from(Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}
