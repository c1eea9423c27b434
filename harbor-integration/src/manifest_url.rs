//! The one thing Harbor says about the artifact: its manifest URL,
//! `<ext_endpoint with scheme>/v2/<project>/<repo>/manifests/<tag>`.

use damselfly_core::{Reference, RepositoryName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestUrl {
    /// `host[:port]`, as the registry is named in the preheater's configuration.
    pub host: String,
    pub repository: RepositoryName,
    pub reference: Reference,
}

impl ManifestUrl {
    pub fn parse(url: &str) -> Result<ManifestUrl, String> {
        let bad = |why: &str| {
            format!("url {url:?} is not a manifest URL (<scheme>://<host>/v2/<repository>/manifests/<reference>): {why}")
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("scheme must be http or https"));
        }
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        let host = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let path = parsed.path();
        let rest = path
            .strip_prefix("/v2/")
            .ok_or_else(|| bad("path must start with /v2/"))?;
        let (repository, reference) = rest
            .rsplit_once("/manifests/")
            .ok_or_else(|| bad("no /manifests/ in the path"))?;
        Ok(ManifestUrl {
            host,
            repository: repository.parse().map_err(|e| bad(&format!("{e}")))?,
            reference: reference.parse().map_err(|e| bad(&format!("{e}")))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harbor_manifest_urls_parse() {
        let m = ManifestUrl::parse("https://harbor.example.com/v2/library/nginx/manifests/1.25.3").unwrap();
        assert_eq!(m.host, "harbor.example.com");
        assert_eq!(m.repository.as_str(), "library/nginx");
        assert_eq!(m.reference.to_string(), "1.25.3");
        let d = "sha256:a484819eb60211f5299034ac80f6a681b06f89e65866ce91f356ed7c72af059c";
        let m = ManifestUrl::parse(&format!("http://127.0.0.1:5000/v2/a/b/c/manifests/{d}")).unwrap();
        assert_eq!(
            (m.host.as_str(), m.repository.as_str()),
            ("127.0.0.1:5000", "a/b/c")
        );
        assert_eq!(m.reference.to_string(), d);
        for bad in [
            "harbor.example.com/v2/a/manifests/v1",
            "ftp://h/v2/a/manifests/v1",
            "https://h/v1/a/manifests/v1",
            "https://h/v2/a/blobs/sha256:00",
            "https://h/v2/A/manifests/v1",
        ] {
            assert!(ManifestUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
