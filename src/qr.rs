//! QR codes (ISO/IEC 18004, Model 2), made in the daemon so that a page can
//! show a phone where to go without any outside service. Pure: text in, a
//! module matrix and its SVG out.
//!
//! Only what the daemon needs: byte mode, error correction level M (15% of
//! the symbol may be lost: a screen photographed at an angle, a glare), the
//! smallest version from 1 to [`MAX_VERSION`] that holds the text, all eight
//! masks scored by the standard's four penalty rules. Written here rather
//! than taken from a crate: the encoder is a few hundred lines, the crates
//! carry every mode, level and version.
//!
//! Invariants:
//! - A text over [`MAX_QR_TEXT_BYTES`] is refused, never truncated.
//! - The matrix is `size * size` modules, `size = 17 + 4 * version`, row by
//!   row, `true` dark; the SVG adds the quiet zone of [`QUIET_ZONE`] modules.

use std::fmt::Write as _;

/// The longest text a code is made for, in UTF-8 bytes: more than any URL
/// the daemon makes (scheme, an IPv6 address or a `.local` name, port and
/// path are under 100), and small enough that the code (version 12, 65
/// modules across, which holds up to 287 bytes at level M) still scans from
/// a phone held at arm's length off a small screen. A longer text gets an error.
pub const MAX_QR_TEXT_BYTES: usize = 256;

/// The largest version made: the first that holds [`MAX_QR_TEXT_BYTES`].
const MAX_VERSION: usize = 12;

/// Light modules around the symbol, as the standard asks.
pub const QUIET_ZONE: usize = 4;

/// Error correction of level M for versions 1 to 12 (the standard's table
/// 9): error-correction codewords per block, then the blocks of the first
/// group and their data codewords; a second group, if any, has blocks one
/// codeword longer.
const BLOCKS: [(u8, u8, u8, u8); MAX_VERSION] = [
    // (ec per block, blocks in group 1, data per block in group 1, blocks in group 2)
    (10, 1, 16, 0),
    (16, 1, 28, 0),
    (26, 1, 44, 0),
    (18, 2, 32, 0),
    (24, 2, 43, 0),
    (16, 4, 27, 0),
    (18, 4, 31, 0),
    (22, 2, 38, 2),
    (22, 3, 36, 2),
    (26, 4, 43, 1),
    (30, 1, 50, 4),
    (22, 6, 36, 2),
];

/// Why no code was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrError {
    /// The text has this many bytes, more than [`MAX_QR_TEXT_BYTES`].
    TooLong(usize),
}

impl std::fmt::Display for QrError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            QrError::TooLong(bytes) => {
                write!(f, "the text is {bytes} bytes of UTF-8; a QR code here holds at most {MAX_QR_TEXT_BYTES}")
            }
        }
    }
}

/// A QR code symbol: its modules, without the quiet zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    pub version: usize,
    pub mask: u8,
    /// Modules across (and down).
    pub size: usize,
    /// Row by row, `true` dark.
    modules: Vec<bool>,
}

impl QrCode {
    /// The code for `text` in byte mode at level M, in the smallest version
    /// that holds it, with the mask the penalty rules prefer.
    pub fn encode(text: &[u8]) -> Result<QrCode, QrError> {
        if text.len() > MAX_QR_TEXT_BYTES {
            return Err(QrError::TooLong(text.len()));
        }
        let version = (1..=MAX_VERSION).find(|&v| capacity(v) >= text.len()).ok_or(QrError::TooLong(text.len()))?;
        let codewords = interleave(version, &data_codewords(version, text));
        let mut grid = Grid::new(version);
        grid.place_data(&codewords);
        // Each mask is scored with the format and version areas still
        // light, as python-qrcode and segno score them; the lowest penalty
        // wins, the lower mask on a tie.
        let penalty = |mask: u8| {
            let mut candidate = grid.clone();
            candidate.apply_mask(mask);
            candidate.penalty()
        };
        let mask = (0..8u8).min_by_key(|&mask| (penalty(mask), mask)).expect("eight masks");
        grid.apply_mask(mask);
        grid.write_information(Some(mask));
        Ok(QrCode { version, mask, size: grid.size, modules: grid.dark })
    }

