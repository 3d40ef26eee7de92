//! Embeds every file under `www/` into the binary, with a content hash for
//! its ETag, so that `intercomd` with no flags serves the pages. Text that
//! compresses well is stored gzipped (browsers take it as is; the rare
//! client without gzip gets it inflated), which keeps the pages from
//! growing the binary past its budget.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("www");
    println!("cargo:rerun-if-changed=www");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let mut code = String::from("pub static EMBEDDED: &[EmbeddedFile] = &[\n");
    for (index, (name, path)) in files.iter().enumerate() {
        let bytes = std::fs::read(path).expect("read a file under www/");
        let hash = fnv1a(&bytes);
        let gzipped = gzip(&bytes);
        // Worth it only when it saves a tenth or more.
        let body = if gzipped.len() * 10 < bytes.len() * 9 {
            let gz_path = out_dir.join(format!("www-{index}.gz"));
            std::fs::write(&gz_path, &gzipped).expect("write a gzipped page");
            format!("Body::Gzip(include_bytes!({:?}))", gz_path.display().to_string())
        } else {
            format!("Body::Plain(include_bytes!({:?}))", path.display().to_string())
        };
        writeln!(code, "    EmbeddedFile {{ name: {name:?}, hash: \"{hash:016x}\", body: {body} }},")
            .expect("write to a String");
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("embedded.rs"), code).expect("write embedded.rs");
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

/// A gzip member with no name and no timestamp, so builds are reproducible.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("compress in memory");
    encoder.finish().expect("compress in memory")
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
