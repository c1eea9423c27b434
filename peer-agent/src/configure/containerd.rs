//! containerd: `certs.d/<registry>/hosts.toml` (and `_default` for every other registry), and
//! `config_path` in `config.toml` so containerd's CRI plugin reads that directory at all.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use toml_edit::{value, Array, DocumentMut, Item, Table};

/// Where hosts directories live when nothing says otherwise.
const DEFAULT_CERTS_DIR: &str = "/etc/containerd/certs.d";

/// The CRI plugin's key for the registry settings: config version 3 (containerd 2) moved them
/// to the images plugin; version 2 keeps them under the CRI plugin's full id; version 1 (no
/// `version`) names plugins by their short id, and containerd ignores full ids there.
fn cri_plugin(doc: &DocumentMut) -> &'static str {
    match doc.get("version").and_then(|v| v.as_integer()) {
        Some(3) => "io.containerd.cri.v1.images",
        Some(2) => "io.containerd.grpc.v1.cri",
        _ => "cri",
    }
}

/// Sets `registry.config_path` in containerd's `config.toml` when it is missing or empty;
/// returns the new text and the hosts directory to write into: `certs_dir` when given, else the
/// first entry of an existing `config_path`, else `/etc/containerd/certs.d`. A missing file
/// becomes a version 2 config with only this setting (containerd fills in its defaults).
pub fn enable_config_path(old: &str, certs_dir: Option<&Path>) -> Result<(String, PathBuf)> {
    let mut doc: DocumentMut = old
        .parse()
        .context("containerd's config.toml is not valid TOML")?;
    if old.trim().is_empty() {
        doc["version"] = value(2);
    }
    let plugin = cri_plugin(&doc);
    let existing = doc
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|c| c.get("registry"))
        .and_then(|r| r.get("config_path"))
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        // Several directories may be listed, separated by ':'; the first one is ours to write.
        .and_then(|c| c.split(':').next())
        .map(PathBuf::from);
    if let Some(existing) = existing {
        return Ok((
            doc.to_string(),
            certs_dir.map(Path::to_path_buf).unwrap_or(existing),
        ));
    }
    let dir = certs_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| DEFAULT_CERTS_DIR.into());
    let registry = table_at(&mut doc, &["plugins", plugin, "registry"])?;
    registry["config_path"] = value(dir.display().to_string());
    Ok((doc.to_string(), dir))
}

/// The table at `path`, created (as implicit parents) where missing.
fn table_at<'a>(doc: &'a mut DocumentMut, path: &[&str]) -> Result<&'a mut Table> {
    let mut table = doc.as_table_mut();
    for key in path {
        let item = table.entry(key).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = item
            .as_table_mut()
            .with_context(|| format!("`{key}` in containerd's config.toml is not a table"))?;
    }
    Ok(table)
}

/// `certs.d/<registry>/hosts.toml`: a `[host."<mirror>"]` with pull and resolve; the registry
/// itself stays the `server` fallback (`server` when given, else `https://<registry>`).
pub fn containerd_hosts(old: &str, registry: &str, server: Option<&str>, mirror: &str) -> Result<String> {
    let mut doc: DocumentMut = old.parse().context("existing hosts.toml is not valid TOML")?;
    if !doc.contains_key("server") {
        let server = match server {
            Some(s) => s.trim_end_matches('/').to_string(),
            None if registry == "docker.io" => "https://registry-1.docker.io".to_string(),
            None => format!("https://{registry}"),
        };
        doc["server"] = value(server);
    }
    add_host(&mut doc, mirror)?;
    Ok(doc.to_string())
}

/// `certs.d/_default/hosts.toml`: every registry without a directory of its own goes to the
/// mirror first (containerd names it in `?ns=`) and to itself after. No `server`: containerd
/// then falls back to the registry the image names.
pub fn default_hosts(old: &str, mirror: &str) -> Result<String> {
    let mut doc: DocumentMut = old.parse().context("existing hosts.toml is not valid TOML")?;
    add_host(&mut doc, mirror)?;
    Ok(doc.to_string())
}

fn add_host(doc: &mut DocumentMut, mirror: &str) -> Result<()> {
    let hosts = doc.entry("host").or_insert(Item::Table(Table::new()));
    let hosts = hosts.as_table_mut().context("`host` is not a table")?;
    hosts.set_implicit(true);
    let entry = hosts.entry(mirror).or_insert(Item::Table(Table::new()));
    let entry = entry.as_table_mut().context("host entry is not a table")?;
    if !entry.contains_key("capabilities") {
        let mut caps = Array::new();
        caps.push("pull");
        caps.push("resolve");
        entry["capabilities"] = value(caps);
    }
    Ok(())
}

