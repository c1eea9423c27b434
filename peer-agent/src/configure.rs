//! `peer-agent configure containerd|docker|podman`: points a runtime at this agent.
//!
//! Each writer edits the runtime's own file in place, idempotently: running it twice changes
//! nothing, and everything the user had (other hosts, other keys, comments in TOML) stays.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Runtime {
    Containerd,
    Docker,
    Podman,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Which runtime to configure.
    pub runtime: Runtime,
    /// This agent's mirror URL (default: http://127.0.0.1:5090).
    #[arg(long, default_value = "http://127.0.0.1:5090")]
    pub mirror: String,
    /// Registry to mirror (containerd, podman), e.g. `docker.io` or `registry.example.com:5000`.
    #[arg(long, default_value = "docker.io")]
    pub registry: String,
    /// File or directory to edit (default: the runtime's standard location).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Print the result instead of writing it.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: &ConfigureArgs) -> Result<()> {
    let mirror = reqwest::Url::parse(&args.mirror).context("--mirror must be a URL")?;
    let host = match (mirror.host_str(), mirror.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => bail!("--mirror has no host"),
    };
    let mirror_url = args.mirror.trim_end_matches('/').to_string();
    let insecure = mirror.scheme() == "http";
    let (path, old) = match args.runtime {
        Runtime::Containerd => {
            let dir = args
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/containerd/certs.d"));
            let path = dir.join(&args.registry).join("hosts.toml");
            (path.clone(), read(&path)?)
        }
        Runtime::Docker => {
            let path = args
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/docker/daemon.json"));
            (path.clone(), read(&path)?)
        }
        Runtime::Podman => {
            let path = args
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf"));
            (path.clone(), read(&path)?)
        }
    };
    let new = match args.runtime {
        Runtime::Containerd => containerd_hosts(&old, &args.registry, &mirror_url)?,
        Runtime::Docker => docker_daemon(&old, &mirror_url, insecure.then_some(host.as_str()))?,
        Runtime::Podman => podman_registries(&old, &args.registry, &host, insecure)?,
    };
    if args.dry_run {
        print!("{new}");
        return Ok(());
    }
    if new == old {
        println!("{} already points at {mirror_url}", path.display());
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("damselfly.tmp");
    std::fs::write(&tmp, &new)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("updated {}", path.display());
    if matches!(args.runtime, Runtime::Docker) {
        println!("reload docker to apply: kill -HUP $(pidof dockerd)");
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// containerd `certs.d/<registry>/hosts.toml`: a `[host."<mirror>"]` with pull and resolve; the
/// registry itself stays the `server` fallback.
pub fn containerd_hosts(old: &str, registry: &str, mirror: &str) -> Result<String> {
    let mut doc: DocumentMut = old.parse().context("existing hosts.toml is not valid TOML")?;
    if !doc.contains_key("server") {
        let server = if registry == "docker.io" {
            "https://registry-1.docker.io".to_string()
        } else {
            format!("https://{registry}")
        };
        doc["server"] = value(server);
    }
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
    Ok(doc.to_string())
}

/// Docker `daemon.json`: the mirror in `registry-mirrors` (Docker mirrors Docker Hub only) and,
/// for a plain-HTTP mirror, its host in `insecure-registries`.
pub fn docker_daemon(old: &str, mirror: &str, insecure_host: Option<&str>) -> Result<String> {
    let mut json: serde_json::Value = if old.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(old).context("daemon.json is not valid JSON")?
    };
    let object = json.as_object_mut().context("daemon.json is not a JSON object")?;
    let mut add = |key: &str, item: &str| -> Result<()> {
        let list = object.entry(key).or_insert_with(|| serde_json::json!([]));
        let list = list
            .as_array_mut()
            .with_context(|| format!("{key} is not a list"))?;
        if !list.iter().any(|v| v.as_str() == Some(item)) {
            list.push(serde_json::Value::String(item.to_string()));
        }
        Ok(())
    };
    add("registry-mirrors", mirror)?;
    if let Some(host) = insecure_host {
        add("insecure-registries", host)?;
    }
    Ok(serde_json::to_string_pretty(&json)? + "\n")
}

/// containers `registries.conf` (v2): a `[[registry]]` for the registry (created if missing)
/// with this agent as its first `[[registry.mirror]]`.
pub fn podman_registries(old: &str, registry: &str, mirror_host: &str, insecure: bool) -> Result<String> {
    let mut doc: DocumentMut = old
        .parse()
        .context("existing registries.conf is not valid TOML")?;
    let registries = doc
        .entry("registry")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    let registries = registries
        .as_array_of_tables_mut()
        .context("`registry` is not an array of tables")?;
    let matches = |t: &Table| {
        t.get("prefix").and_then(|v| v.as_str()) == Some(registry)
            || (t.get("prefix").is_none() && t.get("location").and_then(|v| v.as_str()) == Some(registry))
    };
    if !registries.iter().any(matches) {
        let mut t = Table::new();
        t["prefix"] = value(registry);
        t["location"] = value(registry);
        registries.push(t);
    }
    let Some(entry) = registries.iter_mut().find(|t| matches(t)) else {
        bail!("registry entry vanished")
    };
    let mirrors = entry
        .entry("mirror")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    let mirrors = mirrors
        .as_array_of_tables_mut()
        .context("`mirror` is not an array of tables")?;
    if !mirrors
        .iter()
        .any(|m| m.get("location").and_then(|v| v.as_str()) == Some(mirror_host))
    {
        let mut m = Table::new();
        m["location"] = value(mirror_host);
        if insecure {
            m["insecure"] = value(true);
        }
        // Mirrors are tried in order: this agent goes first.
        let rest: Vec<Table> = mirrors.iter().cloned().collect();
        mirrors.clear();
        mirrors.push(m);
        for r in rest {
            mirrors.push(r);
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_keeps_user_content_and_is_idempotent() {
        let old = "# mine\nserver = \"https://r.example\"\n\n[host.\"https://other\"]\n  capabilities = [\"pull\"]\n";
        let once = containerd_hosts(old, "r.example", "http://127.0.0.1:5090").unwrap();
        assert!(
            once.contains("# mine")
                && once.contains("https://other")
                && once.contains("server = \"https://r.example\"")
        );
        assert!(once.contains("[host.\"http://127.0.0.1:5090\"]"), "{once}");
        assert_eq!(
            containerd_hosts(&once, "r.example", "http://127.0.0.1:5090").unwrap(),
            once
        );
        let fresh = containerd_hosts("", "docker.io", "http://127.0.0.1:5090").unwrap();
        assert!(
            fresh.contains("server = \"https://registry-1.docker.io\""),
            "{fresh}"
        );
    }

    #[test]
    fn docker_adds_mirror_once_and_keeps_keys_in_order() {
        let old = "{\"log-driver\": \"json-file\", \"registry-mirrors\": [\"https://m\"]}";
        let once = docker_daemon(old, "http://127.0.0.1:5090", Some("127.0.0.1:5090")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&once).unwrap();
        assert_eq!(
            v["registry-mirrors"],
            serde_json::json!(["https://m", "http://127.0.0.1:5090"])
        );
        assert_eq!(v["insecure-registries"], serde_json::json!(["127.0.0.1:5090"]));
        assert!(once.find("log-driver").unwrap() < once.find("registry-mirrors").unwrap());
        assert_eq!(
            docker_daemon(&once, "http://127.0.0.1:5090", Some("127.0.0.1:5090")).unwrap(),
            once
        );
        assert!(docker_daemon("[1]", "http://m", None).is_err());
    }

    #[test]
    fn podman_puts_the_agent_first_and_keeps_the_rest() {
        let old = "unqualified-search-registries = [\"docker.io\"]\n# keep me\n[[registry]]\nprefix = \"docker.io\"\nlocation = \"registry-1.docker.io\"\n[[registry.mirror]]\nlocation = \"other:5000\"\n";
        let once = podman_registries(old, "docker.io", "127.0.0.1:5090", true).unwrap();
        assert!(
            once.contains("# keep me") && once.contains("other:5000"),
            "{once}"
        );
        assert!(
            once.find("127.0.0.1:5090").unwrap() < once.find("other:5000").unwrap(),
            "{once}"
        );
        assert_eq!(
            podman_registries(&once, "docker.io", "127.0.0.1:5090", true).unwrap(),
            once
        );
        let fresh = podman_registries("", "r.example:5000", "127.0.0.1:5090", true).unwrap();
        assert!(
            fresh.contains("prefix = \"r.example:5000\"") && fresh.contains("insecure = true"),
            "{fresh}"
        );
    }
}
