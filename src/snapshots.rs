//! Door snapshots: the stills that pages upload with a ring, kept in
//! `--state-dir`/`snapshots/` beside the call log.
//!
//! Invariants:
//! - At most `max_count` stills and `max_bytes` bytes are kept; a new one
//!   pushes out the oldest first. What is kept is known in memory (names,
//!   sizes, order), so deciding costs no disk access.
//! - A still's name is 128 random bits in hex (`<32 hex>.jpg`): nobody can
//!   guess another household member's picture, and only names this store
//!   made are ever served or deleted.
//! - Every file is written as a temporary file, synced and renamed, and its
//!   directory synced, off the daemon's thread (`feed::write_atomically`):
//!   after a power cut a still is there whole or not at all. A failed write
//!   (a full SD card) forgets the still and says so once per failing spell.
//! - A still uploaded by a peer can be attached to that peer's ring only,
//!   once, within [`CLAIM_WINDOW`] of its upload.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use log::info;

use crate::feed::write_atomically;

/// The stills' directory inside `--state-dir`.
pub const DIR: &str = "snapshots";
/// Default `--max-snapshots`: a few weeks of rings at a family's front door.
pub const DEFAULT_MAX_COUNT: usize = 200;
/// Default `--max-snapshot-bytes`: 20 MiB, little on any SD card.
pub const DEFAULT_MAX_BYTES: u64 = 20 * 1024 * 1024;
/// How long after its upload a still can be attached to its owner's ring;
/// one that was not by then is removed at the next upload (it belongs to
/// no ring, and must not push out the pictures that do).
pub const CLAIM_WINDOW: Duration = Duration::from_secs(60);
/// Uploads one peer may make per minute (a ring's worth each; rings
/// themselves are limited to 6 a minute per caller).
pub const MAX_UPLOADS_PER_MINUTE: usize = 6;
/// Uploads all peers together may make per minute: a flood of pictures
/// from many ids cannot wipe the history of visitors in one go.
pub const MAX_RECENT_UPLOADS: usize = 30;

/// One kept still.
struct Kept {
    /// `<32 hex>.jpg`.
    name: String,
    bytes: u64,
    /// Who uploaded it and when, while it may still be attached to a ring;
    /// `None` once attached, and for stills found on disk at start.
    claimable: Option<(String, Instant)>,
}

pub struct Snapshots {
    dir: PathBuf,
    max_count: usize,
    max_bytes: u64,
    /// Oldest first.
    kept: Vec<Kept>,
    total: u64,
    /// The last write failed (a full or read-only card).
    failing: bool,
    /// Uploads of the last minute: who, when.
    recent: Vec<(String, Instant)>,
}

/// What [`Snapshots::admit`] decided: the new still's name and file, and the
/// files that make room for it.
pub struct Admitted {
    pub name: String,
    pub path: PathBuf,
    pub evicted: Vec<PathBuf>,
}

