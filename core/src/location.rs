//! Where a node sits: `region/zone/rack`. Parents are ranked by how much of it they share.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Location {
    pub region: String,
    pub zone: String,
    pub rack: String,
}

#[derive(Debug, thiserror::Error)]
#[error("location must look like region/zone/rack with non-empty labels of [A-Za-z0-9._-], got {0:?}")]
pub struct LocationError(String);

impl Location {
    /// How many leading labels two locations share: 3 = same rack, 2 = same zone,
    /// 1 = same region, 0 = elsewhere.
    pub fn shared_prefix(&self, other: &Location) -> u8 {
        if self.region != other.region {
            0
        } else if self.zone != other.zone {
            1
        } else if self.rack != other.rack {
            2
        } else {
            3
        }
    }
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [region, zone, rack] if parts.iter().all(|p| label_ok(p)) => Ok(Location {
                region: region.to_string(),
                zone: zone.to_string(),
                rack: rack.to_string(),
            }),
            _ => Err(LocationError(s.to_string())),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.rack)
    }
}

impl Serialize for Location {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_shared_prefix() {
        let a: Location = "eu/z1/r1".parse().unwrap();
        assert_eq!(a.shared_prefix(&"eu/z1/r1".parse().unwrap()), 3);
        assert_eq!(a.shared_prefix(&"eu/z1/r2".parse().unwrap()), 2);
        assert_eq!(a.shared_prefix(&"eu/z2/r1".parse().unwrap()), 1);
        assert_eq!(a.shared_prefix(&"us/z1/r1".parse().unwrap()), 0);
    }

    #[test]
    fn rejects_malformed_locations() {
        for bad in ["", "eu", "eu/z1", "eu//r1", "eu/z1/r1/x", "eu/z 1/r1"] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
    }
}
