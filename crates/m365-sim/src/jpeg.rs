//! Tiny but real baseline JPEGs for seeded photos: an 8×8 grayscale image of one shade, with a comment segment, so
//! every person's photo decodes, differs in bytes and hash, and stays under 200 bytes.

/// A valid baseline JPEG of one gray `shade` with `comment` in a COM segment.
pub fn tiny_jpeg(shade: u8, comment: &[u8]) -> Vec<u8> {
    // Only the DC coefficient is set: with an all-ones quantization table, pixel = DC/8 + 128.
    let dc: i32 = (i32::from(shade) - 128) * 8;
    let magnitude = dc.unsigned_abs();
    let category = (32 - magnitude.leading_zeros()) as u8;
    let mut out = Vec::with_capacity(160 + comment.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    out.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x01, 0x00, 0x00,
    ]);
    let comment = &comment[..comment.len().min(1000)];
    let com_len = u16::try_from(comment.len() + 2).unwrap_or(u16::MAX);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&com_len.to_be_bytes());
    out.extend_from_slice(comment);
    out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend_from_slice(&[1u8; 64]);
    out.extend_from_slice(&[
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00,
    ]);
    // DC table: one code ("0", length 1) for this image's category; AC table: one code ("0") for EOB.
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01]);
    out.extend_from_slice(&[0u8; 15]);
    out.push(category);
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, 0x10, 0x01]);
    out.extend_from_slice(&[0u8; 15]);
    out.push(0x00);
    out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    let mut bits = BitWriter::default();
    bits.put(0, 1);
    if category > 0 {
        let amplitude = if dc >= 0 {
            dc as u32
        } else {
            (dc - 1) as u32 & ((1 << category) - 1)
        };
        bits.put(amplitude, category);
    }
    bits.put(0, 1);
    out.extend_from_slice(&bits.finish());
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u32,
    n: u8,
}

impl BitWriter {
    fn put(&mut self, value: u32, count: u8) {
        for i in (0..count).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.flush_byte();
            }
        }
    }

    fn flush_byte(&mut self) {
        let byte = (self.acc & 0xFF) as u8;
        self.bytes.push(byte);
        if byte == 0xFF {
            self.bytes.push(0x00);
        }
        self.acc = 0;
        self.n = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1);
        }
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_jpeg_has_jpeg_structure_and_varies() {
        let a = tiny_jpeg(40, b"a");
        let b = tiny_jpeg(200, b"b");
        assert_eq!(&a[..2], &[0xFF, 0xD8]);
        assert_eq!(&a[a.len() - 2..], &[0xFF, 0xD9]);
        assert_ne!(a, b);
        assert!(a.len() < 250);
    }
}
