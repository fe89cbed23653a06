//! A minimal reader of the protobuf wire format: enough to walk a message's fields and decode the scalar,
//! string and packed-repeated values a Caffe model uses. No schema: callers pick fields by number.
use anyhow::{anyhow, bail, Result};

/// One field's raw value, as the wire format carries it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Length-delimited: a string, bytes, a sub-message, or a packed repeated field.
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads a base-128 varint at `*pos`, advancing it.
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or_else(|| anyhow!("truncated varint at byte {}", *pos))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("varint longer than 10 bytes at byte {}", *pos)
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = pos.checked_add(n).filter(|&e| e <= buf.len()).ok_or_else(|| anyhow!("field of {n} bytes at byte {} runs past the end ({} bytes)", *pos, buf.len()))?;
    let out = &buf[*pos..end];
    *pos = end;
    Ok(out)
}

/// Every field of a message in order, as (field number, value).
pub fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let field = u32::try_from(key >> 3).map_err(|_| anyhow!("field number {} out of range", key >> 3))?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => Wire::Fixed64(u64::from_le_bytes(take(buf, &mut pos, 8)?.try_into().expect("8 bytes"))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| anyhow!("length out of range"))?;
                Wire::Bytes(take(buf, &mut pos, len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(take(buf, &mut pos, 4)?.try_into().expect("4 bytes"))),
            3 | 4 => bail!("field {field}: groups (wire types 3 and 4) are not supported"),
            other => bail!("field {field}: invalid wire type {other} at byte {pos}"),
        };
        out.push((field, value));
    }
    Ok(out)
}

/// The values of a repeated `float` field, packed or not.
pub fn floats(values: &[Wire]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for v in values {
        match v {
            Wire::Fixed32(bits) => out.push(f32::from_bits(*bits)),
            Wire::Bytes(b) if b.len() % 4 == 0 => out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))),
            Wire::Bytes(b) => bail!("packed floats of {} bytes (not a multiple of 4)", b.len()),
            other => bail!("expected a float, found {other:?}"),
        }
    }
    Ok(out)
}

/// The values of a repeated `double` field, packed or not.
pub fn doubles(values: &[Wire]) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for v in values {
        match v {
            Wire::Fixed64(bits) => out.push(f64::from_bits(*bits)),
            Wire::Bytes(b) if b.len() % 8 == 0 => out.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))),
            Wire::Bytes(b) => bail!("packed doubles of {} bytes (not a multiple of 8)", b.len()),
            other => bail!("expected a double, found {other:?}"),
        }
    }
    Ok(out)
}

/// The values of a repeated integer field (int32/int64, non-negative), packed or not.
pub fn varints(values: &[Wire]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for v in values {
        match v {
            Wire::Varint(x) => out.push(*x),
            Wire::Bytes(b) => {
                let mut pos = 0;
                while pos < b.len() {
                    out.push(varint(b, &mut pos)?);
                }
            }
            other => bail!("expected an integer, found {other:?}"),
        }
    }
    Ok(out)
}

/// A UTF-8 string field.
pub fn string(value: &Wire) -> Result<String> {
    match value {
        Wire::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| anyhow!("a string field is not UTF-8")),
        other => bail!("expected a string, found {other:?}"),
    }
}

/// A sub-message field's bytes.
pub fn message<'a>(value: &Wire<'a>) -> Result<&'a [u8]> {
    match value {
        Wire::Bytes(b) => Ok(b),
        other => bail!("expected a message, found {other:?}"),
    }
}

/// Encoding, for building test messages: the inverse of `fields`.
#[cfg(test)]
pub mod encode {
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub fn bytes(field: u32, b: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    pub fn int(field: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(field) << 3, out);
        varint(v, out);
    }
    pub fn float(field: u32, v: f32, out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | 5, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn packed_floats(field: u32, v: &[f32], out: &mut Vec<u8>) {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes(field, &b, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type() {
        // field 1 varint 300 (0xac 0x02), field 2 string "ab", field 3 fixed32 1.5f, field 4 fixed64 2.0
        let mut buf = vec![0x08, 0xac, 0x02, 0x12, 0x02, b'a', b'b', 0x1d];
        buf.extend_from_slice(&1.5f32.to_le_bytes());
        buf.push(0x21);
        buf.extend_from_slice(&2.0f64.to_le_bytes());
        let f = fields(&buf).unwrap();
        assert_eq!(f[0], (1, Wire::Varint(300)));
        assert_eq!(string(&f[1].1).unwrap(), "ab");
        assert_eq!(floats(&[f[2].1]).unwrap(), vec![1.5]);
        assert_eq!(doubles(&[f[3].1]).unwrap(), vec![2.0]);
    }

    #[test]
    fn packed_and_unpacked_repeated_values_agree() {
        // packed int64 [3, 300] = 0x03 0xac 0x02
        assert_eq!(varints(&[Wire::Bytes(&[0x03, 0xac, 0x02])]).unwrap(), vec![3, 300]);
        assert_eq!(varints(&[Wire::Varint(3), Wire::Varint(300)]).unwrap(), vec![3, 300]);
        let packed: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(floats(&[Wire::Bytes(&packed)]).unwrap(), vec![1.0, -2.5]);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(fields(&[0x12, 0x05, b'a']).unwrap_err().to_string().contains("runs past the end"));
        assert!(fields(&[0x08, 0x80]).unwrap_err().to_string().contains("truncated varint"));
        assert!(fields(&[0x0b]).unwrap_err().to_string().contains("groups"));
        assert!(fields(&[0x0f]).unwrap_err().to_string().contains("invalid wire type 7"));
        assert!(floats(&[Wire::Bytes(&[1, 2, 3])]).is_err());
    }
}
