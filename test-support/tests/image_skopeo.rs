//! Generated OCI layouts must be accepted by an independent implementation (skopeo).

use anyhow::{ensure, Result};
use damselfly_test_support::image::{
    build_image, digest_of, ImageSpec, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use damselfly_test_support::skopeo;

#[tokio::test]
async fn skopeo_reads_single_and_multi_platform_layouts() -> Result<()> {
    let dir = tempfile::tempdir()?;

    let single = build_image(
        &ImageSpec::new("inspect", vec![10_000, 20_000, 30_000]),
        &dir.path().join("one"),
        "v1",
    )?;
    let raw = skopeo::inspect_raw(&single.oci_reference()).await?;
    ensure!(
        digest_of(&raw) == single.top_digest,
        "skopeo saw a different manifest"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw)?;
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3));

    let multi = build_image(
        &ImageSpec::new("inspect", vec![5_000]).with_platforms([("amd64", None), ("arm64", Some("v8"))]),
        &dir.path().join("multi"),
        "v2",
    )?;
    let raw = skopeo::inspect_raw(&multi.oci_reference()).await?;
    ensure!(
        digest_of(&raw) == multi.top_digest,
        "skopeo saw a different index"
    );
    let index: serde_json::Value = serde_json::from_slice(&raw)?;
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
