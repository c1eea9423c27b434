//! Which pieces a peer holds: one bit per piece, most significant bit first (as BitTorrent).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u64,
}

impl Bitfield {
    pub fn new(len: u64) -> Self {
        Bitfield {
            bits: vec![0; len.div_ceil(8) as usize],
            len,
        }
    }

    pub fn full(len: u64) -> Self {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: u64) -> bool {
        index < self.len && self.bits[(index / 8) as usize] & (0x80 >> (index % 8)) != 0
    }

    pub fn set(&mut self, index: u64) {
        if index < self.len {
            self.bits[(index / 8) as usize] |= 0x80 >> (index % 8);
        }
    }

    pub fn count(&self) -> u64 {
        self.bits.iter().map(|b| b.count_ones() as u64).sum()
    }

    pub fn is_complete(&self) -> bool {
        self.count() == self.len
    }

    /// The first index not set (`None`: all are), a byte at a time.
    pub fn first_clear(&self) -> Option<u64> {
        let byte = self.bits.iter().position(|b| *b != 0xff)?;
        let index = byte as u64 * 8 + u64::from(self.bits[byte].leading_ones());
        (index < self.len).then_some(index)
    }
}

/// On the wire: `"<len>:<base64 bits>"`.
impl Serialize for Bitfield {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}:{}", self.len, STANDARD.encode(&self.bits)))
    }
}

impl<'de> Deserialize<'de> for Bitfield {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let (len, bits) = text
            .split_once(':')
            .ok_or_else(|| serde::de::Error::custom("bitfield: missing ':'"))?;
        let len: u64 = len.parse().map_err(serde::de::Error::custom)?;
        let bits = STANDARD.decode(bits).map_err(serde::de::Error::custom)?;
        if bits.len() as u64 != len.div_ceil(8) {
            return Err(serde::de::Error::custom("bitfield: length does not match"));
        }
        let mut field = Bitfield { bits, len };
        // Bits past the end carry no meaning; clear them so equality and counts are exact.
        if !len.is_multiple_of(8) {
            if let Some(last) = field.bits.last_mut() {
                *last &= 0xffu8 << (8 - len % 8);
            }
        }
        Ok(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_clear_bit_is_found_in_any_byte_and_never_past_the_end() {
        for len in [1u64, 7, 8, 9, 64, 100] {
            let mut b = Bitfield::new(len);
            for i in 0..len {
                assert_eq!(b.first_clear(), Some(i), "len {len}");
                b.set(i);
            }
            assert_eq!(b.first_clear(), None, "len {len}: all set");
        }
        let mut b = Bitfield::new(20);
        b.set(0);
        b.set(2);
        assert_eq!(b.first_clear(), Some(1));
        assert_eq!(Bitfield::new(0).first_clear(), None);
    }

    #[test]
    fn sets_counts_and_round_trips() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        b.set(42);
        assert!(b.get(0) && b.get(9) && !b.get(1) && !b.get(42));
        assert_eq!(b.count(), 2);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Bitfield>(&json).unwrap(), b);
        assert!(Bitfield::full(10).is_complete());
        assert!(serde_json::from_str::<Bitfield>("\"10:AAAA\"").is_err());
    }
}
