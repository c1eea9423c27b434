//! Pieces that pay for it travel and rest compressed: an uncompressed tar layer of real files
//! crosses the edge→agent wire as zstd, a gzip layer as it is, and skopeo and containerd get
//! every byte right; a file fetched with `peer-agent get` likewise. A compressed piece damaged
//! on the wire is caught by its hash like any other, and an edge with compression off serves
//! tables every agent reads (format 1), while one holding compressed pieces tells a format-1
//! caller why it cannot serve it.

mod common;

use std::path::{Path, PathBuf};

use common::{agent_binary, downloaded_from, sha256, sum, Region, MIB};
use damselfly_core::encoding;
use damselfly_test_support::containerd::{Containerd, CtrPullOptions};
use damselfly_test_support::file_server::FileServer;
use damselfly_test_support::image::{
    BlobInfo, BuiltImage, ImageSpec, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR,
};
use damselfly_test_support::net::{loopback_client, text};

const ALWAYS: &str = "[compression]\nmode = \"always\"\n";

/// Text that ships on every Debian machine (perl-base is essential), else other text trees.
fn real_files() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/perl-base",
        "/usr/lib/aarch64-linux-gnu/perl-base",
        "/usr/share/perl",
        "/usr/include",
        "/usr/share",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .expect("a tree of real files")
}

/// The share zstd saves on `bytes`, piece by piece as the edge compresses them.
fn zstd_saving(bytes: &[u8], piece: usize) -> f64 {
    let compressed: usize = bytes
        .chunks(piece)
        .map(|c| encoding::Frame::compress(c, 1).unwrap().sealed_len())
        .sum();
    1.0 - compressed as f64 / bytes.len() as f64
}

/// The image's first layer of `media_type`.
fn layer(image: &BuiltImage, media_type: &str) -> BlobInfo {
    let found = image.blobs.iter().find(|b| b.media_type == media_type);
    found.cloned().unwrap_or_else(|| panic!("no {media_type} layer"))
}

