//! What may import what (ARCHITECTURE.md, "What may import what"), read
//! off the sources: a change that breaks the layering fails here, not in a
//! review months later.

use std::collections::{BTreeMap, BTreeSet};

/// The pure core: no I/O, no `.await`, no clock. It imports only itself.
const CORE: [&str; 9] = ["router", "codec", "protocol", "peerjs", "liveness", "events", "jpeg", "qr", "door"];

/// (module, what it must never import)
const NEVER: [(&str, &[&str]); 7] = [
    // The pictures' store: beside the call log, below everything that serves.
    ("snapshots", &["hub", "router", "ws", "conn", "server", "daemon", "routes"]),
    // The call log and the consumers' queues: below the hub, beside the core.
    ("feed", &["hub", "router", "ws", "conn", "server", "daemon", "routes"]),
    ("sse", &["hub", "router", "ws", "server", "daemon", "routes"]),
    ("hub", &["ws", "conn", "server", "daemon", "routes"]),
    ("ws", &["conn", "server", "daemon", "routes"]),
    ("routes", &["ws", "conn", "server", "daemon", "stream", "tls", "outbox"]),
    ("conn", &["server", "daemon"]),
];

/// (module, the only modules that may import it)
const ONLY_FROM: [(&str, &[&str]); 9] = [
    // Running a door's command: for the open requests and the MQTT command topic.
    ("opener", &["conn", "mqtt"]),
    ("inflate", &["static_files"]),
    ("status", &["routes"]),
    ("conn", &["server"]),
    ("server", &["daemon"]),
    ("sse", &["conn"]),
    ("webhook", &["server"]),
    ("mqtt", &["server"]),
    ("resolve", &["mqtt", "webhook"]),
];

/// Each module of `src/` and the modules of this crate its non-test code
/// names (`crate::x`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut map = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src/") {
        let path = entry.expect("an entry of src/").path();
        let Some(module) = path.file_stem().and_then(|stem| stem.to_str()).map(str::to_string) else { continue };
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        // Unit tests may use whatever they like.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut names = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                names.insert(name);
            }
        }
        map.insert(module, names);
    }
    assert!(map.len() > 10 && map.contains_key("router"), "read the modules of src/: {map:?}");
    map
}

#[test]
fn no_two_modules_import_each_other() {
    let imports = imports();
    for (module, names) in &imports {
        for name in names {
            assert!(
                !imports.get(name).is_some_and(|theirs| theirs.contains(module)),
                "{module} and {name} import each other"
            );
        }
    }
}

#[test]
fn the_pure_core_imports_only_itself() {
    for (module, names) in imports().iter().filter(|(module, _)| CORE.contains(&module.as_str())) {
        for name in names {
            assert!(CORE.contains(&name.as_str()), "{module} (pure core) imports {name}");
        }
    }
}

#[test]
fn the_rim_is_layered() {
    let imports = imports();
    for (module, forbidden) in NEVER {
        for name in forbidden {
            assert!(!imports[module].contains(*name), "{module} must never import {name}");
        }
    }
    for (module, allowed) in ONLY_FROM {
        for (importer, names) in &imports {
            if names.contains(module) {
                assert!(allowed.contains(&importer.as_str()), "{importer} imports {module}; only {allowed:?} may");
            }
        }
    }
}
