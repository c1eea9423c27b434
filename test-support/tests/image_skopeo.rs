//! Generated OCI layouts must be accepted by an independent implementation (skopeo).

use std::path::Path;

use anyhow::{ensure, Result};
use damselfly_test_support::image::{
    build_image, digest_of, BuiltImage, ImageSpec, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use damselfly_test_support::skopeo;
use serde_json::Value;

/// Builds `spec` and reads its top-level object back with skopeo, which must see the digest the
/// builder computed (`what`: a manifest or an index).
async fn build_and_inspect(
    spec: ImageSpec,
    layout: &Path,
    tag: &str,
    what: &str,
) -> Result<(BuiltImage, Value)> {
    let image = build_image(&spec, layout, tag)?;
    let raw = skopeo::inspect_raw(&image.oci_reference()).await?;
    ensure!(
        digest_of(&raw) == image.top_digest,
        "skopeo saw a different {what}"
    );
    let top = serde_json::from_slice(&raw)?;
    Ok((image, top))
}

#[tokio::test]
async fn skopeo_reads_single_and_multi_platform_layouts() -> Result<()> {
    let dir = tempfile::tempdir()?;

    let spec = ImageSpec::new("inspect", vec![10_000, 20_000, 30_000]);
    let (_, manifest) = build_and_inspect(spec, &dir.path().join("one"), "v1", "manifest").await?;
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3));

    let spec =
        ImageSpec::new("inspect", vec![5_000]).with_platforms([("amd64", None), ("arm64", Some("v8"))]);
    let (multi, index) = build_and_inspect(spec, &dir.path().join("multi"), "v2", "index").await?;
    assert_eq!(index["mediaType"], MEDIA_TYPE_INDEX);

    // Full inspection also reads the config blob of the host platform's image.
    let summary = skopeo::inspect(&multi.oci_reference()).await?;
    assert_eq!(summary["Architecture"], "amd64");
    assert_eq!(
        summary["Digest"],
        multi.top_digest.as_str(),
        "skopeo reports the index digest"
    );

    let uncompressed = build_image(
        &ImageSpec::new("inspect", vec![1]).with_gzip(false),
        &dir.path().join("tar"),
        "v3",
    )?;
    let summary = skopeo::inspect(&uncompressed.oci_reference()).await?;
    assert_eq!(
        summary["Layers"],
        serde_json::json!([uncompressed.blobs[0].digest])
    );
    Ok(())
}