fn blob_bytes(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// Bytes of the pieces of `digest` that crossed the edge proxy.
fn wire_bytes(region: &Region, digest: &str) -> u64 {
    let proxy = region.edge_proxy.as_ref().unwrap();
    let prefix = format!("/pieces/{digest}/");
    proxy
        .requests()
        .iter()
        .filter(|r| r.path.starts_with(&prefix))
        .map(|r| r.bytes)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tar_layer_travels_compressed_a_gzip_layer_as_it_is_and_both_pull_right() {
    let region = Region::start_with_edge_proxy(&["eu/z1/r1", "eu/z1/r2"], ALWAYS).await;
    let spec = ImageSpec::new("compress", vec![3 * MIB]).with_file_layer(real_files(), 4 * MIB);
    let image = region.push(spec, "demo/compress:v1").await;
    let (tar, gzip) = (
        layer(&image, MEDIA_TYPE_LAYER_TAR),
        layer(&image, MEDIA_TYPE_LAYER_GZIP),
    );
    assert!(tar.size > 3 * MIB, "the file layer holds {} bytes", tar.size);

    // skopeo through the first agent: every piece comes from the edge, through the proxy.
    let digest = region.pull_via(0, "demo/compress:v1", None).await;
    let digest = digest.unwrap_or_else(|e| panic!("skopeo: {e:#}\n{}", region.logs()));
    assert_eq!(digest, image.top_digest);
    let (wire, gzip_wire) = (
        wire_bytes(&region, &tar.digest),
        wire_bytes(&region, &gzip.digest),
    );

    // containerd through the second agent (from the edge or its neighbour): containerd checks
    // every digest itself.
    let containerd = Containerd::start().await.unwrap();
    containerd
        .write_hosts_toml(&region.registry.addr(), &region.agents[1].url())
        .unwrap();
    let reference = format!("{}/demo/compress:v1", region.registry.addr());
    let pulled = containerd.pull(&reference, &CtrPullOptions::default()).await;
    let pulled = pulled.unwrap_or_else(|e| panic!("ctr: {e:#}\n{}", region.logs()));
    assert_eq!(pulled, image.top_digest);

    // The tar layer's pieces are compressed, the gzip layer's are not.
    let client = loopback_client().unwrap();
    let table = |digest: String| {
        let url = format!(
            "{}/api/v1/tasks/{digest}?repo=demo/compress&format=2",
            region.edge.url()
        );
        let client = client.clone();
        async move {
            damselfly_test_support::edge::task_at(&client, &url)
                .await
                .unwrap()
        }
    };
    let tar_table = table(tar.digest.clone()).await.table;
    let gzip_table = table(gzip.digest.clone()).await.table;
    let compressed = (0..tar_table.layout.count())
        .filter(|&i| tar_table.is_compressed(i))
        .count() as u64;
    assert!(
        compressed * 10 >= tar_table.layout.count() * 9,
        "{compressed} of {} tar pieces compressed",
        tar_table.layout.count()
    );
    assert!(
        gzip_table.zstd.is_empty(),
        "a gzip layer's pieces are not compressed"
    );

    // On the wire: below the layer's size by at least zstd's saving on it, less 5 points.
    let saving = zstd_saving(
        &blob_bytes(&image.layout_dir, &tar.digest),
        tar_table.layout.piece_length as usize,
    );
    let wire_share = wire as f64 / tar.size as f64;
    eprintln!(
        "tar layer {} B: zstd saves {:.1}%; {wire} B on the wire ({:.1}% of it)",
        tar.size,
        saving * 100.0,
        wire_share * 100.0
    );
    assert!(saving > 0.3, "real files compress: {saving}");
    assert!(wire > 0, "the pieces came from the edge\n{}", region.logs());
    assert!(
        wire_share <= 1.0 - (saving - 0.05),
        "{wire} wire bytes for a {} B layer saving {saving}",
        tar.size
    );
    assert!(
        gzip_wire >= gzip.size,
        "the gzip layer travels whole: {gzip_wire} of {}",
        gzip.size
    );

    // At rest too: a compressed piece fills the start of its slot and the rest stays a hole,
    // on the edge and on the agents.
    let hex = tar.digest.trim_start_matches("sha256:");
    let on_disk = |path: PathBuf| {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (meta.len(), meta.blocks() * 512)
    };
    for path in [
        region.edge.data_dir().join(format!("blobs/{hex}.sealed")),
        region.agents[0].data_dir().join(format!("tasks/{hex}.sealed")),
    ] {
        let (len, allocated) = on_disk(path.clone());
        assert!(len > tar.size, "{}: {len} B", path.display());
        assert!(
            (allocated as f64) < tar.size as f64 * (1.0 - saving + 0.05),
            "{}: {allocated} B on disk for a {} B layer",
            path.display(),
            tar.size
        );
    }

    let edge = region.edge.metrics().await.unwrap();
    let stored = |encoding: &str| {
        let label = format!("encoding=\"{encoding}\"");
        edge.sum("damselfly_edge_compression_stored_bytes_total", &[&label])
    };
    let logical_zstd = edge.sum(
        "damselfly_edge_compression_logical_bytes_total",
        &["encoding=\"zstd\""],
    );
    assert!(stored("zstd") > 0.0 && stored("zstd") < logical_zstd);
    assert!(stored("identity") >= gzip.size as f64);
    let decided = |d: &str| {
        let label = format!("decision=\"{d}\"");
        edge.sum("damselfly_edge_compression_decisions_total", &[&label])
    };
    assert!(decided("compressed") >= 1.0 && decided("sampled_out") >= 1.0);
    let sent_zstd = edge.sum("damselfly_edge_piece_sent_bytes_total", &["encoding=\"zstd\""]);
    assert!(sent_zstd > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_is_fetched_with_fewer_wire_bytes_and_a_piece_damaged_on_the_wire_is_refetched() {
    let files = FileServer::start().await.unwrap();
    let edge_toml = format!("{ALWAYS}[files]\nallow = [\"{}\"]\n", files.prefix());
    let region = Region::start_with_edge_proxy(&["eu/z1/r1"], &edge_toml).await;
    // A text-like file: lines of numbers, as a dataset or a weights dump in text would be.
    let data: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("{i:08},{:.6}\n", (i as f64).sin()).into_bytes())
        .take(6 * MIB as usize)
        .collect();
    let url = files.put("dataset.csv", &data).unwrap();
    let digest = sha256(&data);
    // The first piece sent to the agent has one byte flipped on the way.
    region.edge_proxy.as_ref().unwrap().corrupt_blob_at(100);

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("dataset.csv");
    let output = tokio::process::Command::new(agent_binary())
        .args(["get", &url, "-o"])
        .arg(&target)
        .args(["--agent", &region.agents[0].url(), "--digest", &digest])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "get: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        region.logs()
    );
    assert!(std::fs::read(&target).unwrap() == data, "the file differs");

    let proxy = region.edge_proxy.as_ref().unwrap();
    let wire = proxy.blob_bytes();
    eprintln!("{} B file, {wire} B of pieces on the wire", data.len());
    assert!(
        (wire as f64) < data.len() as f64 * 0.7,
        "{wire} wire bytes for {} B",
        data.len()
    );
    let agents = region.agent_metrics().await;
    assert!(
        wire > 0 && downloaded_from(&agents, "origin") == 0.0,
        "{}",
        region.logs()
    );
    let bad = sum(&agents, "damselfly_agent_bad_pieces_total", &[]);
    assert_eq!(bad, 1.0, "the damaged piece was refused\n{}", region.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_from_before_compression_read_an_edge_with_it_off_and_are_told_why_otherwise() {
    let spec = || ImageSpec::new("formats", vec![MIB]).with_file_layer(real_files(), 2 * MIB);
    let tar_of = |image: &BuiltImage| layer(image, MEDIA_TYPE_LAYER_TAR).digest;
    let client = loopback_client().unwrap();

    // Compression off: an agent that names no format (as before compression) gets a table of
    // format 1, and the agents of today pull as ever.
    let off = Region::start_with_edge_toml(
        Default::default(),
        &["eu/z1/r1"],
        "[compression]\nmode = \"off\"\n",
    )
    .await;
    let image = off.push(spec(), "demo/formats:v1").await;
    let digest = off.pull_via(0, "demo/formats:v1", None).await.unwrap();
    assert_eq!(digest, image.top_digest);
    let tar = tar_of(&image);
    let old = off.edge.task(&client, "demo/formats", &tar).await.unwrap();
    assert!(old.table.zstd.is_empty() && old.table.format() == 1);
    let json = text(client.get(format!("{}/api/v1/tasks/{tar}?repo=demo/formats", off.edge.url()))).await;
    assert!(!json.contains("zstd"), "{json}");

    // Compression on: a format-1 caller is refused with the reason, a format-2 caller served.
    let on = Region::start_with_edge_toml(Default::default(), &["eu/z1/r1"], ALWAYS).await;
    let image = on.push(spec(), "demo/formats:v1").await;
    let digest = on.pull_via(0, "demo/formats:v1", None).await.unwrap();
    assert_eq!(digest, image.top_digest);
    let tar = tar_of(&image);
    let refused = client
        .get(format!("{}/api/v1/tasks/{tar}?repo=demo/formats", on.edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 501);
    let body = refused.text().await.unwrap();
    assert!(body.contains("piece format 2"), "{body}");
    let url = format!("{}/api/v1/tasks/{tar}?repo=demo/formats&format=2", on.edge.url());
    let new = damselfly_test_support::edge::task_at(&client, &url)
        .await
        .unwrap();
    assert_eq!(new.table.format(), 2);
}
