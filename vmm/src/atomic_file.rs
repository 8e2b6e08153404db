//! Output files that are never seen half-written: the bytes go to a temporary name in the
//! same directory, which is renamed over the target only once complete. A run killed (or a
//! write failing) in the middle leaves the old file, or none, never a truncated one.

use std::path::{Path, PathBuf};

/// A temporary name next to `path` that keeps its extension (plotters picks the image format
/// from it): `dir/.name.PID.partial.ext`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
    path.with_file_name(format!(".{name}.{}.partial{ext}", std::process::id()))
}

/// Produces the file at `path` through `make`, which writes it at the path it is given (a
/// temporary name); renames it into place only if `make` succeeded, and removes the
/// temporary otherwise.
pub fn write_with<E>(
    path: &Path,
    make: impl FnOnce(&Path) -> Result<(), E>,
    io_err: impl FnOnce(std::io::Error) -> E,
) -> Result<(), E> {
    let tmp = temp_sibling(path);
    if let Err(e) = make(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })
}

/// Writes `bytes` to `path` all at once or not at all.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes), |e| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("pvgpu-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.json");
        std::fs::write(&target, b"old").unwrap();
        // A producer that writes half its output, then fails.
        let r = write_with(
            &target,
            |tmp| {
                std::fs::write(tmp, b"{\"half\":")?;
                Err(std::io::Error::other("killed"))
            },
            |e| e,
        );
        assert!(r.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary left"
        );
        write(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(temp_sibling(Path::new("/a/b.png"))
            .to_string_lossy()
            .ends_with(".png"));
        assert!(write(&dir.join("missing/x.json"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
