//! Deterministic, offline OCI image builder.
//!
//! Tests and benchmarks need images of exact sizes and shapes (many small layers, one huge
//! layer, multi-platform indexes) without network access or a container engine. This module
//! writes them directly as an OCI image layout that `skopeo copy oci:<dir>:<tag>` can push. The
//! same [`ImageSpec`] always yields the same digests, so expectations can be computed up front
//! and runs can be compared.

mod blobs;
mod gzip;
mod layer;
mod oci;
mod tar;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

pub use self::blobs::digest_of;
use self::blobs::store_bytes;
use self::layer::{layer_seed, write_file_layer, write_layer};
pub use self::layer::{random_bytes, LAYER_FILE_NAME};
use self::oci::{Descriptor, ImageConfig, Index, Manifest, Platform, RootFs};
pub use self::oci::{
    ANNOTATION_REF_NAME, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_MANIFEST,
};

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Payload size of each layer, in order. Blob sizes are slightly larger (tar framing).
    pub layer_sizes: Vec<u64>,
    /// Distinguishes images with the same shape; equal seeds give equal content.
    pub seed: String,
    /// `(architecture, variant)` per platform. Empty means one linux/amd64 manifest; one entry a
    /// single manifest for that platform; two or more an image index whose manifests have
    /// distinct layer content.
    pub platforms: Vec<(String, Option<String>)>,
    /// Whether layers are `tar+gzip` (stored deflate blocks) rather than plain `tar`.
    pub gzip: bool,
    /// Plain `tar` layers of real files, after the generated ones: content that compresses the
    /// way a root filesystem does (see [`FileLayer`]).
    pub file_layers: Vec<FileLayer>,
}

/// A plain `tar` layer of the regular files under `root` (in name order, symbolic links, names
/// too long for a ustar header and files that would pass `max_bytes` left out), at most
/// `max_bytes` of content: the same bytes for the same tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayer {
    pub root: PathBuf,
    pub max_bytes: u64,
}

impl ImageSpec {
    /// A single-platform (linux/amd64) image of gzip layers.
    pub fn new(seed: impl Into<String>, layer_sizes: Vec<u64>) -> Self {
        Self {
            layer_sizes,
            seed: seed.into(),
            platforms: Vec::new(),
            gzip: true,
            file_layers: Vec::new(),
        }
    }

    /// Adds a layer of the files under `root`, up to `max_bytes` of them.
    pub fn with_file_layer(mut self, root: impl Into<PathBuf>, max_bytes: u64) -> Self {
        self.file_layers.push(FileLayer {
            root: root.into(),
            max_bytes,
        });
        self
    }

    /// Replaces the platform list, e.g. `[("amd64", None), ("arm64", Some("v8"))]`.
    pub fn with_platforms<A: Into<String>, V: Into<String>>(
        mut self,
        platforms: impl IntoIterator<Item = (A, Option<V>)>,
    ) -> Self {
        self.platforms = platforms
            .into_iter()
            .map(|(a, v)| (a.into(), v.map(Into::into)))
            .collect();
        self
    }

    /// Sets whether layers are gzip-wrapped.
    pub fn with_gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }
}

/// One blob of a built image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type as referenced by the manifest.
    pub media_type: String,
}

/// Result of [`build_image`].
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The OCI layout directory.
    pub layout_dir: PathBuf,
    /// Tag recorded in the layout's `index.json`.
    pub tag: String,
    /// Digest of what the tag points at: the manifest, or the index for multi-platform images.
    pub top_digest: String,
    /// Media type of the top object.
    pub top_media_type: String,
    /// Digests of the image manifests, in platform order.
    pub manifests: Vec<String>,
    /// Layers and configs, without duplicates, in manifest order.
    pub blobs: Vec<BlobInfo>,
    /// Sum of `blobs` sizes: what a client transfers besides manifests.
    pub total_blob_bytes: u64,
}

impl BuiltImage {
    /// `oci:<layout_dir>:<tag>`, the skopeo source reference.
    pub fn oci_reference(&self) -> String {
        format!("oci:{}:{}", self.layout_dir.display(), self.tag)
    }

    /// Path of a blob (or manifest) file inside the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.layout_dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The largest blob: the big layer a test is about.
    pub fn largest_blob(&self) -> &BlobInfo {
        self.blobs
            .iter()
            .max_by_key(|b| b.size)
            .expect("an image has at least its config blob")
    }

    /// Whether the top object is an image index.
    pub fn is_index(&self) -> bool {
        self.top_media_type == MEDIA_TYPE_INDEX
    }
}