impl Snapshots {
    /// The stills already in `state_dir`/`snapshots/`, oldest first by
    /// modification time; past the limits, the oldest are deleted now.
    /// Temporary files of a write a power cut interrupted are deleted too.
    pub fn load(state_dir: &Path, max_count: usize, max_bytes: u64) -> Snapshots {
        let dir = state_dir.join(DIR);
        let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(meta) = entry.metadata() else { continue };
                if is_name(&name) && meta.is_file() {
                    found.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name, meta.len()));
                } else if name.ends_with(".jpg.tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        found.sort();
        let mut store =
            Snapshots { dir, max_count, max_bytes, kept: Vec::new(), total: 0, failing: false, recent: Vec::new() };
        for (_, name, bytes) in found {
            store.total += bytes;
            store.kept.push(Kept { name, bytes, claimable: None });
        }
        for path in store.make_room(0) {
            let _ = fs::remove_file(path);
        }
        if !store.kept.is_empty() {
            info!("snapshots: {} stills ({} KiB) in {}", store.kept.len(), store.total / 1024, store.dir.display());
        }
        store
    }

    /// Whether `owner` may upload one more still at `now` (counted if so):
    /// at most [`MAX_UPLOADS_PER_MINUTE`] each and [`MAX_RECENT_UPLOADS`]
    /// from everyone per minute. Asked before the body is read.
    pub fn allow(&mut self, owner: &str, now: Instant) -> bool {
        self.recent.retain(|(_, at)| now.saturating_duration_since(*at) < Duration::from_secs(60));
        let theirs = self.recent.iter().filter(|(who, _)| who == owner).count();
        if theirs >= MAX_UPLOADS_PER_MINUTE || self.recent.len() >= MAX_RECENT_UPLOADS {
            return false;
        }
        self.recent.push((owner.to_string(), now));
        true
    }

    /// Keep a still of `bytes` bytes from `owner`: its name, and the oldest
    /// stills that go to make room. The caller writes the file and deletes
    /// the others ([`write`]); until then the still is listed but not yet
    /// readable.
    pub fn admit(&mut self, owner: &str, bytes: u64, now: Instant) -> io::Result<Admitted> {
        let name = new_name()?;
        // Stills no ring took within the window go first.
        let mut evicted = Vec::new();
        let dir = &self.dir;
        let mut total = self.total;
        self.kept.retain(|kept| {
            let stale =
                kept.claimable.as_ref().is_some_and(|(_, at)| now.saturating_duration_since(*at) > CLAIM_WINDOW);
            if stale {
                total -= kept.bytes;
                evicted.push(dir.join(&kept.name));
            }
            !stale
        });
        self.total = total;
        evicted.extend(self.make_room(bytes));
        self.total += bytes;
        self.kept.push(Kept { name: name.clone(), bytes, claimable: Some((owner.to_string(), now)) });
        Ok(Admitted { path: self.dir.join(&name), name, evicted })
    }

    /// A write failed: forget the still. True when this starts a failing
    /// spell (say so once, not at every ring while the card is full).
    pub fn write_failed(&mut self, name: &str) -> bool {
        if let Some(at) = self.kept.iter().position(|kept| kept.name == name) {
            self.total -= self.kept.remove(at).bytes;
        }
        !std::mem::replace(&mut self.failing, true)
    }

    /// A write succeeded: true when it ends a failing spell.
    pub fn write_worked(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }

    /// Attach the still `name` to a ring of `owner` at `now`: true if it is
    /// theirs, not attached yet, and uploaded within [`CLAIM_WINDOW`].
    pub fn claim(&mut self, owner: &str, name: &str, now: Instant) -> bool {
        let Some(kept) = self.kept.iter_mut().find(|kept| kept.name == name) else { return false };
        let theirs = kept
            .claimable
            .as_ref()
            .is_some_and(|(who, at)| who == owner && now.saturating_duration_since(*at) <= CLAIM_WINDOW);
        if theirs {
            kept.claimable = None;
        }
        theirs
    }

    /// The file of a kept still, if `name` is one.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.kept.iter().any(|kept| kept.name == name).then(|| self.dir.join(name))
    }

    /// Stills kept, and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        (self.kept.len(), self.total)
    }

    /// Drop the oldest until one more still of `incoming` bytes fits both
    /// limits; their files, to delete.
    fn make_room(&mut self, incoming: u64) -> Vec<PathBuf> {
        let slots = usize::from(incoming > 0);
        let mut drop = 0;
        let mut total = self.total;
        while drop < self.kept.len()
            && (self.kept.len() - drop + slots > self.max_count || total + incoming > self.max_bytes)
        {
            total -= self.kept[drop].bytes;
            drop += 1;
        }
        self.total = total;
        self.kept.drain(..drop).map(|kept| self.dir.join(kept.name)).collect()
    }
}

/// Write a still admitted by [`Snapshots::admit`] and delete the ones it
/// replaced, off the daemon's thread.
pub async fn write(admitted: &Admitted, bytes: Vec<u8>) -> io::Result<()> {
    let (path, evicted) = (admitted.path.clone(), admitted.evicted.clone());
    smol::unblock(move || {
        for old in &evicted {
            let _ = fs::remove_file(old);
        }
        write_atomically(&path, &bytes)
    })
    .await
}

