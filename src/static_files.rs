//! The caller pages: the copy embedded at build time (`build.rs`), or a
//! directory on disk with `--www`.
//!
//! Path-traversal defences, in the order they apply:
//! 1. The path is percent-decoded exactly once; a broken escape or a result
//!    that is not UTF-8 is a 400, never "best effort".
//! 2. The decoded path is refused (400) if it holds a NUL, a backslash or any
//!    control character, so no encoding of `..\` or `\0` reaches the disk.
//! 3. It is split on `/` and refused (404) if any segment is `.`, `..` or
//!    starts with a dot (no `.git`, no editor files).
//! 4. Embedded pages: only names in the build-time table exist.
//! 5. Disk pages: the file is opened below the `--www` root only; its
//!    canonical path must still start with the canonical root (a symlink
//!    out of the tree is a 404), and only regular files are served: a
//!    directory gets its `index.html` or a 404, never a listing.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::http::{percent_decode, Request, Response};

pub struct EmbeddedFile {
    /// Path below www/, with `/`.
    pub name: &'static str,
    /// FNV-1a of the original bytes, in hex, made at build time.
    pub hash: &'static str,
    pub body: Body,
}

/// How a page is stored in the binary.
pub enum Body {
    Plain(&'static [u8]),
    /// A gzip member written by `build.rs` (10-byte header, no name, no
    /// extra fields, 8-byte trailer).
    Gzip(&'static [u8]),
}

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// A file ready to send.
struct Asset {
    body: Cow<'static, [u8]>,
    etag: Cow<'static, str>,
    content_type: &'static str,
    /// `Some("gzip")` when `body` is gzipped.
    encoding: Option<&'static str>,
    /// The file has a gzipped form, so the answer depends on
    /// `Accept-Encoding` (and says so with `Vary`).
    varies: bool,
}

/// Answer `GET`/`HEAD` for `request.path` from the embedded pages or `www`.
pub fn serve(request: &Request, www: Option<&Path>) -> Response {
    let segments = match safe_segments(&request.path) {
        Ok(segments) => segments,
        Err(status) => return Response::text(status, if status == 400 { "bad path" } else { "not found" }),
    };
    let asset = match www {
        None => embedded(&segments, accepts_gzip(request)),
        Some(root) => from_disk(root, &segments),
    };
    let Some(asset) = asset else {
        return Response::text(404, "not found");
    };
    let not_modified = request.header("if-none-match").is_some_and(|tags| {
        tags.split(',').any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == asset.etag
        })
    });
    let response = if not_modified {
        Response::new(304, asset.content_type, Vec::new())
    } else {
        Response::new(200, asset.content_type, asset.body)
    };
    let response = match asset.encoding {
        Some(encoding) => response.with_header("Content-Encoding", encoding),
        None => response,
    };
    let response = if asset.varies { response.with_header("Vary", "Accept-Encoding") } else { response };
    // no-cache: browsers revalidate with the ETag on every load, so a page
    // is never stale after an upgrade, and a 304 costs a few bytes.
    response
        .with_header("ETag", asset.etag)
        .with_header("Cache-Control", "no-cache")
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer")
}

/// Defences 1 to 3: the decoded, checked path segments; `/` and `/dir/`
/// end in `index.html`.
pub fn safe_segments(raw_path: &str) -> Result<Vec<String>, u16> {
    let decoded = percent_decode(raw_path, false).ok_or(400u16)?;
    if decoded.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(400);
    }
    let mut segments: Vec<String> = decoded.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    if segments.iter().any(|segment| segment.starts_with('.')) {
        return Err(404);
    }
    if decoded.ends_with('/') || segments.is_empty() {
        segments.push("index.html".to_string());
    }
    Ok(segments)
}

