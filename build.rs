use std::hash::{DefaultHasher, Hasher};
use std::path::Path;

fn main() {
    // Rebuild when a migration is added, so `sqlx::migrate!` never embeds a stale set.
    println!("cargo:rerun-if-changed=migrations");
    // A digest of the sources, so that a rerun planned from an earlier run's validated inputs
    // (`manifest::inputs`) is never one validated by other rules: builds between two releases
    // share a version number, not their rules.
    println!("cargo:rerun-if-changed=src");
    let mut hasher = DefaultHasher::new();
    hash_dir(Path::new("src"), &mut hasher);
    println!(
        "cargo:rustc-env=REISSUER_SOURCE_DIGEST={:016x}",
        hasher.finish()
    );
}

fn hash_dir(dir: &Path, hasher: &mut DefaultHasher) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            hash_dir(&path, hasher);
        } else if let Ok(bytes) = std::fs::read(&path) {
            hasher.write(path.to_string_lossy().as_bytes());
            hasher.write(&bytes);
        }
    }
}