/// `<32 lower-case hex>.jpg`: a name this store makes.
pub fn is_name(name: &str) -> bool {
    name.strip_suffix(".jpg")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn new_name() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| io::Error::other(error.to_string()))?;
    let mut name = String::with_capacity(36);
    for byte in bytes {
        name.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        name.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    name.push_str(".jpg");
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("intercomd-snapshots-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_oldest_go_first_at_the_count_and_at_the_size() {
        let now = Instant::now();
        let mut store = Snapshots::load(&scratch("limits"), 3, 1000);
        let names: Vec<String> = (0..3).map(|_| store.admit("door", 100, now).unwrap().name).collect();
        assert_eq!(store.usage(), (3, 300));
        let fourth = store.admit("door", 100, now).unwrap();
        assert_eq!(fourth.evicted, [store.dir.join(&names[0])], "at the count, the oldest goes");
        assert_eq!(store.usage(), (3, 300));
        let big = store.admit("door", 900, now).unwrap();
        assert_eq!(big.evicted.len(), 2, "at the size, as many as it takes");
        assert_eq!(store.usage(), (2, 1000), "exactly at the limit is within it");
        assert!(store.path(&big.name).is_some() && store.path(&fourth.name).is_some());
        assert!(store.path(&names[1]).is_none() && store.path(&names[2]).is_none());
        assert!(store.write_failed(&big.name), "the first failure is said");
        assert_eq!(store.usage(), (1, 100));
        let next = store.admit("door", 100, now).unwrap();
        assert!(!store.write_failed(&next.name), "the next is not");
        assert!(store.write_worked() && !store.write_worked(), "a success ends the spell, once");
    }

    #[test]
    fn a_still_is_attached_once_by_its_owner_within_the_window() {
        let now = Instant::now();
        let mut store = Snapshots::load(&scratch("claim"), 10, 10_000);
        let name = store.admit("door", 10, now).unwrap().name;
        assert!(!store.claim("kitchen", &name, now), "not theirs");
        assert!(!store.claim("door", &name, now + CLAIM_WINDOW + Duration::from_secs(1)), "too late");
        assert!(store.claim("door", &name, now + CLAIM_WINDOW), "at the window's end");
        assert!(!store.claim("door", &name, now), "only once");
        assert!(!store.claim("door", "0123456789abcdef0123456789abcdef.jpg", now), "not kept");
    }

    #[test]
    fn stills_survive_a_restart_and_the_limits_hold_at_load() {
        let dir = scratch("restart");
        let now = Instant::now();
        let mut store = Snapshots::load(&dir, 2, 1 << 20);
        for round in 0..3u8 {
            let admitted = store.admit("door", 3, now).unwrap();
            smol::block_on(write(&admitted, vec![round; 3])).unwrap();
            // Distinct modification times, in order, whatever the file
            // system's clock granularity.
            let file = fs::File::options().write(true).open(&admitted.path).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + u64::from(round))).unwrap();
        }
        fs::write(dir.join(DIR).join("0123.jpg.tmp"), b"half").unwrap();
        fs::write(dir.join(DIR).join("notes.txt"), b"mine").unwrap();
        let again = Snapshots::load(&dir, 1, 1 << 20);
        assert_eq!(again.usage(), (1, 3), "one kept at a count of one");
        let kept = fs::read(again.path(&again.kept[0].name).unwrap()).unwrap();
        assert_eq!(kept, [2, 2, 2], "the newest stays");
        let mut files: Vec<String> = fs::read_dir(dir.join(DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "the newest still and a file that is not ours: {files:?}");
        assert!(files.contains(&"notes.txt".to_string()));
    }

    #[test]
    fn uploads_are_limited_per_peer_and_in_all() {
        let now = Instant::now();
        let mut store = Snapshots::load(&scratch("rate"), 10, 10_000);
        for _ in 0..MAX_UPLOADS_PER_MINUTE {
            assert!(store.allow("door", now));
        }
        assert!(!store.allow("door", now), "at the limit per peer");
        assert!(store.allow("door", now + Duration::from_secs(60)), "a minute later, again");
        let later = now + Duration::from_secs(120);
        let ids: Vec<String> = (0..MAX_RECENT_UPLOADS).map(|n| format!("p{n}")).collect();
        assert!(ids.iter().all(|id| store.allow(id, later)));
        assert!(!store.allow("door", later), "at the limit for everyone");
    }

    #[test]
    fn a_still_no_ring_took_goes_at_the_next_upload() {
        let now = Instant::now();
        let mut store = Snapshots::load(&scratch("stale"), 10, 10_000);
        let taken = store.admit("door", 10, now).unwrap().name;
        let untaken = store.admit("door", 10, now).unwrap().name;
        assert!(store.claim("door", &taken, now));
        let next = store.admit("door", 10, now + CLAIM_WINDOW).unwrap();
        assert!(next.evicted.is_empty(), "not before the window is over");
        let after = store.admit("door", 10, now + CLAIM_WINDOW + Duration::from_secs(1)).unwrap();
        assert_eq!(after.evicted, [store.dir.join(&untaken)], "only the one whose window is over");
        assert!(store.path(&taken).is_some() && store.path(&next.name).is_some(), "a ring's picture stays");
        assert_eq!(store.usage(), (3, 30));
    }

    #[test]
    fn names_are_random_hex() {
        let name = new_name().unwrap();
        assert!(is_name(&name), "{name}");
        assert_ne!(name, new_name().unwrap());
        assert!(
            !is_name("../events.jsonl") && !is_name("0123.jpg") && !is_name("0123456789ABCDEF0123456789abcdef.jpg")
        );
    }
}
