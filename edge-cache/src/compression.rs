//! When the edge compresses: per blob as its transfer starts, then per piece.
//!
//! A blob is compressed when its source's mode says so (`compression.mode`, or the first rule
//! whose prefix matches) and, in `auto`, only while it pays: the machine's CPUs are busy less
//! than `max_cpu`, and this edge compresses faster than `min_rate_mbit` (measured on the pieces
//! it compressed in the last minute). Under load new blobs go uncompressed; a blob already
//! being compressed goes on (its table would otherwise change format half-way for nothing).
//!
//! The first piece is the sample: it is compressed as it is and split into 2 and 4 byte planes
//! (`core::encoding`: numbers such as model weights compress only so), and the smallest wins
//! for the whole blob; when none saves `min_saving`, the rest of the blob is sealed as it is (a
//! gzip layer costs three compressions of one piece). After that each piece is kept
//! compressed only when it saves `min_saving`. Both decisions are made in piece order (pieces
//! are sealed one at a time, `store/ingest.rs`), so a blob's state needs no lock.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use damselfly_core::encoding::{self, Frame};
use damselfly_core::TaskKey;

use crate::config::{CompressionConfig, CompressionMode};
use crate::metrics::Metrics;

/// How long a measured compression rate is believed: after that, `auto` tries again.
const RATE_FRESH: Duration = Duration::from_secs(60);
/// How often the machine's CPU use is sampled.
const CPU_EVERY: Duration = Duration::from_secs(1);

pub struct Compression {
    config: CompressionConfig,
    /// Input bytes per second one core compressed, smoothed over pieces (0: none yet).
    rate: AtomicU64,
    /// When `rate` was last measured, in ms since `started`.
    rate_at_ms: AtomicU64,
    started: Instant,
    /// The machine's CPU use over the last sample, in thousandths.
    cpu_busy: AtomicU32,
    metrics: Arc<Metrics>,
}

/// One blob's state: sampling its first piece, compressing, or sealing as it is; and the byte
/// planes its pieces are split into when compressed.
pub struct BlobCompression {
    state: AtomicU8,
    planes: AtomicU8,
}

const PLAIN: u8 = 0;
const SAMPLING: u8 = 1;
const COMPRESSING: u8 = 2;

/// A piece as sealed: its bytes, and its sealed length when compressed (0 when not).
pub struct SealedPiece {
    pub bytes: Vec<u8>,
    pub compressed: u32,
}

impl Compression {
    pub fn new(config: CompressionConfig, metrics: Arc<Metrics>) -> Arc<Compression> {
        Arc::new(Compression {
            config,
            rate: AtomicU64::new(0),
            rate_at_ms: AtomicU64::new(0),
            started: Instant::now(),
            cpu_busy: AtomicU32::new(0),
            metrics,
        })
    }