    /// Whether the module in column `x`, row `y` is dark.
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        self.modules[y * self.size + x]
    }

    /// The symbol as SVG: one unit per module, the quiet zone included,
    /// black on white. The dark modules are one `<path>` of horizontal runs
    /// drawn as strokes one unit wide (`M<x> <y+0.5>h<length>`, absolute),
    /// which the page scales to any size without blur.
    pub fn to_svg(&self) -> String {
        let width = self.size + 2 * QUIET_ZONE;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {width}\" \
             shape-rendering=\"crispEdges\"><rect width=\"{width}\" height=\"{width}\" fill=\"#fff\"/>\
             <path stroke=\"#000\" d=\""
        );
        for y in 0..self.size {
            let mut x = 0;
            while x < self.size {
                if !self.is_dark(x, y) {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < self.size && self.is_dark(x, y) {
                    x += 1;
                }
                let _ = write!(svg, "M{} {}.5h{}", start + QUIET_ZONE, y + QUIET_ZONE, x - start);
            }
        }
        svg.push_str("\"/></svg>");
        svg
    }
}

/// The centres of the alignment patterns along each axis (the standard's
/// annex E): none in version 1; from 6 to `size - 7`, one more every seven
/// versions, evenly spaced (exactly so up to version 13; larger versions
/// round, which is why `MAX_VERSION` stays below).
fn alignment_centres(version: usize) -> Vec<usize> {
    if version == 1 {
        return Vec::new();
    }
    let count = version / 7 + 2;
    let step = (4 * version + 4) / (count - 1);
    (0..count).map(|i| 6 + i * step).collect()
}

/// The error correction of a version: (codewords per block, blocks of the
/// first group, their data codewords, blocks of the second group).
fn blocks(version: usize) -> (usize, usize, usize, usize) {
    let (ec, blocks1, data1, blocks2) = BLOCKS[version - 1];
    (ec.into(), blocks1.into(), data1.into(), blocks2.into())
}

/// Bytes a version holds in byte mode at level M.
fn capacity(version: usize) -> usize {
    (data_length(version) * 8 - 4 - count_bits(version)) / 8
}

/// Bits of the character count in byte mode.
fn count_bits(version: usize) -> usize {
    if version < 10 {
        8
    } else {
        16
    }
}

/// Data codewords of a version at level M.
fn data_length(version: usize) -> usize {
    let (_, blocks1, data1, blocks2) = blocks(version);
    blocks1 * data1 + blocks2 * (data1 + 1)
}

/// Mode, count, the bytes, terminator and padding: the data codewords.
fn data_codewords(version: usize, text: &[u8]) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.push(0b0100, 4);
    bits.push(text.len() as u32, count_bits(version));
    for &byte in text {
        bits.push(u32::from(byte), 8);
    }
    let capacity_bits = data_length(version) * 8;
    bits.push(0, 4.min(capacity_bits - bits.length));
    bits.push(0, (8 - bits.length % 8) % 8);
    let mut codewords = bits.bytes;
    for pad in [0xEC, 0x11].into_iter().cycle() {
        if codewords.len() == data_length(version) {
            break;
        }
        codewords.push(pad);
    }
    codewords
}

/// A bit string, most significant bit first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    length: usize,
}

impl Bits {
    /// The low `count` bits of `value`.
    fn push(&mut self, value: u32, count: usize) {
        for i in (0..count).rev() {
            if self.length % 8 == 0 {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.length % 8);
            }
            self.length += 1;
        }
    }
}

/// The data split into blocks, each with its error-correction codewords,
/// then interleaved: the data of every block a codeword at a time, then the
/// error correction likewise.
fn interleave(version: usize, data: &[u8]) -> Vec<u8> {
    let (ec_length, blocks1, data1, blocks2) = blocks(version);
    let divisor = generator(ec_length);
    let mut blocks = Vec::with_capacity(blocks1 + blocks2);
    let mut rest = data;
    for block in 0..blocks1 + blocks2 {
        let (this, after) = rest.split_at(if block < blocks1 { data1 } else { data1 + 1 });
        blocks.push((this, remainder(this, &divisor)));
        rest = after;
    }
    let mut out = Vec::with_capacity(data.len() + ec_length * blocks.len());
    for i in 0..=data1 {
        out.extend(blocks.iter().filter_map(|(data, _)| data.get(i)));
    }
    for i in 0..ec_length {
        out.extend(blocks.iter().map(|(_, ec)| ec[i]));
    }
    out
}

