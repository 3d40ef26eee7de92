//! DEFLATE decoding (RFC 1951), for the one client in a hundred that asks
//! for a page without gzip: the embedded pages are stored gzipped
//! (`build.rs`), and this turns one back into its text.
//!
//! Small rather than fast: Huffman codes are decoded a bit at a time from
//! the code counts per length, as the RFC defines them, with no lookup
//! tables. It costs 4.3 KiB of binary where a general-purpose inflater
//! (miniz_oxide) cost 13.1 KiB, and it only ever reads our own pages, made
//! at build time. Still, input is never trusted: anything malformed (a bad
//! block type, a code that is not in the table, a distance reaching before
//! the start, input that ends early) is `None`, never a panic, and the
//! output is bounded by `limit`.

/// Bits read from the input, least significant first (RFC 1951, 3.1.1).
struct Bits<'a> {
    input: &'a [u8],
    at: usize,
    buffer: u32,
    count: u32,
}

impl Bits<'_> {
    /// The next `n` bits (at most 16) as a number, first bit lowest.
    fn take(&mut self, n: u32) -> Option<u32> {
        while self.count < n {
            let byte = *self.input.get(self.at)?;
            self.at += 1;
            self.buffer |= u32::from(byte) << self.count;
            self.count += 8;
        }
        let value = self.buffer & ((1 << n) - 1);
        self.buffer >>= n;
        self.count -= n;
        Some(value)
    }

    /// Drop the bits left of the current byte (before a stored block).
    fn align(&mut self) {
        self.buffer = 0;
        self.count = 0;
    }

    /// One symbol of `code`: read bit by bit until the code so far is one
    /// of the codes of its length (they are consecutive, canonical order).
    fn symbol(&mut self, code: &Code) -> Option<u16> {
        let (mut value, mut first, mut index) = (0usize, 0usize, 0usize);
        for &count in &code.counts[1..] {
            value |= self.take(1)? as usize;
            let count = usize::from(count);
            if value < first + count {
                return code.symbols.get(index + value - first).copied();
            }
            index += count;
            first = (first + count) << 1;
            value <<= 1;
        }
        None
    }
}

/// A canonical Huffman code: how many codes of each length (1 to 15), and
/// the symbols in code order.
struct Code {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Code {
    /// The code with these lengths per symbol (0: the symbol is unused).
    fn new(lengths: &[u8]) -> Code {
        let mut counts = [0u16; 16];
        for &length in lengths {
            counts[usize::from(length)] += 1;
        }
        counts[0] = 0;
        let mut symbols = Vec::with_capacity(lengths.len());
        for length in 1..16 {
            for (symbol, _) in lengths.iter().enumerate().filter(|(_, &l)| usize::from(l) == length) {
                symbols.push(symbol as u16);
            }
        }
        Code { counts, symbols }
    }
}

/// Lengths 3 to 258: the base of each length symbol (257 to 285) and its
/// extra bits.
const LENGTH_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
/// Distances 1 to 32768: the base of each distance symbol and its extra
/// bits.
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/// The order in which a dynamic block gives the code length code's lengths.
const LENGTH_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// The bytes that the raw DEFLATE stream `input` encodes; `None` if it is
/// malformed or would inflate to more than `limit` bytes.
pub fn inflate(input: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut bits = Bits { input, at: 0, buffer: 0, count: 0 };
    let mut out = Vec::new();
    loop {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => {
                bits.align();
                let header = input.get(bits.at..bits.at + 4)?;
                let length = usize::from(u16::from_le_bytes([header[0], header[1]]));
                if u16::from_le_bytes([header[2], header[3]]) != !(length as u16) {
                    return None;
                }
                bits.at += 4;
                out.extend_from_slice(input.get(bits.at..bits.at + length)?);
                bits.at += length;
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                blocks(&mut bits, &Code::new(&lengths), &Code::new(&[5; 30]), &mut out, limit)?;
            }
            2 => {
                let (literals, distances) = dynamic_codes(&mut bits)?;
                blocks(&mut bits, &literals, &distances, &mut out, limit)?;
            }
            _ => return None,
        }
        if out.len() > limit {
            return None;
        }
        if last {
            return Some(out);
        }
    }
}

