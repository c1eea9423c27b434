//! Socket settings shared by the servers that send pieces (the edge and every agent's upload
//! port).
//!
//! A piece server bounds how many pieces it sends at once so that each goes out fast: a
//! receiver that has a piece early can pass it on early. The bound only holds if a send ends
//! when its bytes have left, not when they are queued in the kernel: with default buffers a
//! socket takes megabytes, every "finished" upload keeps draining, and a popular peer ends up
//! sharing its link between a hundred connections, each piece taking seconds.

use std::os::fd::AsFd;

/// Unsent bytes a piece connection may queue in the kernel. Bytes in flight are not limited
/// (the congestion window grows as usual); only the backlog behind them is.
pub const PIECE_UNSENT_LIMIT: u32 = 16 * 1024;

/// Chunk size for streaming a piece: with [`PIECE_UNSENT_LIMIT`], a send holds its slot until
/// all but its last chunk has been handed to the network.
pub const PIECE_CHUNK: usize = 16 * 1024;

/// Applies [`PIECE_UNSENT_LIMIT`] (`TCP_NOTSENT_LOWAT`) to a connection.
pub fn limit_unsent(socket: &impl AsFd) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_notsent_lowat(PIECE_UNSENT_LIMIT)
}

/// [`limit_unsent`] for every accepted connection (`listener.tap_io(limit_unsent_on_accept)`).
/// A failure is ignored: the connection works, it only queues more (Linux always accepts it).
pub fn limit_unsent_on_accept(socket: &mut impl AsFd) {
    let _ = limit_unsent(socket);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_set_on_a_tcp_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        limit_unsent(&client).unwrap();
        let got = socket2::SockRef::from(&client).tcp_notsent_lowat().unwrap();
        assert_eq!(got, PIECE_UNSENT_LIMIT);
    }
}
