//! containers-registries.conf (v2), read by podman, skopeo, buildah and CRI-O: the agent as the
//! first `[[registry.mirror]]` of the registry's `[[registry]]`.

use anyhow::{bail, Context, Result};
use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

fn is_entry_for(t: &Table, registry: &str) -> bool {
    t.get("prefix").and_then(|v| v.as_str()) == Some(registry)
        || (t.get("prefix").is_none() && t.get("location").and_then(|v| v.as_str()) == Some(registry))
}

/// The array of tables (`[[key]]`) under `key`, created empty if missing.
fn tables_under<'a>(t: &'a mut Table, key: &str) -> Result<&'a mut ArrayOfTables> {
    t.entry(key)
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .with_context(|| format!("`{key}` is not an array of tables"))
}

/// A `[[registry]]` for the registry (created if missing) with this agent as its first mirror.
pub fn podman_registries(old: &str, registry: &str, mirror_host: &str, insecure: bool) -> Result<String> {
    let mut doc: DocumentMut = old
        .parse()
        .context("existing registries.conf is not valid TOML")?;
    let registries = tables_under(&mut doc, "registry")?;
    if !registries.iter().any(|t| is_entry_for(t, registry)) {
        let mut t = Table::new();
        t["prefix"] = value(registry);
        t["location"] = value(registry);
        registries.push(t);
    }
    let Some(entry) = registries.iter_mut().find(|t| is_entry_for(t, registry)) else {
        bail!("registry entry vanished")
    };
    let mirrors = tables_under(entry, "mirror")?;
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

/// The agent's mirror taken out; a `[[registry]]` left as `configure` made it (prefix and
/// location the registry, no mirror, nothing else) goes too.
pub fn remove_podman_mirror(old: &str, registry: &str, mirror_host: &str) -> Result<String> {
    let mut doc: DocumentMut = old
        .parse()
        .context("existing registries.conf is not valid TOML")?;
    let Some(registries) = doc.get_mut("registry").and_then(Item::as_array_of_tables_mut) else {
        return Ok(old.to_string());
    };
    for entry in registries.iter_mut().filter(|t| is_entry_for(t, registry)) {
        if let Some(mirrors) = entry.get_mut("mirror").and_then(Item::as_array_of_tables_mut) {
            mirrors.retain(|m| m.get("location").and_then(|v| v.as_str()) != Some(mirror_host));
            if mirrors.is_empty() {
                entry.remove("mirror");
            }
        }
    }
    registries.retain(|t| {
        let ours = t.len() == 2
            && t.get("prefix").and_then(|v| v.as_str()) == Some(registry)
            && t.get("location").and_then(|v| v.as_str()) == Some(registry);
        !ours
    });
    if registries.is_empty() {
        doc.remove("registry");
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_the_agent_first_keeps_the_rest_and_removes_it_again() {
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
        let removed = remove_podman_mirror(&once, "docker.io", "127.0.0.1:5090").unwrap();
        assert!(
            !removed.contains("127.0.0.1:5090") && removed.contains("other:5000"),
            "{removed}"
        );

        let fresh = podman_registries("", "r.example:5000", "127.0.0.1:5090", true).unwrap();
        assert!(
            fresh.contains("prefix = \"r.example:5000\"") && fresh.contains("insecure = true"),
            "{fresh}"
        );
        let gone = remove_podman_mirror(&fresh, "r.example:5000", "127.0.0.1:5090").unwrap();
        assert_eq!(gone.trim(), "", "only ours: nothing left");
    }
}