/// Product in GF(256) modulo x^8 + x^4 + x^3 + x^2 + 1 (0x11D).
fn multiply(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0;
    while b != 0 {
        if b & 1 == 1 {
            product ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1D;
        }
        b >>= 1;
    }
    product
}

/// The Reed-Solomon generator polynomial of `degree`, the product of
/// (x - 2^i) for i below it: its coefficients after the leading 1, highest
/// power first.
fn generator(degree: usize) -> Vec<u8> {
    let mut coefficients = vec![0u8; degree];
    coefficients[degree - 1] = 1;
    let mut root = 1u8;
    for _ in 0..degree {
        // Multiply by (x + root): shift up one power, add root times the old.
        for j in 0..degree {
            coefficients[j] = multiply(coefficients[j], root);
            if j + 1 < degree {
                coefficients[j] ^= coefficients[j + 1];
            }
        }
        root = multiply(root, 2);
    }
    coefficients
}

/// The remainder of `data` times x^degree divided by the generator: the
/// error-correction codewords.
fn remainder(data: &[u8], generator: &[u8]) -> Vec<u8> {
    let mut result = vec![0u8; generator.len()];
    for &byte in data {
        let factor = byte ^ result[0];
        result.rotate_left(1);
        let last = result.len() - 1;
        result[last] = 0;
        for (r, &g) in result.iter_mut().zip(generator) {
            *r ^= multiply(g, factor);
        }
    }
    result
}

/// The 15 bits of format information: level M (`00`), the mask, a BCH(15,5)
/// code, masked with 0x5412 so that it is never all light.
fn format_bits(mask: u8) -> u32 {
    let data = u32::from(mask); // level M is 00
    (data << 10 | bch(data, 0x537, 10)) ^ 0x5412
}

/// The 18 bits of version information (versions 7 and up): the version and
/// a BCH(18,6) code.
fn version_bits(version: usize) -> u32 {
    let data = version as u32;
    data << 12 | bch(data, 0x1F25, 12)
}

/// The remainder of `data` times x^degree divided by `polynomial` (of that
/// degree), over GF(2).
fn bch(data: u32, polynomial: u32, degree: u32) -> u32 {
    let mut value = data << degree;
    for bit in (degree..32).rev() {
        if value >> bit & 1 == 1 {
            value ^= polynomial << (bit - degree);
        }
    }
    value
}

/// The symbol being built: its modules and which of them are function
/// patterns (finders, timing, alignment, format and version information),
/// which data and masks leave alone.
#[derive(Clone)]
struct Grid {
    version: usize,
    size: usize,
    dark: Vec<bool>,
    function: Vec<bool>,
}

impl Grid {
    /// The function patterns of `version`, with the format areas reserved.
    fn new(version: usize) -> Grid {
        let size = 17 + 4 * version;
        let mut grid = Grid { version, size, dark: vec![false; size * size], function: vec![false; size * size] };
        for i in 0..size {
            grid.set(6, i, i % 2 == 0);
            grid.set(i, 6, i % 2 == 0);
        }
        for (x, y) in [(3, 3), (size - 4, 3), (3, size - 4)] {
            // Finders: a dark centre of 3x3, light, dark, and a light separator.
            grid.square(x, y, 4, 0b10100);
        }
        let centres = alignment_centres(version);
        for &x in &centres {
            for &y in &centres {
                // Three corners hold finders; the fourth (lower right) has none.
                let at_an_end = |centre: usize| centre == 6 || centre == size - 7;
                let on_a_finder = at_an_end(x) && at_an_end(y) && (x == 6 || y == 6);
                if !on_a_finder {
                    grid.square(x, y, 2, 0b010);
                }
            }
        }
        // Reserved now (light), written once the mask is chosen.
        grid.write_information(None);
        grid
    }

    fn set(&mut self, x: usize, y: usize, dark: bool) {
        self.dark[y * self.size + x] = dark;
        self.function[y * self.size + x] = true;
    }