/// The hosts file without the mirror's entry; `None` (delete the file) when nothing else of
/// the user's is left in it but a `server` line.
pub fn remove_host(old: &str, mirror: &str) -> Result<Option<String>> {
    let mut doc: DocumentMut = old.parse().context("existing hosts.toml is not valid TOML")?;
    let mut hosts_left = true;
    if let Some(hosts) = doc.get_mut("host").and_then(Item::as_table_mut) {
        hosts.remove(mirror);
        hosts_left = !hosts.is_empty();
    }
    if !hosts_left {
        doc.remove("host");
    }
    let only_server = doc.iter().all(|(k, _)| k == "server");
    let has_comments = doc.to_string().lines().any(|l| l.trim_start().starts_with('#'));
    if only_server && !has_comments {
        return Ok(None);
    }
    Ok(Some(doc.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIRROR: &str = "http://127.0.0.1:5090";

    #[test]
    fn config_path_is_set_for_the_plugin_of_each_config_version() {
        // containerd 1.6's shipped config: version 2, a CRI section without config_path.
        let v2 =
            "version = 2\n# keep\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.6\"\n";
        let (new, dir) = enable_config_path(v2, None).unwrap();
        assert_eq!(dir, PathBuf::from("/etc/containerd/certs.d"));
        let doc: DocumentMut = new.parse().unwrap();
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["registry"]["config_path"].as_str(),
            Some("/etc/containerd/certs.d")
        );
        assert_eq!(cri["sandbox_image"].as_str(), Some("pause:3.6"));
        assert!(new.contains("# keep"), "{new}");
        assert_eq!(enable_config_path(&new, None).unwrap().0, new, "idempotent");

        // No version: v1, where plugins go by their short id.
        let (new, _) = enable_config_path("root = \"/var/lib/containerd\"\n", Some(Path::new("/x"))).unwrap();
        let doc: DocumentMut = new.parse().unwrap();
        assert_eq!(
            doc["plugins"]["cri"]["registry"]["config_path"].as_str(),
            Some("/x")
        );

        let v3 = "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n";
        let (new, _) = enable_config_path(v3, None).unwrap();
        let doc: DocumentMut = new.parse().unwrap();
        assert_eq!(
            doc["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"].as_str(),
            Some("/etc/containerd/certs.d")
        );
        assert!(doc["plugins"].get("io.containerd.grpc.v1.cri").is_none());

        // An existing config_path is kept, and its first directory is where hosts go.
        let set = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/c/certs.d:/etc/docker/certs.d\"\n";
        let (new, dir) = enable_config_path(set, None).unwrap();
        assert_eq!((new.as_str(), dir), (set, PathBuf::from("/etc/c/certs.d")));

        let (fresh, _) = enable_config_path("", None).unwrap();
        assert!(fresh.starts_with("version = 2"), "{fresh}");
    }

    #[test]
    fn hosts_keep_user_content_and_are_idempotent() {
        let old = "# mine\nserver = \"https://r.example\"\n\n[host.\"https://other\"]\n  capabilities = [\"pull\"]\n";
        let once = containerd_hosts(old, "r.example", None, MIRROR).unwrap();
        assert!(
            once.contains("# mine")
                && once.contains("https://other")
                && once.contains("server = \"https://r.example\"")
        );
        assert!(once.contains("[host.\"http://127.0.0.1:5090\"]"), "{once}");
        assert_eq!(containerd_hosts(&once, "r.example", None, MIRROR).unwrap(), once);
        let fresh = containerd_hosts("", "docker.io", None, MIRROR).unwrap();
        assert!(
            fresh.contains("server = \"https://registry-1.docker.io\""),
            "{fresh}"
        );
        let plain = containerd_hosts("", "reg:5000", Some("http://reg:5000/"), MIRROR).unwrap();
        assert!(plain.contains("server = \"http://reg:5000\""), "{plain}");

        let default = default_hosts("", MIRROR).unwrap();
        assert!(!default.contains("server"), "{default}");
        assert!(default.contains("[host.\"http://127.0.0.1:5090\"]"), "{default}");
    }

    #[test]
    fn removing_the_mirror_leaves_the_users_hosts() {
        let old = "server = \"https://r.example\"\n\n[host.\"https://other\"]\n  capabilities = [\"pull\"]\n";
        let ours = containerd_hosts(old, "r.example", None, MIRROR).unwrap();
        assert_eq!(remove_host(&ours, MIRROR).unwrap().as_deref(), Some(old));
        let fresh = containerd_hosts("", "r.example", None, MIRROR).unwrap();
        assert_eq!(
            remove_host(&fresh, MIRROR).unwrap(),
            None,
            "only ours: the file goes"
        );
        assert_eq!(
            remove_host(&default_hosts("", MIRROR).unwrap(), MIRROR).unwrap(),
            None
        );
    }
}