    /// Samples the machine's CPU use every second for `auto`, while the runtime runs.
    pub fn watch_cpu(self: &Arc<Self>) {
        if self.config.mode == CompressionMode::Off && self.config.rules.is_empty() {
            return;
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = cpu_times();
            loop {
                tokio::time::sleep(CPU_EVERY).await;
                let Some(this) = this.upgrade() else { return };
                let now = cpu_times();
                if let (Some((busy0, total0)), Some((busy1, total1))) = (last, now) {
                    let total = total1.saturating_sub(total0).max(1);
                    let busy = busy1.saturating_sub(busy0).min(total);
                    this.cpu_busy
                        .store((busy * 1000 / total) as u32, Ordering::Relaxed);
                }
                last = now;
            }
        });
    }

    /// The state a new blob from `source` (see `CompressionConfig::rules`) starts in.
    pub fn for_blob(&self, source: &str) -> BlobCompression {
        let decision = match self.config.mode_for(source) {
            CompressionMode::Off => Err("off"),
            CompressionMode::Always => Ok(()),
            CompressionMode::Auto if !self.pays() => Err("skipped_for_load"),
            CompressionMode::Auto => Ok(()),
        };
        let state = match decision {
            Ok(()) => SAMPLING,
            Err(why) => {
                self.metrics.compression_decision(why);
                PLAIN
            }
        };
        BlobCompression {
            state: AtomicU8::new(state),
            planes: AtomicU8::new(1),
        }
    }

    /// Whether compressing pays now (see the module's doc).
    fn pays(&self) -> bool {
        let cpu = self.cpu_busy.load(Ordering::Relaxed) as f64 / 1000.0;
        let measured_ms = self.rate_at_ms.load(Ordering::Relaxed);
        let fresh =
            measured_ms > 0 && self.elapsed_ms().saturating_sub(measured_ms) < RATE_FRESH.as_millis() as u64;
        let rate_mbit = self.rate.load(Ordering::Relaxed) * 8 / 1_000_000;
        cpu < self.config.max_cpu && !(fresh && rate_mbit < self.config.min_rate_mbit)
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Seals piece `index` of a blob, compressed when the blob's state and the piece's saving
    /// say so. Runs on a blocking thread.
    pub fn seal(&self, blob: &BlobCompression, key: &TaskKey, index: u64, mut plain: Vec<u8>) -> SealedPiece {
        let logical = plain.len() as u64;
        let state = blob.state.load(Ordering::Relaxed);
        if state != PLAIN {
            let tried: &[u8] = match state {
                SAMPLING => &encoding::PLANES,
                _ => &[blob.planes.load(Ordering::Relaxed)],
            };
            // Each plane count is compressed; only the smallest frame is sealed, if it pays.
            let mut best: Option<(u8, Frame)> = None;
            for &planes in tried {
                let started = Instant::now();
                let frame = Frame::compress(&plain, planes);
                self.note_rate(logical, started.elapsed());
                if let Ok(frame) = frame {
                    if best
                        .as_ref()
                        .is_none_or(|(_, b)| frame.sealed_len() < b.sealed_len())
                    {
                        best = Some((planes, frame));
                    }
                }
            }
            let best = best.filter(|(_, frame)| frame.saves(plain.len(), self.config.min_saving));
            match (best, state) {
                (Some((planes, frame)), _) => {
                    let bytes = frame.seal(key, index);
                    if state == SAMPLING {
                        blob.planes.store(planes, Ordering::Relaxed);
                        blob.state.store(COMPRESSING, Ordering::Relaxed);
                        self.metrics.compression_decision("compressed");
                    }
                    self.metrics
                        .compression_stored("zstd", logical, bytes.len() as u64);
                    let compressed = bytes.len() as u32;
                    return SealedPiece { bytes, compressed };
                }
                (None, SAMPLING) => {
                    blob.state.store(PLAIN, Ordering::Relaxed);
                    self.metrics.compression_decision("sampled_out");
                }
                (None, _) => {}
            }
        }
        key.seal(index, &mut plain);
        self.metrics
            .compression_stored("identity", logical, plain.len() as u64);
        SealedPiece {
            bytes: plain,
            compressed: 0,
        }
    }

    fn note_rate(&self, bytes: u64, took: Duration) {
        self.metrics.compression_seconds.inc_by(took.as_secs_f64());
        let rate = (bytes as f64 / took.as_secs_f64().max(1e-6)) as u64;
        let old = self.rate.load(Ordering::Relaxed);
        let smoothed = if old == 0 { rate } else { (old * 7 + rate) / 8 };
        self.rate.store(smoothed, Ordering::Relaxed);
        self.rate_at_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }
}

