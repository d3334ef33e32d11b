//! A task's partial result: a few named f64 arrays, stored bit-exactly.
//!
//! Layout: the magic `BFPART1\n`, a little-endian u32 length, a JSON header listing each array's
//! name and shape, then every array's values as little-endian f64, in header order. Parts are
//! written with a create-only put, so the first finished attempt of a task wins.

use crate::{JobError, Result};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"BFPART1\n";

/// Named arrays of one task's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    arrays: Vec<(String, Vec<usize>, Vec<f64>)>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    arrays: Vec<(String, Vec<usize>)>,
}

impl Part {
    /// An empty part.
    pub fn new() -> Self {
        Part::default()
    }

    /// Adds an array (`values.len()` must equal the product of `shape`).
    pub fn push(&mut self, name: &str, shape: Vec<usize>, values: Vec<f64>) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "part array {name}");
        self.arrays.push((name.to_string(), shape, values));
    }

    /// The array `name`: its shape and values.
    pub fn get(&self, name: &str) -> Result<(&[usize], &[f64])> {
        self.arrays
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, v)| (s.as_slice(), v.as_slice()))
            .ok_or_else(|| JobError::Corrupt(format!("partial result has no array {name:?}")))
    }

    /// Serialises the part.
    pub fn encode(&self) -> Vec<u8> {
        let header =
            Header { arrays: self.arrays.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect() };
        let json = serde_json::to_vec(&header).expect("header serialises");
        let n_values: usize = self.arrays.iter().map(|(_, _, v)| v.len()).sum();
        let mut out = Vec::with_capacity(12 + json.len() + 8 * n_values);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        for (_, _, values) in &self.arrays {
            values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        out
    }

    /// Parses a part written by [`Part::encode`]; `name` is used in messages.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Part> {
        let corrupt = |what: &str| JobError::Corrupt(format!("{name}: {what}"));
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a brainfit partial result"));
        }
        let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let json = bytes.get(12..12 + len).ok_or_else(|| corrupt("truncated header"))?;
        let header: Header =
            serde_json::from_slice(json).map_err(|e| corrupt(&format!("bad header: {e}")))?;
        let mut data = &bytes[12 + len..];
        let mut arrays = Vec::new();
        for (n, shape) in header.arrays {
            let count: usize = shape.iter().product();
            if data.len() < 8 * count {
                return Err(corrupt("truncated data"));
            }
            let values = data[..8 * count]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            data = &data[8 * count..];
            arrays.push((n, shape, values));
        }
        if !data.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Part { arrays })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bit_exact() {
        let mut p = Part::new();
        p.push("score", vec![3], vec![0.1, f64::NAN, -0.0]);
        p.push("m", vec![2, 0], vec![]);
        let bytes = p.encode();
        let q = Part::decode(&bytes, "x").unwrap();
        let (s, v) = q.get("score").unwrap();
        assert_eq!(s, &[3]);
        assert_eq!(v[0].to_bits(), 0.1f64.to_bits());
        assert!(v[1].is_nan());
        assert_eq!(v[2].to_bits(), (-0.0f64).to_bits());
        assert!(q.get("nope").is_err());
        assert!(
            Part::decode(&bytes[..bytes.len() - 1], "x")
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(Part::decode(b"garbage", "x").is_err());
    }
}