/// The literal/length and distance codes at the start of a dynamic block.
fn dynamic_codes(bits: &mut Bits) -> Option<(Code, Code)> {
    let literals = bits.take(5)? as usize + 257;
    let distances = bits.take(5)? as usize + 1;
    let given = bits.take(4)? as usize + 4;
    let mut length_lengths = [0u8; 19];
    for &symbol in &LENGTH_ORDER[..given] {
        length_lengths[symbol] = bits.take(3)? as u8;
    }
    let length_code = Code::new(&length_lengths);
    let mut lengths = Vec::with_capacity(literals + distances);
    while lengths.len() < literals + distances {
        let (value, repeat) = match bits.symbol(&length_code)? {
            length @ 0..=15 => (length as u8, 1),
            16 => (*lengths.last()?, 3 + bits.take(2)?),
            17 => (0, 3 + bits.take(3)?),
            _ => (0, 11 + bits.take(7)?),
        };
        lengths.extend(std::iter::repeat_n(value, repeat as usize));
    }
    if lengths.len() != literals + distances || lengths[256] == 0 {
        return None;
    }
    Some((Code::new(&lengths[..literals]), Code::new(&lengths[literals..])))
}

/// The symbols of one compressed block, up to its end-of-block symbol.
fn blocks(bits: &mut Bits, literals: &Code, distances: &Code, out: &mut Vec<u8>, limit: usize) -> Option<()> {
    loop {
        let symbol = bits.symbol(literals)?;
        let index = match symbol {
            0..=255 => {
                out.push(symbol as u8);
                continue;
            }
            256 => return Some(()),
            _ => usize::from(symbol - 257),
        };
        let length = usize::from(*LENGTH_BASE.get(index)?) + bits.take(u32::from(LENGTH_EXTRA[index]))? as usize;
        let index = usize::from(bits.symbol(distances)?);
        let distance = usize::from(*DISTANCE_BASE.get(index)?) + bits.take(u32::from(DISTANCE_EXTRA[index]))? as usize;
        if distance > out.len() || out.len() + length > limit {
            return None;
        }
        let start = out.len() - distance;
        // Byte by byte: a copy may overlap what it writes (a run).
        for i in 0..length {
            out.push(out[start + i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_fixed_and_dynamic_blocks_inflate() {
        // Stored: "hi" in one final stored block.
        assert_eq!(inflate(&[0x01, 0x02, 0x00, 0xfd, 0xff, b'h', b'i'], 100).unwrap(), b"hi");
        // A short text gets a fixed-code block, a long one a dynamic one;
        // both copy runs back from what came before.
        let short = b"abcabcabcabcabcabc hello hello hello";
        let long: Vec<u8> = (0..20_000u32).map(|i| b"intercom door ring "[(i * i % 19) as usize]).collect();
        for (text, block_type) in [(&short[..], 1), (&long[..], 2)] {
            for level in [1, 6, 10] {
                let deflated = miniz_oxide::deflate::compress_to_vec(text, level);
                assert_eq!(deflated[0] >> 1 & 3, block_type, "level {level}");
                assert_eq!(inflate(&deflated, text.len()).unwrap(), text);
            }
        }
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        let deflated = miniz_oxide::deflate::compress_to_vec(&[7u8; 5000], 6);
        assert_eq!(inflate(&deflated, 5000).unwrap(), vec![7u8; 5000]);
        assert_eq!(inflate(&deflated, 4999), None, "over the limit");
        for cut in 0..deflated.len() {
            assert_eq!(inflate(&deflated[..cut], 5000), None, "cut at {cut}");
        }
        assert_eq!(inflate(&[0x07], 10), None, "block type 3");
        assert_eq!(inflate(&[0x01, 0x02, 0x00, 0x00, 0x00, b'h', b'i'], 10), None, "NLEN wrong");
        for seed in 0..2000u32 {
            let noise: Vec<u8> =
                (0..64).map(|i| (seed.wrapping_mul(2_654_435_761).rotate_left(i) >> 7) as u8).collect();
            let _ = inflate(&noise, 1 << 16);
        }
    }
}
