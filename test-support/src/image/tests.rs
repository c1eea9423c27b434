use super::*;

fn build(spec: &ImageSpec) -> Result<(tempfile::TempDir, BuiltImage)> {
    let dir = tempfile::tempdir()?;
    let image = build_image(spec, &dir.path().join("layout"), "v1")?;
    Ok((dir, image))
}

/// Every file under blobs/sha256 must hash to its own name.
fn assert_content_addressed(image: &BuiltImage) -> Result<()> {
    for entry in std::fs::read_dir(image.layout_dir.join("blobs/sha256"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let content = std::fs::read(entry.path())?;
        assert_eq!(digest_of(&content), format!("sha256:{name}"), "blob {name}");
    }
    Ok(())
}

#[test]
fn same_spec_gives_same_digests() -> Result<()> {
    let spec = ImageSpec::new("determinism", vec![70_000, 0, 1 << 20]);
    let (_a, first) = build(&spec)?;
    let (_b, second) = build(&spec)?;
    assert_eq!(first.top_digest, second.top_digest);
    assert_eq!(first.blobs, second.blobs);
    assert_content_addressed(&first)?;

    let (_c, other) = build(&ImageSpec::new("other-seed", spec.layer_sizes.clone()))?;
    assert_ne!(first.top_digest, other.top_digest);
    Ok(())
}

#[test]
fn single_platform_layout_is_complete() -> Result<()> {
    let (_dir, image) = build(&ImageSpec::new("single", vec![1000, 2000, 3000]))?;
    assert_eq!(image.top_media_type, MEDIA_TYPE_MANIFEST);
    assert_eq!(image.manifests, vec![image.top_digest.clone()]);
    assert_eq!(image.blobs.len(), 4, "three layers and a config");
    assert_eq!(
        image.total_blob_bytes,
        image.blobs.iter().map(|b| b.size).sum::<u64>()
    );

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.layout_dir.join("index.json"))?)?;
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], image.top_digest.as_str());
    assert_eq!(entry["annotations"][ANNOTATION_REF_NAME], "v1");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.blob_path(&image.top_digest))?)?;
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_GZIP);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(
        image.blob_path(manifest["config"]["digest"].as_str().unwrap_or("")),
    )?)?;
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(3));
    assert_content_addressed(&image)
}

#[test]
fn multi_platform_builds_an_index_with_distinct_layers() -> Result<()> {
    let spec =
        ImageSpec::new("multi", vec![4096, 8192]).with_platforms([("amd64", None), ("arm64", Some("v8"))]);
    let (_dir, image) = build(&spec)?;
    assert!(image.is_index());
    assert_eq!(image.manifests.len(), 2);
    assert_eq!(image.blobs.len(), 6, "layers differ per platform");

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.blob_path(&image.top_digest))?)?;
    assert_eq!(index["mediaType"], MEDIA_TYPE_INDEX);
    assert_eq!(index["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(index["manifests"][1]["platform"]["variant"], "v8");
    assert_content_addressed(&image)
}

#[test]
fn uncompressed_layers_use_tar_media_type() -> Result<()> {
    let (_dir, image) = build(&ImageSpec::new("plain", vec![10]).with_gzip(false))?;
    assert_eq!(image.blobs[0].media_type, MEDIA_TYPE_LAYER_TAR);
    assert_eq!(
        image.blobs[0].size,
        512 + 512 + 1024,
        "header, padded payload, trailer"
    );
    Ok(())
}

#[test]
fn refuses_non_empty_layout_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("stray"), b"x")?;
    assert!(build_image(&ImageSpec::new("x", vec![1]), dir.path(), "v1").is_err());
    Ok(())
}