fn embedded(segments: &[String], gzip_ok: bool) -> Option<Asset> {
    let name = segments.join("/");
    let file = EMBEDDED.iter().find(|file| file.name == name)?;
    let content_type = content_type(&name);
    let asset = match file.body {
        Body::Plain(bytes) => Asset {
            body: Cow::Borrowed(bytes),
            etag: Cow::Owned(format!("\"{}\"", file.hash)),
            content_type,
            encoding: None,
            varies: false,
        },
        // Each representation has its own strong ETag.
        Body::Gzip(bytes) if gzip_ok => Asset {
            body: Cow::Borrowed(bytes),
            etag: Cow::Owned(format!("\"{}-gz\"", file.hash)),
            content_type,
            encoding: Some("gzip"),
            varies: true,
        },
        Body::Gzip(bytes) => Asset {
            body: Cow::Owned(gunzip(bytes)?),
            etag: Cow::Owned(format!("\"{}\"", file.hash)),
            content_type,
            encoding: None,
            varies: true,
        },
    };
    Some(asset)
}

/// True unless the client said it cannot take gzip (`gzip;q=0`) or never
/// offered it.
fn accepts_gzip(request: &Request) -> bool {
    request.header("accept-encoding").is_some_and(|accepted| {
        accepted.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused =
                parts.any(|param| matches!(param.replace(' ', "").as_str(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
    })
}

/// Inflate a gzip member written by `build.rs` (a 10-byte header without
/// a name, the deflated page, CRC-32 and length): exactly as many bytes as
/// its trailer says, or `None`.
fn gunzip(member: &'static [u8]) -> Option<Vec<u8>> {
    let (deflated, trailer) = member.get(10..)?.split_at_checked(member.len().checked_sub(18)?)?;
    let size = u32::from_le_bytes(trailer.get(4..8)?.try_into().ok()?) as usize;
    crate::inflate::inflate(deflated, size).filter(|page| page.len() == size)
}

fn from_disk(root: &Path, segments: &[String]) -> Option<Asset> {
    let root = root.canonicalize().ok()?;
    let mut path: PathBuf = root.clone();
    path.extend(segments);
    let mut canonical = path.canonicalize().ok()?;
    if !canonical.starts_with(&root) {
        return None;
    }
    if canonical.is_dir() {
        canonical = canonical.join("index.html").canonicalize().ok()?;
        if !canonical.starts_with(&root) {
            return None;
        }
    }
    let metadata = std::fs::metadata(&canonical).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let body = std::fs::read(&canonical).ok()?;
    let modified = metadata.modified().ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    let etag = format!("\"{:x}-{:x}\"", body.len(), modified.as_nanos());
    let name = canonical.to_string_lossy().into_owned();
    Some(Asset {
        body: Cow::Owned(body),
        etag: Cow::Owned(etag),
        content_type: content_type(&name),
        encoding: None,
        varies: false,
    })
}

/// Content-Type by file extension; unknown types are served as bytes.
pub fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "woff2" => "font/woff2",
        "pem" | "crt" => "application/x-x509-ca-cert",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: Result<&str, u16>) {
        let got = safe_segments(path).map(|segments| segments.join("/"));
        assert_eq!(got.as_deref().map_err(|e| *e), expected, "{path}");
    }

    #[test]
    fn path_defences() {
        check("/", Ok("index.html"));
        check("/app.js", Ok("app.js"));
        check("/sub/", Ok("sub/index.html"));
        check("//app.js", Ok("app.js"));
        check("/../etc/passwd", Err(404));
        check("/%2e%2e/etc/passwd", Err(404));
        check("/%2E%2E%2Fetc%2Fpasswd", Err(404));
        check("/..%5c..%5cetc", Err(400));
        check("/a%00b", Err(400));
        check("/%c0%ae%c0%ae/etc", Err(400));
        check("/%zz", Err(400));
        check("/.git/config", Err(404));
        check("/./app.js", Err(404));
    }

    #[test]
    fn embedded_pages_exist() {
        assert!(EMBEDDED.iter().any(|file| file.name == "index.html"), "www/index.html is compiled in");
        for file in EMBEDDED {
            assert_eq!(file.hash.len(), 16);
            if let Body::Gzip(bytes) = file.body {
                let plain = gunzip(bytes).unwrap_or_else(|| panic!("{} inflates", file.name));
                let reference = miniz_oxide::inflate::decompress_to_vec(&bytes[10..bytes.len() - 8]).unwrap();
                assert!(!plain.is_empty() && plain == reference, "{} inflates as miniz_oxide does", file.name);
            }
        }
    }

    #[test]
    fn types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x/app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