/// (busy, total) jiffies of all CPUs, from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CompressionRule;
    use damselfly_core::{ClusterSecret, Digest};

    fn policy(config: CompressionConfig) -> Arc<Compression> {
        Compression::new(config, Arc::new(Metrics::new()))
    }

    fn key() -> TaskKey {
        ClusterSecret::new(&[5; 32]).unwrap().task_key(&Digest::of(b"x"))
    }

    fn text() -> Vec<u8> {
        b"usr/share/doc/copyright "
            .iter()
            .cycle()
            .take(256 * 1024)
            .copied()
            .collect()
    }

    fn noise() -> Vec<u8> {
        use rand::{RngCore, SeedableRng};
        let mut bytes = vec![0u8; 256 * 1024];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut bytes);
        bytes
    }

    fn decisions(p: &Compression) -> String {
        p.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("damselfly_edge_compression_decisions_total"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_first_piece_decides_and_then_each_piece_must_save_its_share() {
        let p = policy(CompressionConfig::default());
        let blob = p.for_blob("registry.local/app");
        let first = p.seal(&blob, &key(), 0, text());
        assert!(first.compressed > 0 && (first.compressed as usize) == first.bytes.len());
        // Compressing: a piece that would not save stays as it is, the next one is tried again.
        let noisy = p.seal(&blob, &key(), 1, noise());
        assert_eq!((noisy.compressed, noisy.bytes.len()), (0, 256 * 1024 + 16));
        assert!(p.seal(&blob, &key(), 2, text()).compressed > 0);

        let gzip_like = p.for_blob("registry.local/app");
        assert_eq!(p.seal(&gzip_like, &key(), 0, noise()).compressed, 0);
        assert_eq!(
            p.seal(&gzip_like, &key(), 1, text()).compressed,
            0,
            "sampled out: the rest is not tried"
        );
        // Numbers whose high bytes repeat: the sample finds two byte planes pay, and keeps them.
        let weights: Vec<u8> = noise()
            .chunks(2)
            .flat_map(|pair| [pair[0], [0x20, 0x21, 0xa0, 0xa1][pair[1] as usize % 4]])
            .collect();
        let numbers = p.for_blob("registry.local/model");
        assert!(p.seal(&numbers, &key(), 0, weights.clone()).compressed > 0);
        assert_eq!(numbers.planes.load(Ordering::Relaxed), 2);
        assert!(p.seal(&numbers, &key(), 1, weights).compressed > 0);
        let counts = decisions(&p);
        assert!(counts.contains(r#"decision="compressed"} 2"#), "{counts}");
        assert!(counts.contains(r#"decision="sampled_out"} 1"#), "{counts}");
    }

    #[test]
    fn modes_rules_and_load_decide_for_new_blobs() {
        let config = CompressionConfig {
            rules: vec![
                CompressionRule {
                    prefix: "ghcr.io/org/models".into(),
                    mode: CompressionMode::Always,
                },
                CompressionRule {
                    prefix: "https://files.example/".into(),
                    mode: CompressionMode::Off,
                },
            ],
            ..CompressionConfig::default()
        };
        let p = policy(config);
        let tries = |source: &str| p.seal(&p.for_blob(source), &key(), 0, text()).compressed > 0;
        assert!(tries("docker.io/library/debian"));
        assert!(!tries("https://files.example/big.bin"));
        // A busy machine: auto skips new blobs, a rule saying always does not.
        p.cpu_busy.store(950, Ordering::Relaxed);
        assert!(!tries("docker.io/library/debian"));
        assert!(tries("ghcr.io/org/models/llm"));
        p.cpu_busy.store(100, Ordering::Relaxed);
        // A slow compressor (measured below min_rate_mbit) is as good as a busy machine...
        p.rate.store(1_000_000, Ordering::Relaxed);
        p.rate_at_ms.store(p.elapsed_ms(), Ordering::Relaxed);
        assert!(!tries("docker.io/library/debian"));
        // ...until its measure is a minute old.
        let p2 = Compression {
            started: Instant::now() - RATE_FRESH - Duration::from_secs(1),
            ..Arc::into_inner(policy(CompressionConfig::default())).unwrap()
        };
        p2.rate.store(1_000_000, Ordering::Relaxed);
        p2.rate_at_ms.store(1, Ordering::Relaxed);
        assert!(p2.pays());
        let counts = decisions(&p);
        assert!(counts.contains(r#"decision="skipped_for_load"} 2"#), "{counts}");
        assert!(counts.contains(r#"decision="off"} 1"#), "{counts}");
        let off = policy(CompressionConfig {
            mode: CompressionMode::Off,
            ..CompressionConfig::default()
        });
        assert_eq!(off.seal(&off.for_blob("x/y"), &key(), 0, text()).compressed, 0);
    }

    #[test]
    fn cpu_times_read_the_machine() {
        let (busy, total) = cpu_times().unwrap();
        assert!(total > 0 && busy <= total);
    }
}
