//! Is this a door snapshot we keep? Pure checks of an uploaded still: a
//! whole JPEG (baseline or progressive), at most [`MAX_BYTES`], at most
//! [`MAX_SIDE`] pixels on its long side.
//!
//! The marker structure is walked from the start-of-image to the
//! end-of-image, which must be the last two bytes: a truncated upload, a
//! PNG renamed `.jpg`, or bytes appended after the picture are refused. The
//! entropy-coded data itself is not decoded (the browser that shows the
//! picture does that, and a damaged scan shows as a grey band, not as a
//! fault here).

/// Largest still accepted, in bytes.
pub const MAX_BYTES: usize = 100 * 1024;
/// Longest side accepted, in pixels.
pub const MAX_SIDE: u16 = 640;

/// A still's size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u16,
    pub height: u16,
}

/// The size of the JPEG `bytes`, or why it is not a still we keep.
pub fn check(bytes: &[u8]) -> Result<Size, &'static str> {
    if bytes.len() > MAX_BYTES {
        return Err("larger than 100 KiB");
    }
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG");
    }
    let mut at = 2;
    let mut size = None;
    loop {
        // A marker: 0xFF, maybe more 0xFF as fill, then its code.
        if bytes.get(at) != Some(&0xFF) {
            return Err("a damaged JPEG (no marker where one belongs)");
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = bytes.get(at) else { return Err("a truncated JPEG") };
        at += 1;
        match code {
            0xD9 => return Err("a JPEG without image data"),
            // Markers without a length: restart markers, TEM.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(length) = bytes.get(at..at + 2).map(|pair| usize::from(u16::from_be_bytes([pair[0], pair[1]]))) else {
            return Err("a truncated JPEG");
        };
        let Some(segment) = bytes.get(at + 2..at + length).filter(|_| length >= 2) else {
            return Err("a truncated JPEG");
        };
        at += length;
        match code {
            // Start of frame (every coding but DHT 0xC4, JPG 0xC8, DAC 0xCC).
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                let [_precision, h1, h0, w1, w0, ..] = *segment else {
                    return Err("a damaged JPEG (short frame header)");
                };
                let (height, width) = (u16::from_be_bytes([h1, h0]), u16::from_be_bytes([w1, w0]));
                if width == 0 || height == 0 {
                    return Err("a JPEG without a size");
                }
                if width.max(height) > MAX_SIDE {
                    return Err("larger than 640 pixels on its long side");
                }
                size = Some(Size { width, height });
            }
            // Start of scan: the coded data runs to the next marker that is
            // not a stuffed 0xFF00 or a restart marker.
            0xDA => {
                if size.is_none() {
                    return Err("a damaged JPEG (image data before its frame header)");
                }
                loop {
                    let Some(offset) = bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)) else {
                        return Err("a truncated JPEG");
                    };
                    at += offset;
                    match bytes.get(at + 1) {
                        None => return Err("a truncated JPEG"),
                        Some(0x00 | 0xD0..=0xD7 | 0xFF) => at += 1,
                        Some(0xD9) if at + 2 == bytes.len() => return size.ok_or("a JPEG without a size"),
                        Some(0xD9) => return Err("bytes after the end of the JPEG"),
                        // Another segment (a progressive JPEG's next table
                        // or scan).
                        Some(_) => break,
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STILL: &[u8] = include_bytes!("../tests/fixtures/still-16x12.jpg");
    const PROGRESSIVE: &[u8] = include_bytes!("../tests/fixtures/still-16x12-progressive.jpg");
    const WIDE: &[u8] = include_bytes!("../tests/fixtures/still-641x10.jpg");
    const PNG: &[u8] = include_bytes!("../tests/fixtures/still-16x12.png");

    #[test]
    fn whole_jpegs_within_the_limits_are_kept() {
        assert_eq!(check(STILL), Ok(Size { width: 16, height: 12 }));
        assert_eq!(check(PROGRESSIVE), Ok(Size { width: 16, height: 12 }));
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        assert_eq!(check(PNG), Err("not a JPEG"));
        assert_eq!(check(WIDE), Err("larger than 640 pixels on its long side"));
        assert_eq!(check(&[]), Err("not a JPEG"));
        assert_eq!(check(&[0xFF, 0xD8, 0xFF, 0xD9]), Err("a JPEG without image data"));
        let mut padded = STILL.to_vec();
        padded.extend_from_slice(b"junk");
        assert_eq!(check(&padded), Err("bytes after the end of the JPEG"));
        let mut huge = STILL.to_vec();
        huge.resize(MAX_BYTES + 1, 0);
        assert_eq!(check(&huge), Err("larger than 100 KiB"));
    }

    #[test]
    fn every_truncation_is_refused_and_nothing_panics() {
        for picture in [STILL, PROGRESSIVE] {
            for cut in 0..picture.len() {
                assert!(check(&picture[..cut]).is_err(), "cut at {cut} of {}", picture.len());
            }
            for at in 0..picture.len() {
                for byte in [0x00, 0xFF, 0xD9, 0xDA, 0xC0] {
                    let mut damaged = picture.to_vec();
                    damaged[at] = byte;
                    let _ = check(&damaged);
                }
            }
        }
    }
}
