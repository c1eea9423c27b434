//! Which platforms of a multi-platform image to warm: `os/arch[/variant]` as configured and as
//! index entries name them. Pure, so configuration checks and the resolver share it.

use serde::Deserialize;

/// A platform as an image index lists it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

/// Which platforms of an index to warm. Empty: all of them. Entries without a platform or with
/// `unknown/unknown` (attestations) are never warmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PlatformFilter(Vec<Platform>);

impl PlatformFilter {
    /// `linux/amd64`, `linux/arm64/v8`.
    pub(crate) fn parse_one(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: os.into(),
                    architecture: arch.into(),
                    variant: Some(variant.into()),
                })
            }
            _ => Err(format!("platform {s:?} must be os/arch or os/arch/variant")),
        }
    }

    pub(crate) fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|s| Self::parse_one(s))
            .collect::<Result<_, _>>()
            .map(PlatformFilter)
    }

    pub(crate) fn admits(&self, p: Option<&Platform>) -> bool {
        let Some(p) = p else { return false };
        if p.os == "unknown" || p.architecture == "unknown" {
            return false;
        }
        self.0.is_empty()
            || self.0.iter().any(|want| {
                want.os == p.os
                    && want.architecture == p.architecture
                    && (want.variant.is_none() || want.variant == p.variant)
            })
    }

    /// `os/arch` of each platform asked for, to say what matched nothing.
    pub(crate) fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn filter_skips_attestations_and_honours_variants() {
        let all = PlatformFilter::default();
        assert!(all.admits(Some(&p("linux", "amd64", None))));
        assert!(!all.admits(Some(&p("unknown", "unknown", None))));
        assert!(!all.admits(None));
        let arm = PlatformFilter::parse(&["linux/arm64".into()]).unwrap();
        assert!(arm.admits(Some(&p("linux", "arm64", Some("v8")))));
        assert!(!arm.admits(Some(&p("linux", "amd64", None))));
        let v7 = PlatformFilter::parse(&["linux/arm/v7".into()]).unwrap();
        assert!(!v7.admits(Some(&p("linux", "arm", Some("v6")))));
        assert!(PlatformFilter::parse(&["linux".into()]).is_err());
        assert!(PlatformFilter::parse(&["linux//v7".into()]).is_err());
    }

    #[test]
    fn names_say_which_platforms_were_asked_for() {
        let filter = PlatformFilter::parse(&["linux/arm64/v8".into(), "linux/amd64".into()]).unwrap();
        assert_eq!(filter.names(), ["linux/arm64", "linux/amd64"]);
    }
}
