//! Readers that stop reading: a piece request on a connection with a tiny receive buffer that
//! never reads a byte of the answer.

use anyhow::Result;
use damselfly_core::api::TICKET_HEADER;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `addr` asking for `path` with `ticket`, that never reads; keep it to keep
/// the stall.
pub async fn stalled_reader(addr: &str, path: &str, ticket: &str) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(addr.parse()?).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{TICKET_HEADER}: {ticket}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}
