//! Embeds every file under `www/` into the binary, with a content hash for
//! its ETag, so that `intercomd` with no flags serves the pages.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("www");
    println!("cargo:rerun-if-changed=www");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut code = String::from("pub static EMBEDDED: &[EmbeddedFile] = &[\n");
    for (name, path) in &files {
        let bytes = std::fs::read(path).expect("read a file under www/");
        writeln!(
            code,
            "    EmbeddedFile {{ name: {name:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}) }},",
            fnv1a(&bytes),
            path.display().to_string()
        )
        .expect("write to a String");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("embedded.rs");
    std::fs::write(out, code).expect("write embedded.rs");
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

/// FNV-1a, 64 bits: enough to tell two versions of a page apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