/// Builds `spec` as an OCI layout in `layout_dir` (created if missing, must be empty) tagged
/// `tag`. Blocking and disk-bound; see [`build_image_async`] for async callers.
pub fn build_image(spec: &ImageSpec, layout_dir: &Path, tag: &str) -> Result<BuiltImage> {
    ensure!(!tag.is_empty(), "tag must not be empty");
    std::fs::create_dir_all(layout_dir).with_context(|| format!("creating {}", layout_dir.display()))?;
    ensure!(
        std::fs::read_dir(layout_dir)?.next().is_none(),
        "layout directory {} is not empty",
        layout_dir.display()
    );
    let blob_dir = layout_dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).with_context(|| format!("creating {}", blob_dir.display()))?;

    let platforms = if spec.platforms.is_empty() {
        vec![("amd64".to_owned(), None)]
    } else {
        spec.platforms.clone()
    };
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for (arch, variant) in &platforms {
        let platform = Platform {
            architecture: arch.clone(),
            os: "linux".to_owned(),
            variant: variant.clone(),
        };
        manifests.push(build_manifest(spec, &blob_dir, platform, &mut blobs)?);
    }

    let top = if manifests.len() == 1 {
        let mut only = manifests[0].clone();
        only.platform = None;
        only
    } else {
        let index = Index {
            schema_version: 2,
            media_type: MEDIA_TYPE_INDEX,
            manifests: manifests.clone(),
        };
        let (digest, size) = store_bytes(&blob_dir, &serde_json::to_vec(&index)?)?;
        Descriptor::plain(MEDIA_TYPE_INDEX, digest, size)
    };
    write_layout_files(layout_dir, &top, tag)?;

    let mut seen = HashSet::new();
    blobs.retain(|blob: &BlobInfo| seen.insert(blob.digest.clone()));
    Ok(BuiltImage {
        layout_dir: layout_dir.to_owned(),
        tag: tag.to_owned(),
        top_digest: top.digest.clone(),
        top_media_type: top.media_type.clone(),
        manifests: manifests.into_iter().map(|m| m.digest).collect(),
        total_blob_bytes: blobs.iter().map(|b| b.size).sum(),
        blobs,
    })
}

/// [`build_image`] on the blocking thread pool, so a runtime serving test daemons keeps running.
pub async fn build_image_async(spec: ImageSpec, layout_dir: PathBuf, tag: String) -> Result<BuiltImage> {
    tokio::task::spawn_blocking(move || build_image(&spec, &layout_dir, &tag))
        .await
        .context("image build task panicked")?
}

/// Writes the layers, config and manifest for one platform; returns the manifest descriptor
/// (with platform, ready for an index) and appends layer and config blobs to `blobs`.
fn build_manifest(
    spec: &ImageSpec,
    blob_dir: &Path,
    platform: Platform,
    blobs: &mut Vec<BlobInfo>,
) -> Result<Descriptor> {
    let platform_key = match &platform.variant {
        Some(variant) => format!("{}/{variant}", platform.architecture),
        None => platform.architecture.clone(),
    };
    let mut written = Vec::new();
    for (index, &size) in spec.layer_sizes.iter().enumerate() {
        let layer = write_layer(
            blob_dir,
            size,
            layer_seed(&spec.seed, &platform_key, index),
            spec.gzip,
        )
        .with_context(|| format!("writing layer {index} for {platform_key}"))?;
        written.push(layer);
    }
    for (index, files) in spec.file_layers.iter().enumerate() {
        let layer = write_file_layer(blob_dir, &files.root, files.max_bytes)
            .with_context(|| format!("writing file layer {index} from {}", files.root.display()))?;
        written.push(layer);
    }
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in written {
        blobs.push(BlobInfo {
            digest: layer.digest.clone(),
            size: layer.size,
            media_type: layer.media_type.into(),
        });
        layers.push(Descriptor::plain(layer.media_type, layer.digest, layer.size));
        diff_ids.push(layer.diff_id);
    }
    let config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        rootfs: RootFs {
            kind: "layers",
            diff_ids,
        },
        config: BTreeMap::new(),
    };
    let (config_digest, config_size) = store_bytes(blob_dir, &serde_json::to_vec(&config)?)?;
    blobs.push(BlobInfo {
        digest: config_digest.clone(),
        size: config_size,
        media_type: MEDIA_TYPE_CONFIG.into(),
    });

    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: Descriptor::plain(MEDIA_TYPE_CONFIG, config_digest, config_size),
        layers,
    };
    let (digest, size) = store_bytes(blob_dir, &serde_json::to_vec(&manifest)?)?;
    Ok(Descriptor {
        platform: Some(platform),
        ..Descriptor::plain(MEDIA_TYPE_MANIFEST, digest, size)
    })
}

/// Writes `oci-layout` and an `index.json` pointing `tag` at `top`.
fn write_layout_files(layout_dir: &Path, top: &Descriptor, tag: &str) -> Result<()> {
    std::fs::write(
        layout_dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .context("writing oci-layout")?;
    let mut entry = top.clone();
    entry.annotations = Some(BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), tag.to_owned())]));
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX,
        manifests: vec![entry],
    };
    std::fs::write(layout_dir.join("index.json"), serde_json::to_vec(&index)?).context("writing index.json")
}

#[cfg(test)]
mod tests;
