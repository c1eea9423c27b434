//! Docker: `daemon.json`'s `registry-mirrors` (Docker mirrors Docker Hub only) and, for a
//! plain-HTTP mirror, `insecure-registries`.

use anyhow::{Context, Result};

fn parse(old: &str) -> Result<serde_json::Value> {
    let json: serde_json::Value = if old.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(old).context("daemon.json is not valid JSON")?
    };
    anyhow::ensure!(json.is_object(), "daemon.json is not a JSON object");
    Ok(json)
}

/// Adds the mirror (and its host to `insecure-registries`), once.
pub fn docker_daemon(old: &str, mirror: &str, insecure_host: Option<&str>) -> Result<String> {
    let mut json = parse(old)?;
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

/// Takes the mirror (and its insecure entry) out again; a list left empty goes too.
pub fn remove_docker_mirror(old: &str, mirror: &str, insecure_host: Option<&str>) -> Result<String> {
    let mut json = parse(old)?;
    let object = json.as_object_mut().context("daemon.json is not a JSON object")?;
    for (key, item) in [
        ("registry-mirrors", Some(mirror)),
        ("insecure-registries", insecure_host),
    ] {
        let Some(item) = item else { continue };
        if let Some(list) = object.get_mut(key).and_then(|l| l.as_array_mut()) {
            list.retain(|v| v.as_str() != Some(item));
            if list.is_empty() {
                object.remove(key);
            }
        }
    }
    Ok(serde_json::to_string_pretty(&json)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_mirror_once_keeps_keys_in_order_and_removes_it_again() {
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

        let removed = remove_docker_mirror(&once, "http://127.0.0.1:5090", Some("127.0.0.1:5090")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&removed).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"log-driver": "json-file", "registry-mirrors": ["https://m"]})
        );
    }
}
