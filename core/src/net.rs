//! Socket settings shared by the servers that send pieces (the edge and every agent's upload
//! port).
//!
//! A piece server bounds how many pieces it sends at once so that each goes out fast: a
//! receiver that has a piece early can pass it on early. The bound only holds if a send ends
//! when its bytes have left, not when they are queued in the kernel: with default buffers a
//! socket takes megabytes, every "finished" upload keeps draining, and a popular peer ends up
//! sharing its link between a hundred connections, each piece taking seconds.

use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Unsent bytes a piece connection may queue in the kernel. Bytes in flight are not limited
/// (the congestion window grows as usual); only the backlog behind them is. 64 KiB is 13 ms at
/// 40 Mbit/s: small next to a piece, and a quarter of the wake-ups and writes of 16 KiB, which
/// cost the daemons a fifth more CPU in a 16-host swarm for the same time (`bench swarm`).
pub const PIECE_UNSENT_LIMIT: u32 = 64 * 1024;

/// Chunk size for streaming a piece: with [`PIECE_UNSENT_LIMIT`], a send holds its slot until
/// all but its last chunk has been handed to the network.
pub const PIECE_CHUNK: usize = 64 * 1024;

/// A sealed piece cut into the [`PIECE_CHUNK`]s it is sent in (views of it, not copies).
pub fn piece_chunks(sealed: bytes::Bytes) -> impl Iterator<Item = bytes::Bytes> {
    let len = sealed.len();
    (0..len)
        .step_by(PIECE_CHUNK)
        .map(move |at| sealed.slice(at..(at + PIECE_CHUNK).min(len)))
}

/// Applies [`PIECE_UNSENT_LIMIT`] (`TCP_NOTSENT_LOWAT`) to a connection.
pub fn limit_unsent(socket: &impl AsFd) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_notsent_lowat(PIECE_UNSENT_LIMIT)
}

/// [`limit_unsent`] for every accepted connection of a piece server.
/// A failure is ignored: the connection works, it only queues more (Linux always accepts it).
pub fn limit_unsent_on_accept(socket: &impl AsFd) {
    let _ = limit_unsent(socket);
}

/// A rate limit shared by every send of a server, as a virtual clock: each chunk books
/// `len / rate` seconds after the previous booking, so sends are paced evenly. The clock may
/// lag real time by [`PACER_SLACK`] at most: a sender woken late by a busy machine catches up
/// within that, and an idle server saves up no more burst than that. Waits shorter than
/// [`PACER_MIN_WAIT`] are not slept (timers are that coarse); the booking stands, so the
/// next chunk waits for both.
///
/// Why a server would pace itself below its link's rate: a link kept full queues in the
/// kernel or the switch, and everything else leaving the host waits behind that queue too:
/// requests for pieces, TCP acknowledgements of what the host is receiving, scheduler
/// answers. Measured on 40 Mbit/s links with 100 ms of queue, a swarm's round trips grew from
/// well under a millisecond to 30-160 ms, and each piece took several of them.
/// How far the pacer's clock may fall behind real time.
pub const PACER_SLACK: Duration = Duration::from_millis(10);
/// Shorter waits are not slept.
pub const PACER_MIN_WAIT: Duration = Duration::from_millis(1);

pub struct Pacer {
    bytes_per_sec: u64,
    next: Mutex<Instant>,
}

impl Pacer {
    /// `None` for 0 (unlimited).
    pub fn new(bytes_per_sec: u64) -> Option<Pacer> {
        (bytes_per_sec > 0).then(|| Pacer {
            bytes_per_sec,
            next: Mutex::new(Instant::now()),
        })
    }

    /// Books `len` bytes; returns how long to wait before sending them.
    pub fn book(&self, len: u64) -> Duration {
        let Ok(mut next) = self.next.lock() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let start = (*next).max(now.checked_sub(PACER_SLACK).unwrap_or(now));
        *next = start + Duration::from_secs_f64(len as f64 / self.bytes_per_sec as f64);
        let wait = start.saturating_duration_since(now);
        if wait < PACER_MIN_WAIT {
            Duration::ZERO
        } else {
            wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_bookings_by_their_size_and_saves_little_burst() {
        assert!(Pacer::new(0).is_none());
        let pacer = Pacer::new(1_000_000).unwrap();
        assert_eq!(pacer.book(500_000), Duration::ZERO);
        let second = pacer.book(500_000);
        assert!(
            second > Duration::from_millis(450) && second <= Duration::from_millis(500),
            "{second:?}"
        );
        let third = pacer.book(1);
        assert!(third > Duration::from_millis(950), "{third:?}");
        // Idle for long: only chunks starting within PACER_SLACK (10 KB here) go at once.
        let idle = Pacer::new(1_000_000).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(idle.book(5_000), Duration::ZERO, "within the slack");
        assert_eq!(idle.book(10_000), Duration::ZERO, "starts within the slack");
        let after = idle.book(1_000);
        assert!(
            after >= Duration::from_millis(4),
            "{after:?}: more than the slack saved up"
        );
        // Waits under a millisecond are not slept, but they count towards the next one.
        let fine = Pacer::new(1_000_000).unwrap();
        let waits: Vec<Duration> = (0..30).map(|_| fine.book(100)).collect();
        assert!(waits.iter().filter(|w| w.is_zero()).count() > 1, "{waits:?}");
        assert!(waits.iter().any(|w| *w >= PACER_MIN_WAIT), "{waits:?}");
    }

    #[test]
    fn the_limit_is_set_on_a_tcp_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        limit_unsent(&client).unwrap();
        let got = socket2::SockRef::from(&client).tcp_notsent_lowat().unwrap();
        assert_eq!(got, PIECE_UNSENT_LIMIT);
    }
}
