//! The `damselfly-abuse` setup's attackers: while the swarm pulls, idle connections that never
//! send a request, and stalled readers that ask the edge for pieces and never read a byte.
//!
//! They run in this process (the root namespace, on the unshaped control link), so they cost the
//! hosts' links nothing: what the swarm loses is what the edge lets them take. The stalled reads
//! are of a blob of their own, pushed with the image, so the swarm's blobs are as cold at the edge
//! as in the clean run.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use damselfly_core::api::task::{piece_path, task_path};
use damselfly_core::api::{TaskAnswer, TICKET_HEADER};
use damselfly_core::Digest;
use socket2::{Domain, Socket, Type};

/// Pieces each stalled reader asks for on its connection, pipelined: the first send blocks once
/// the small receive window is full, and holds whatever the edge gives a send.
const PIECES_PER_READER: u64 = 4;
/// The stalled readers' receive buffer: the kernel's minimum, so nothing drains into it.
const TINY_RECEIVE_BUFFER: usize = 4096;

/// The open sockets; dropping it closes them all.
pub struct Abuse {
    _idle: Vec<TcpStream>,
    _stalled: Vec<Socket>,
}

/// Opens `idle` connections to the edge at `edge` (`ip:port`) and `stalled` readers of the
/// blob `digest` in `repository` (at least `stalled` pieces long).
pub async fn start(
    edge: SocketAddr,
    repository: &str,
    digest: &Digest,
    idle: usize,
    stalled: usize,
) -> Result<Abuse> {
    damselfly_test_support::net::raise_open_files(idle + stalled + 512)?;
    let ticket = ready_task(edge, repository, digest, stalled as u64).await?;
    let mut readers = Vec::with_capacity(stalled);
    for n in 0..stalled as u64 {
        let socket = Socket::new(Domain::for_address(edge), Type::STREAM, None)?;
        socket.set_recv_buffer_size(TINY_RECEIVE_BUFFER)?;
        socket
            .connect(&edge.into())
            .with_context(|| format!("stalled reader {n} connecting to {edge}"))?;
        let mut requests = String::new();
        for i in 0..PIECES_PER_READER {
            let index = (n + i) % stalled as u64;
            requests.push_str(&format!(
                "GET {}?repo={repository} HTTP/1.1\r\nHost: {edge}\r\n{TICKET_HEADER}: {ticket}\r\n\r\n",
                piece_path(digest, index)
            ));
        }
        (&socket).write_all(requests.as_bytes())?;
        readers.push(socket);
    }
    let mut connections = Vec::with_capacity(idle);
    for n in 0..idle {
        let stream = TcpStream::connect_timeout(&edge, Duration::from_secs(5))
            .with_context(|| format!("idle connection {n} to {edge}"))?;
        connections.push(stream);
    }
    Ok(Abuse {
        _idle: connections,
        _stalled: readers,
    })
}

/// Asks the (lab, `insecure`) edge for the task until its table lists `pieces` pieces; returns
/// the ticket the piece requests present.
async fn ready_task(edge: SocketAddr, repository: &str, digest: &Digest, pieces: u64) -> Result<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://{edge}{}?repo={repository}", task_path(digest));
    for _ in 0..200 {
        let answer: TaskAnswer = client.get(&url).send().await?.error_for_status()?.json().await?;
        if answer.table.pieces.len() as u64 >= pieces {
            return Ok(answer.ticket);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow!(
        "the edge listed fewer than {pieces} pieces of {digest} after 20 s"
    ))
}