    /// A pattern of square rings centred on (x, y) out to `radius` (cut at
    /// the symbol's edge): ring `r` light when bit `r` of `light_rings` is set.
    fn square(&mut self, x: usize, y: usize, radius: usize, light_rings: u32) {
        for py in y.saturating_sub(radius)..(y + radius + 1).min(self.size) {
            for px in x.saturating_sub(radius)..(x + radius + 1).min(self.size) {
                let ring = px.abs_diff(x).max(py.abs_diff(y));
                self.set(px, py, light_rings >> ring & 1 == 0);
            }
        }
    }

    /// Both copies of the format information for `mask` and of the version
    /// information, and the dark module beside the lower-left finder; with
    /// no mask, their places are reserved and left light.
    fn write_information(&mut self, mask: Option<u8>) {
        let bits = mask.map_or(0, format_bits);
        let bit = |i: usize| bits >> i & 1 == 1;
        let size = self.size;
        for i in 0..15 {
            // Around the upper-left finder: down column 8, then along row 8.
            let (x, y) = match i {
                0..=5 => (8, i),
                6 => (8, 7),
                7 => (8, 8),
                8 => (7, 8),
                _ => (14 - i, 8),
            };
            self.set(x, y, bit(i));
            // The copy: along row 8 under the upper-right finder, then up
            // column 8 beside the lower-left one.
            let (x, y) = if i < 8 { (size - 1 - i, 8) } else { (8, size - 15 + i) };
            self.set(x, y, bit(i));
        }
        self.set(8, size - 8, mask.is_some());
        if self.version >= 7 {
            let bits = if mask.is_some() { version_bits(self.version) } else { 0 };
            for i in 0..18 {
                let dark = bits >> i & 1 == 1;
                let (a, b) = (self.size - 11 + i % 3, i / 3);
                self.set(a, b, dark);
                self.set(b, a, dark);
            }
        }
    }

    /// The codewords, most significant bit first, in the standard's zigzag:
    /// two columns at a time from the right, up then down, skipping the
    /// vertical timing column. Modules left over stay light.
    fn place_data(&mut self, codewords: &[u8]) {
        let size = self.size;
        let mut next = 0;
        let mut right = size - 1;
        loop {
            if right == 6 {
                right -= 1;
            }
            // The rightmost pair goes up, the next down, and so on (the
            // pair left of the timing column counts as if it were not moved).
            let upward = (right + 1) & 2 == 0;
            for step in 0..size {
                let y = if upward { size - 1 - step } else { step };
                for x in [right, right - 1] {
                    if self.function[y * size + x] {
                        continue;
                    }
                    let bit = codewords.get(next / 8).is_some_and(|byte| byte >> (7 - next % 8) & 1 == 1);
                    self.dark[y * size + x] = bit;
                    next += 1;
                }
            }
            if right < 2 {
                break;
            }
            right -= 2;
        }
    }

    /// Invert the data modules `mask` selects.
    fn apply_mask(&mut self, mask: u8) {
        for y in 0..self.size {
            for x in 0..self.size {
                let at = y * self.size + x;
                if !self.function[at] && masked(mask, x, y) {
                    self.dark[at] = !self.dark[at];
                }
            }
        }
    }

    /// The standard's penalty score (lower is better).
    fn penalty(&self) -> u32 {
        let size = self.size;
        // The columns as the rows of a copy turned over its diagonal.
        let columns: Vec<bool> = (0..size * size).map(|at| self.dark[at % size * size + at / size]).collect();
        let mut score = 0;
        for line in self.dark.chunks(size).chain(columns.chunks(size)) {
            score += runs_penalty(line) + finder_like_penalty(line);
        }
        // Rule 2: 3 for each 2x2 block of one colour (overlaps counted).
        for (upper, lower) in self.dark.chunks(size).zip(self.dark.chunks(size).skip(1)) {
            for x in 0..size - 1 {
                let colour = upper[x];
                if upper[x + 1] == colour && lower[x] == colour && lower[x + 1] == colour {
                    score += 3;
                }
            }
        }
        // Rule 4: 10 for every whole 5% the dark share is away from 50%.
        let total = size * size;
        let dark = self.dark.iter().filter(|&&dark| dark).count();
        score += (dark * 20).abs_diff(total * 10) / total * 10;
        score as u32
    }
}

