//! `GET /api/qr` over loopback: the daemon's SVG is drawn into a bitmap here
//! (its own path format, parsed, each module 4 pixels) and read back by
//! zbarimg (Debian's zbar-tools), which must find exactly the text asked for.
//! No outside service and no decoder of ours: a second, independent reader.

mod common;

use std::process::Command;

use common::Daemon;

/// Pixels per module in the bitmap handed to zbarimg.
const SCALE: usize = 4;

/// `text` with every byte but the unreserved ones as `%XX`, as a page's
/// `encodeURIComponent` sends it.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(byte).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The SVG as a plain PBM (`P1`): the viewBox's width in modules, the white
/// background, then each run of the path (`M<x> <y>.5h<length>`) in black.
fn rasterize(svg: &str) -> String {
    let view_box = svg.split("viewBox=\"0 0 ").nth(1).expect("a viewBox from 0 0");
    let width: usize = view_box.split(' ').next().unwrap().parse().expect("the viewBox's width in modules");
    assert!(svg.contains(&format!("<rect width=\"{width}\" height=\"{width}\" fill=\"#fff\"/>")), "{svg}");
    assert!(svg.contains("shape-rendering=\"crispEdges\""), "{svg}");
    assert_eq!(svg.matches("<path").count(), 1, "one path: {svg}");
    let path = svg.split("<path stroke=\"#000\" d=\"").nth(1).expect("the path").split('"').next().unwrap();
    let mut dark = vec![false; width * width];
    for run in path.split('M').skip(1) {
        let (x, rest) = run.split_once(' ').unwrap_or_else(|| panic!("a run is M<x> <y>.5h<n>: {run:?}"));
        let (y, length) = rest.split_once(".5h").unwrap_or_else(|| panic!("a run is M<x> <y>.5h<n>: {run:?}"));
        let (x, y, length): (usize, usize, usize) = (x.parse().unwrap(), y.parse().unwrap(), length.parse().unwrap());
        assert!(x + length <= width && y < width, "a run outside the viewBox: {run:?}");
        for module in &mut dark[y * width + x..y * width + x + length] {
            assert!(!*module, "a module drawn twice: {run:?}");
            *module = true;
        }
    }
    let pixels = width * SCALE;
    let mut pbm = format!("P1\n{pixels} {pixels}\n");
    for y in 0..pixels {
        let row: Vec<&str> =
            (0..pixels).map(|x| if dark[(y / SCALE) * width + x / SCALE] { "1" } else { "0" }).collect();
        pbm.push_str(&row.join(" "));
        pbm.push('\n');
    }
    pbm
}

/// What zbarimg reads off the image, as raw bytes (`-Sbinary`: no guessing
/// of the text's character set, and nothing added after it).
fn decode(pbm: &str, name: &str) -> Vec<u8> {
    let file = common::scratch_dir().join(format!("{name}.pbm"));
    std::fs::write(&file, pbm).unwrap();
    let output = match Command::new("zbarimg").args(["--raw", "-q", "-Sbinary"]).arg(&file).output() {
        Ok(output) => output,
        Err(error) => panic!(
            "zbarimg did not run ({error}): install zbar-tools (apt-get install zbar-tools; tests/run-all.sh does)"
        ),
    };
    assert!(output.status.success(), "zbarimg found no code in {}: {output:?}", file.display());
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
    output.stdout
}

#[test]
fn every_code_reads_back_as_exactly_its_text() {
    let daemon = Daemon::start(&[]);
    let at_limit: String = "https://intercom.local:8443/room.html?room=".chars().cycle().take(256).collect();
    let texts = [
        ("short", "intercomd".to_string()),
        ("trust", "https://192.168.1.20:8443/trust.html".to_string()),
        ("limit", at_limit),
        ("utf8", "Tür 🚪 Küche: https://[fe80::1]:8443/?öffnen=ja&x=1+2".to_string()),
    ];
    assert_eq!(texts[2].1.len(), 256, "MAX_QR_TEXT_BYTES");
    for (name, text) in &texts {
        let (status, headers, body) =
            common::http_get(daemon.addr, &format!("/api/qr?text={}", percent_encode(text)), "");
        let svg = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "{name}: {svg}");
        assert_eq!(common::header(&headers, "content-type"), Some("image/svg+xml"));
        assert_eq!(common::header(&headers, "cache-control"), Some("public, max-age=31536000, immutable"));
        let decoded = decode(&rasterize(&svg), name);
        assert_eq!(String::from_utf8_lossy(&decoded), *text, "{name}");
        assert_eq!(decoded, text.as_bytes(), "{name}: the very bytes");
    }
}

#[test]
fn a_text_over_the_limit_or_none_at_all_is_refused() {
    let daemon = Daemon::start(&[]);
    let over = "a".repeat(256) + "ü";
    let cases = [
        (
            format!("/api/qr?text={}", percent_encode(&over)),
            "the text is 258 bytes of UTF-8; a QR code here holds at most 256",
        ),
        (
            format!("/api/qr?text={}", "a".repeat(257)),
            "the text is 257 bytes of UTF-8; a QR code here holds at most 256",
        ),
        ("/api/qr".to_string(), "give the text to encode: /api/qr?text=<percent-encoded text>"),
        ("/api/qr?text=".to_string(), "give the text to encode: /api/qr?text=<percent-encoded text>"),
        ("/api/qr?text=%C3".to_string(), "text is not percent-encoded UTF-8"),
    ];
    for (target, error) in cases {
        let (status, headers, body) = common::http_get(daemon.addr, &target, "");
        assert_eq!(status, 400, "{target}");
        assert_eq!(common::header(&headers, "content-type"), Some("application/json"));
        assert_eq!(common::json_body(&body), serde_json::json!({ "error": error }), "{target}");
    }
}
