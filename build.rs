//! Embeds every file under `www/` into the binary, with a content hash for
//! its ETag, so that `intercomd` with no flags serves the pages. Scripts,
//! style sheets and pages lose their comments and indentation on the way
//! ([`minify`]: what a phone downloads and the binary carries is code,
//! not our notes). Text that compresses well is stored gzipped by zopfli
//! (browsers take it as is; the rare client without gzip gets it
//! inflated), which keeps the pages from growing the binary past its
//! budget.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("www");
    println!("cargo:rerun-if-changed=www");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let mut code = String::from("pub static EMBEDDED: &[EmbeddedFile] = &[\n");
    let minified: Vec<Vec<u8>> =
        files.iter().map(|(name, path)| minify(name, std::fs::read(path).expect("read a file under www/"))).collect();
    let version = shell_version(&files, &minified);
    for (index, ((name, path), bytes)) in files.iter().zip(minified).enumerate() {
        if bytes.is_empty() {
            panic!("{name} is empty after minifying");
        }
        let bytes = if name == SERVICE_WORKER { with_shell_version(bytes, &version) } else { bytes };
        let hash = fnv1a(&bytes);
        let gzipped = gzip(&bytes);
        // Worth it only when it saves a tenth or more.
        let body = if gzipped.len() * 10 < bytes.len() * 9 {
            let gz_path = out_dir.join(format!("www-{index}.gz"));
            std::fs::write(&gz_path, &gzipped).expect("write a gzipped page");
            format!("Body::Gzip(include_bytes!({:?}))", gz_path.display().to_string())
        } else if name == SERVICE_WORKER {
            // Its bytes are not the source's any more.
            let plain_path = out_dir.join(format!("www-{index}"));
            std::fs::write(&plain_path, &bytes).expect("write the service worker");
            format!("Body::Plain(include_bytes!({:?}))", plain_path.display().to_string())
        } else {
            format!("Body::Plain(include_bytes!({:?}))", path.display().to_string())
        };
        writeln!(code, "    EmbeddedFile {{ name: {name:?}, hash: \"{hash:016x}\", body: {body} }},")
            .expect("write to a String");
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("embedded.rs"), code).expect("write embedded.rs");
}

/// The service worker, whose cache name carries [`shell_version`] in place of
/// [`VERSION_PLACEHOLDER`].
const SERVICE_WORKER: &str = "sw.js";
const VERSION_PLACEHOLDER: &str = "__SHELL_VERSION__";

/// A hash of every embedded file but the service worker, names included: it
/// changes whenever a page, script, style or icon changes, so the worker's
/// bytes change with it and browsers install the new worker, which caches
/// the new shell under a new name (see www/sw.js).
fn shell_version(files: &[(String, PathBuf)], minified: &[Vec<u8>]) -> String {
    let mut all = Vec::new();
    for ((name, _), bytes) in files.iter().zip(minified) {
        if name != SERVICE_WORKER {
            all.extend_from_slice(name.as_bytes());
            all.push(0);
            all.extend_from_slice(&fnv1a(bytes).to_le_bytes());
        }
    }
    format!("{:016x}", fnv1a(&all))
}

fn with_shell_version(bytes: Vec<u8>, version: &str) -> Vec<u8> {
    let text = String::from_utf8(bytes).expect("www/sw.js is UTF-8");
    assert!(text.contains(VERSION_PLACEHOLDER), "www/sw.js names its cache with {VERSION_PLACEHOLDER}");
    text.replace(VERSION_PLACEHOLDER, version).into_bytes()
}

/// Every regular file below `dir`, skipping hidden names (editor swap files,
/// `.DS_Store`), as (path relative to `root` with `/`, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.is_file() {
            let relative = path.strip_prefix(root).expect("below root").to_string_lossy().replace('\\', "/");
            files.push((relative, path));
        }
    }
}

/// A gzip member with no name and no timestamp, so builds are reproducible
/// (zopfli writes both as zero): `static_files::gunzip` expects exactly that
/// 10-byte header.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gzipped = Vec::new();
    zopfli::compress(zopfli::Options::default(), zopfli::Format::Gzip, bytes, &mut gzipped)
        .expect("compress in memory");
    gzipped
}

/// `.js`, `.css` and `.html` without what only a reader of the source needs:
/// indentation, blank lines, lines that are only a `//` comment (scripts),
/// and comments that start a line and span whole lines (`/* */` in scripts
/// and style sheets, `<!-- -->` in pages). Line by line, so no line is
/// joined to another and a script's automatic semicolons stay where they
/// were; a line inside a multi-line template literal is copied as it is.
/// Other files, and any file that is not UTF-8, are kept byte for byte.
fn minify(name: &str, bytes: Vec<u8>) -> Vec<u8> {
    let (open, close) = match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("js" | "css") => ("/*", "*/"),
        Some("html") => ("<!--", "-->"),
        _ => return bytes,
    };
    let script = name.ends_with(".js");
    let Ok(text) = String::from_utf8(bytes.clone()) else { return bytes };
    let mut out = String::with_capacity(text.len());
    let mut in_comment = false;
    let mut in_template = false;
    for line in text.lines() {
        if in_template {
            out.push_str(line);
            out.push('\n');
            in_template = line.matches('`').count() % 2 == 0;
            continue;
        }
        let line = line.trim();
        if in_comment {
            in_comment = !line.ends_with(close);
            // A comment that ends mid-line leaves code after it: keep the
            // whole line rather than cut it.
            if line.contains(close) && !line.ends_with(close) {
                out.push_str(line);
                out.push('\n');
                in_comment = false;
            }
            continue;
        }
        if line.is_empty() || (script && line.starts_with("//")) {
            continue;
        }
        if line.starts_with(open) && !line[open.len()..].contains(close) {
            in_comment = true;
            continue;
        }
        if line.starts_with(open)
            && line.ends_with(close)
            && line[open.len()..].find(close) == Some(line.len() - open.len() - close.len())
        {
            continue;
        }
        let line = if script { without_trailing_comment(line) } else { line };
        out.push_str(line);
        out.push('\n');
        in_template = script && line.matches('`').count() % 2 == 1;
    }
    if name.ends_with(".css") {
        return compact_css(&out).into_bytes();
    }
    out.into_bytes()
}

/// A style sheet without the spaces and line breaks that mean nothing:
/// around `{ } ; ,` and after `:`. A space before `:` stays (`.a :hover`
/// is not `.a:hover`), and so does everything inside quotes.
fn compact_css(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote = None;
    let mut space = false;
    for c in text.chars() {
        if let Some(open) = quote {
            out.push(c);
            if c == open {
                quote = None;
            }
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() && !out.ends_with(['{', '}', ';', ',', ':']) && !matches!(c, '{' | '}' | ';' | ',')
        {
            out.push(' ');
        }
        space = false;
        if c == '"' || c == '\'' {
            quote = Some(c);
        }
        out.push(c);
    }
    out.push('\n');
    out
}

/// A script line without its trailing ` // comment`: the first ` //` that
/// follows a space and is outside quotes ('', "", ``) ends the code. A line
/// whose quotes do not close on it is kept whole.
fn without_trailing_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        match (quote, bytes[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(open), byte) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, byte @ (b'\'' | b'"' | b'`')) => quote = Some(byte),
            (None, b' ') if bytes[i + 1..].starts_with(b"// ") => return line[..i].trim_end(),
            (None, _) => {}
        }
        i += 1;
    }
    line
}

/// FNV-1a, 64 bits: enough to tell two versions of a page apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