/// Whether mask `mask` inverts the module in column `x`, row `y`.
fn masked(mask: u8, x: usize, y: usize) -> bool {
    match mask {
        0 => (x + y) % 2 == 0,
        1 => y % 2 == 0,
        2 => x % 3 == 0,
        3 => (x + y) % 3 == 0,
        4 => (y / 2 + x / 3) % 2 == 0,
        5 => (x * y) % 2 + (x * y) % 3 == 0,
        6 => ((x * y) % 2 + (x * y) % 3) % 2 == 0,
        _ => ((x + y) % 2 + (x * y) % 3) % 2 == 0,
    }
}

/// Rule 1: 3 for a run of five modules of one colour in a line, one more
/// for each module past five.
fn runs_penalty(line: &[bool]) -> usize {
    let mut score = 0;
    let mut run = 0;
    for (i, &module) in line.iter().enumerate() {
        run = if i > 0 && line[i - 1] == module { run + 1 } else { 1 };
        let ends = line.get(i + 1) != Some(&module);
        if ends && run >= 5 {
            score += run - 2;
        }
    }
    score
}

/// Rule 3: 40 for each 1:1:3:1:1 pattern (dark-light-dark-dark-dark-
/// light-dark) with four light modules before or after it, every window of
/// eleven modules inside the symbol looked at on its own. Reference
/// encoders differ here (some count the quiet zone as light, some count a
/// pattern once when it has light on both sides); this is python-qrcode's
/// reading, which the known-answer test below holds us to.
fn finder_like_penalty(line: &[bool]) -> usize {
    const PATTERN: [bool; 7] = [true, false, true, true, true, false, true];
    let light = |modules: &[bool]| modules.iter().all(|&dark| !dark);
    let windows = line.windows(11);
    windows.filter(|w| (w[..7] == PATTERN && light(&w[7..])) || (light(&w[..4]) && w[4..] == PATTERN)).count() * 40
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The symbol as rows of `#` (dark) and `.` (light).
    fn picture(code: &QrCode) -> String {
        (0..code.size)
            .map(|y| (0..code.size).map(|x| if code.is_dark(x, y) { '#' } else { '.' }).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn symbols_are_the_reference_encoders() {
        // python-qrcode 8.2, `QRCode(error_correction=ERROR_CORRECT_M)` with
        // `QRData(text, mode=MODE_8BIT_BYTE)`, run once when this test was
        // written: its version, its mask and, for the first, every module.
        let expected = [
            "#######..#.#..#######",
            "#.....#...##..#.....#",
            "#.###.#.#####.#.###.#",
            "#.###.#.###...#.###.#",
            "#.###.#.##..#.#.###.#",
            "#.....#.##.#..#.....#",
            "#######.#.#.#.#######",
            "........#.#..........",
            "#.#####....#..#####..",
            "#...#.....########..#",
            "..##.###.#..##.....#.",
            "##..#..#######..####.",
            ".###..#.#...#.#.##..#",
            "........#.#.##.####.#",
            "#######...##......##.",
            "#.....#.#.#.....####.",
            "#.###.#.####...#....#",
            "#.###.#.##.########..",
            "#.###.#.#...#.#..##..",
            "#.....#..##########..",
            "#######.##..#..#.#.#.",
        ];
        let code = QrCode::encode(b"intercomd").unwrap();
        assert_eq!((code.version, code.mask), (1, 2));
        assert_eq!(picture(&code), expected.join("\n"));
        let cases: [(&[u8], usize, u8); 5] = [
            (b"hi", 1, 0),
            (b"https://192.168.1.20:8443/trust.html", 3, 4),
            ("https://intercom.local:8443/trust.html?\u{fc}".as_bytes(), 3, 3),
            (&[b'x'; 150], 8, 2),
            (&[b'a'; MAX_QR_TEXT_BYTES], 12, 1),
        ];
        for (text, version, mask) in cases {
            let code = QrCode::encode(text).unwrap();
            assert_eq!((code.version, code.mask), (version, mask), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn format_information_is_the_standards_table_for_level_m() {
        // ISO/IEC 18004 table C.1, level M, masks 0 to 7.
        let expected = [
            0b101010000010010,
            0b101000100100101,
            0b101111001111100,
            0b101101101001011,
            0b100010111111001,
            0b100000011001110,
            0b100111110010111,
            0b100101010100000,
        ];
        for (mask, bits) in expected.into_iter().enumerate() {
            assert_eq!(format_bits(mask as u8), bits, "mask {mask}");
        }
    }

    #[test]
    fn alignment_patterns_are_where_annex_e_puts_them() {
        let annex_e: [&[usize]; MAX_VERSION] = [
            &[],
            &[6, 18],
            &[6, 22],
            &[6, 26],
            &[6, 30],
            &[6, 34],
            &[6, 22, 38],
            &[6, 24, 42],
            &[6, 26, 46],
            &[6, 28, 50],
            &[6, 30, 54],
            &[6, 32, 58],
        ];
        for (version, centres) in (1..=MAX_VERSION).zip(annex_e) {
            assert_eq!(alignment_centres(version), centres, "version {version}");
        }
    }

    #[test]
    fn version_information_is_the_standards_table() {
        // ISO/IEC 18004 table D.1.
        assert_eq!(version_bits(7), 0x07C94);
        assert_eq!(version_bits(8), 0x085BC);
        assert_eq!(version_bits(12), 0x0C762);
    }

    #[test]
    fn reed_solomon_matches_the_standards_example() {
        // ISO/IEC 18004 annex I: "01234567" as 1-M, whose 16 data codewords
        // give these 10 error-correction codewords.
        let data = [0x10, 0x20, 0x0C, 0x56, 0x61, 0x80, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11];
        assert_eq!(remainder(&data, &generator(10)), [0xA5, 0x24, 0xD4, 0xC1, 0xED, 0x36, 0xC7, 0x87, 0x2C, 0x55]);
    }

    #[test]
    fn every_version_has_room_for_exactly_its_codewords() {
        // The modules left for data are the codewords' bits and the
        // remainder bits (0, 7 or 0 for versions 1, 2 to 6, 7 to 13).
        for version in 1..=MAX_VERSION {
            let grid = Grid::new(version);
            let free = grid.function.iter().filter(|&&function| !function).count();
            let (ec, blocks1, _, blocks2) = blocks(version);
            let codewords = data_length(version) + ec * (blocks1 + blocks2);
            let remainder = if (2..=6).contains(&version) { 7 } else { 0 };
            assert_eq!(free, codewords * 8 + remainder, "version {version}");
        }
        assert_eq!(capacity(1), 14);
        assert_eq!(capacity(10), 213);
        assert_eq!(capacity(MAX_VERSION), 287);
    }

    #[test]
    fn the_limit_fits_and_one_byte_more_is_refused() {
        let at_limit = vec![b'a'; MAX_QR_TEXT_BYTES];
        let code = QrCode::encode(&at_limit).unwrap();
        assert_eq!((code.version, code.size), (12, 65));
        let over = vec![b'a'; MAX_QR_TEXT_BYTES + 1];
        let error = QrCode::encode(&over).unwrap_err();
        assert_eq!(error, QrError::TooLong(MAX_QR_TEXT_BYTES + 1));
        assert_eq!(error.to_string(), "the text is 257 bytes of UTF-8; a QR code here holds at most 256");
        assert_eq!(QrCode::encode(b"").unwrap().version, 1, "an empty text is a code too");
    }

    #[test]
    fn versions_grow_with_the_text() {
        for (length, version) in [(14, 1), (15, 2), (26, 2), (27, 3), (213, 10), (214, 11), (251, 11), (252, 12)] {
            assert_eq!(QrCode::encode(&vec![b'x'; length]).unwrap().version, version, "{length} bytes");
        }
    }

    #[test]
    fn the_svg_draws_every_dark_module_once() {
        let code = QrCode::encode(b"hi").unwrap();
        let svg = code.to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 29 29\""), "{svg}");
        assert!(svg.contains("shape-rendering=\"crispEdges\""));
        assert_eq!(svg.matches("<path").count(), 1);
        // The top row starts with the upper-left finder's seven dark modules.
        assert!(svg.contains("d=\"M4 4.5h7M"), "{svg}");
        let path = svg.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
        let drawn: usize =
            path.split('h').skip(1).map(|run| run.split('M').next().unwrap().parse::<usize>().unwrap()).sum();
        let dark =
            (0..code.size).flat_map(|y| (0..code.size).map(move |x| (x, y))).filter(|&(x, y)| code.is_dark(x, y));
        assert_eq!(drawn, dark.count());
    }
}
